"""Patient-grouped k-fold cross-validation on covid-chestxray (the shared part).

Every model sees the same folds: a patient's films are all in one test fold. Inside
each training part, a patient-grouped 20 % is held out for early stopping. Reports,
per model, the mean and standard deviation over folds of macro AUROC and macro-F1,
the per-class sensitivity, and the same metrics on the pooled out-of-fold predictions
(steadier with only 14 normal films).

    python experiments/covid_cv.py --data ../shared/data/covid-chestxray \
        --schema data/schema/covid_chestxray.toml [--pretrained-run runs/pneumoniamnist] \
        [--models fused image tabular xgboost fused_transfer image_transfer densenet169] \
        [--epochs 60] [--folds 5] [--seed 0] [--out runs/covid_cv.json]

The transfer models start their image branch from ``--pretrained-run`` (a run trained
on PneumoniaMNIST by ``experiments/pneumoniamnist.py``), with its first blocks frozen.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fusion import Config, FusionClassifier, classification_metrics, grouped_kfold, grouped_split, load_dataset


def model_configs(
    pretrained_run: str | None, freeze: int, epochs: int | None = None, image_size: int | None = None
) -> dict[str, Config]:
    """The compared models, with default training settings unless noted; ``epochs`` and
    ``image_size`` override the custom-CNN and tabular models' defaults."""
    configs = {
        "fused": Config(modalities=("image", "tabular")),
        "image": Config(modalities=("image",)),
        "tabular": Config(modalities=("tabular",)),
        "xgboost": Config(modalities=("tabular",), model="xgboost"),
    }
    if pretrained_run:
        for name, mods in (("fused_transfer", ("image", "tabular")), ("image_transfer", ("image",))):
            cfg = Config(modalities=mods)
            cfg.image.init_from, cfg.image.freeze = pretrained_run, freeze
            cfg.train.lr = 1e-3  # fine-tuning: a gentler peak rate
            configs[name] = cfg
    for cfg in configs.values():
        if epochs:
            cfg.train.epochs = epochs
        if image_size:
            cfg.image.image_size = image_size
    dn = Config(modalities=("image",))
    dn.image.backbone, dn.image.image_size = "densenet169", 128
    dn.train.epochs, dn.train.batch_size, dn.train.lr = 10, 16, 5e-4
    configs["densenet169"] = dn
    return configs


def cross_validate(ds, cfg: Config, folds, seed: int) -> dict:
    oof = np.zeros((len(ds), len(ds.classes)))
    per_fold, seconds = [], []
    for i, (train_idx, test_idx) in enumerate(folds):
        train_all = ds.subset(train_idx)
        inner = grouped_split(train_all.labels, train_all.groups, val_fraction=0.2, test_fraction=0.0, seed=seed + i)
        start = time.perf_counter()
        clf = FusionClassifier(cfg).fit(train_all.subset(inner["train"]), train_all.subset(inner["val"]))
        seconds.append(time.perf_counter() - start)
        test = ds.subset(test_idx)
        proba = clf.predict_dataset(test)
        oof[test_idx] = proba
        per_fold.append(classification_metrics(test.labels, proba, ds.classes))
    pooled = classification_metrics(ds.labels, oof, ds.classes)

    def stat(values):
        values = [v for v in values if v is not None]
        return (
            {"mean": float(np.mean(values)), "std": float(np.std(values)), "n_folds": len(values)} if values else None
        )

    return {
        "macro_auroc": stat([m["auroc_macro"] for m in per_fold]),
        "macro_f1": stat([m["macro_f1"] for m in per_fold]),
        "sensitivity": {
            c: stat([m["per_class"][c]["sensitivity"] for m in per_fold if m["per_class"][c]["support"]])
            for c in ds.classes
        },
        "pooled": pooled,
        "train_seconds_per_fold": float(np.mean(seconds)),
        "folds": per_fold,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/covid-chestxray")
    p.add_argument("--schema", default="data/schema/covid_chestxray.toml")
    p.add_argument("--pretrained-run", help="PneumoniaMNIST run folder for the transfer models")
    p.add_argument("--freeze", type=int, default=2, help="blocks frozen in the transfer models")
    p.add_argument("--models", nargs="+", help="subset of models to run (default: all available)")
    p.add_argument("--epochs", type=int, help="epochs of the custom-CNN and tabular models (default: the library's)")
    p.add_argument("--image-size", type=int, help="input size of the custom-CNN models (default: the library's)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/covid_cv.json")
    args = p.parse_args()
    configs = model_configs(args.pretrained_run, args.freeze, args.epochs, args.image_size)
    names = args.models or list(configs)
    unknown = [n for n in names if n not in configs]
    if unknown:
        raise SystemExit(
            f"unknown or unavailable models {unknown}; available: {list(configs)} "
            "(transfer models need --pretrained-run)"
        )
    datasets, results, folds = {}, {}, None
    for name in names:
        cfg = configs[name]
        cfg.train.seed = args.seed
        size = cfg.image.image_size
        if size not in datasets:
            datasets[size] = load_dataset(args.data, args.schema, image_size=size)
        ds = datasets[size]
        folds = folds or grouped_kfold(ds.labels, ds.groups, k=args.folds, seed=args.seed)
        print(f"{name}: {args.folds}-fold CV on {len(ds)} images of {len(set(ds.groups))} patients ...", flush=True)
        results[name] = cross_validate(ds, cfg, folds, args.seed)
        r = results[name]
        print(
            f"  macro AUROC {r['macro_auroc']['mean']:.3f} +- {r['macro_auroc']['std']:.3f}, "
            f"macro-F1 {r['macro_f1']['mean']:.3f} +- {r['macro_f1']['std']:.3f}, "
            f"{r['train_seconds_per_fold']:.0f} s/fold",
            flush=True,
        )
    ds = next(iter(datasets.values()))
    summary = {
        "data": args.data,
        "n_images": len(ds),
        "n_patients": len(set(ds.groups)),
        "class_counts": dict(zip(ds.classes, np.bincount(ds.labels, minlength=len(ds.classes)).tolist(), strict=True)),
        "folds": args.folds,
        "seed": args.seed,
        "pretrained_run": args.pretrained_run,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    classes = ds.classes
    print(
        "\n| model | macro AUROC | macro-F1 | "
        + " | ".join(f"sens. {c}" for c in classes)
        + " | pooled macro AUROC | pooled macro-F1 | s/fold |"
    )
    print("|---" * (5 + len(classes)) + "|")
    for name, r in results.items():
        sens = " | ".join(f"{r['sensitivity'][c]['mean']:.2f}" if r["sensitivity"][c] else "n/a" for c in classes)
        print(
            f"| {name} | {r['macro_auroc']['mean']:.3f} ± {r['macro_auroc']['std']:.3f} "
            f"| {r['macro_f1']['mean']:.3f} ± {r['macro_f1']['std']:.3f} | {sens} | "
            f"{r['pooled']['auroc_macro']:.3f} | {r['pooled']['macro_f1']:.3f} | {r['train_seconds_per_fold']:.0f} |"
        )
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
