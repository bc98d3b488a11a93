"""Patient-grouped cross-validation of every model on any schema'd folder, with
intervals that can tell a gain from noise.

For each seed, patient-grouped stratified k-fold CV: every model sees the same folds,
and inside each training part a patient-grouped 20 % stops the networks early. The
out-of-fold predictions of all folds are pooled and scored (macro AUROC, macro-F1) with
a 95 % bootstrap interval that resamples patients; each fused model is compared with
each single-modality model on the same patients and folds (the paired difference and
its bootstrap interval). Over seeds: the mean of the pooled figures and of the interval
ends.

    python experiments/cv.py --data ../shared/data/covid-chestxray --schema covid_chestxray \\
        [--models fused joint stacked gbm image image_network tabular_mlp xgboost] \\
        [--seeds 0 1 2] [--folds 5] [--out runs/cv_covid.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fusion import Config, FusionClassifier, classification_metrics, grouped_kfold, grouped_split, load_dataset
from fusion.evaluation import bootstrap_interval, macro_auroc

FUSED = ("fused", "joint", "stacked", "gbm", "auto")


def model_configs() -> dict[str, Config]:
    """The compared models: the library's default fused model, each fusion strategy,
    and the single-modality models, each as tuned as the library tunes it."""
    image = Config(modalities=("image",), fusion="stacked")  # LR on the shipped backbone's embedding
    image_network = Config(modalities=("image",), fusion="joint")
    # The image network fine-tuned from the shipped weights, at the networks' 64 px.
    image_network.image.pretrained, image_network.image.image_size = "cxr", 64
    return {
        "fused": Config(),  # the library's defaults
        "joint": Config(fusion="joint"),
        "stacked": Config(fusion="stacked"),
        "gbm": Config(fusion="gbm"),
        "auto": Config(fusion="auto"),
        "image": image,
        "image_network": image_network,
        "tabular_mlp": Config(modalities=("tabular",), fusion="joint"),
        "xgboost": Config(modalities=("tabular",), model="xgboost"),
    }


def out_of_fold(ds, cfg: Config, folds, seed: int) -> tuple[np.ndarray, float]:
    oof = np.zeros((len(ds), len(ds.classes)))
    seconds = 0.0
    for i, (train_idx, test_idx) in enumerate(folds):
        part = ds.subset(train_idx)
        inner = grouped_split(part.labels, part.groups, val_fraction=0.2, test_fraction=0.0, seed=seed + i)
        start = time.perf_counter()
        clf = FusionClassifier(cfg).fit(part.subset(inner["train"]), part.subset(inner["val"]))
        seconds += time.perf_counter() - start
        oof[test_idx] = clf.predict_dataset(ds.subset(test_idx))
    return oof, seconds


def summarise(values: list[dict]) -> dict:
    """Mean over seeds of a point and its interval ends."""
    keys = ("point", "low", "high")
    return {k: round(float(np.mean([v[k] for v in values if v[k] is not None])), 4) for k in keys}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--schema", required=True)
    p.add_argument("--models", nargs="+", help="subset of models (default: all but auto)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--image-size", type=int, help="input size of every image model (default: each model's own)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    configs = model_configs()
    names = args.models or [n for n in configs if n != "auto"]
    unknown = [n for n in names if n not in configs]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; known: {list(configs)}")
    datasets, oof, seconds = {}, {n: {} for n in names}, dict.fromkeys(names, 0.0)
    for name in names:
        cfg = configs[name]
        if args.image_size:
            cfg.image.image_size = args.image_size
        cfg = cfg.resolved()
        size = cfg.image.image_size
        if size not in datasets:
            datasets[size] = load_dataset(args.data, args.schema, image_size=size)
        ds = datasets[size]
        for seed in args.seeds:
            cfg.train.seed = seed
            folds = grouped_kfold(ds.labels, ds.groups, k=args.folds, seed=seed)
            oof[name][seed], s = out_of_fold(ds, cfg, folds, seed)
            seconds[name] += s
        aurocs = [macro_auroc(ds.labels, oof[name][s]) for s in args.seeds]
        print(f"{name}: pooled macro AUROC by seed {[round(a, 3) for a in aurocs]} ({seconds[name]:.0f} s)", flush=True)
    ds = next(iter(datasets.values()))
    results = {}
    for name in names:
        per_seed = []
        for seed in args.seeds:
            m = classification_metrics(ds.labels, oof[name][seed], ds.classes)
            ci = bootstrap_interval(ds.labels, oof[name][seed], ds.groups, n_boot=args.n_boot, seed=seed)
            per_seed.append({"seed": seed, "macro_auroc": ci, "macro_f1": m["macro_f1"], "per_class": m["per_class"]})
        results[name] = {
            "macro_auroc": summarise([s["macro_auroc"] for s in per_seed]),
            "macro_f1": round(float(np.mean([s["macro_f1"] for s in per_seed])), 4),
            "seconds_per_fold": round(seconds[name] / (len(args.seeds) * args.folds), 1),
            "seeds": per_seed,
        }
    singles = [n for n in names if n not in FUSED]
    paired = {}
    for fused in [n for n in names if n in FUSED]:
        for single in singles:
            diffs = [
                bootstrap_interval(
                    ds.labels, oof[fused][s], ds.groups, baseline=oof[single][s], n_boot=args.n_boot, seed=s
                )
                for s in args.seeds
            ]
            paired[f"{fused} - {single}"] = summarise(diffs)
    summary = {
        "data": args.data,
        "schema": args.schema,
        "n_images": len(ds),
        "n_patients": len(set(ds.groups)),
        "classes": list(ds.classes),
        "class_counts": np.bincount(ds.labels, minlength=len(ds.classes)).tolist(),
        "folds": args.folds,
        "seeds": args.seeds,
        "results": results,
        "paired_differences_macro_auroc": paired,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print("\n| model | pooled macro AUROC [95% CI] | macro-F1 | s/fold |\n|---|---|---|---|")
    for name, r in results.items():
        a = r["macro_auroc"]
        print(
            f"| {name} | {a['point']:.3f} [{a['low']:.3f}, {a['high']:.3f}] "
            f"| {r['macro_f1']:.3f} | {r['seconds_per_fold']} |"
        )
    print("\n| fused - single | paired difference [95% CI] |\n|---|---|")
    for key, d in paired.items():
        print(f"| {key} | {d['point']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] |")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
