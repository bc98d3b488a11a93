"""Patient-grouped cross-validation of every model on any schema'd folder, with
intervals that can tell a gain from noise.

For each seed, patient-grouped stratified k-fold CV (grouped by the schema's group
column: patients for the chest X-ray cohorts, lesions for ham10000): every model sees
the same folds, and inside each training part a grouped 20 % stops the networks early.
The out-of-fold predictions of all folds are pooled and scored (macro AUROC, balanced
accuracy, accuracy, macro-F1, per-class sensitivity: the counts of the labels each
model's decision rule gives, ``calibration.decision``) with 95 % bootstrap intervals that resample
groups; each fused model is compared with each single-modality model on the same
patients and folds (the paired difference of macro AUROC and of balanced accuracy, with
its bootstrap interval), and each fused model's per-class sensitivity is set beside the
reference image-only model's, the largest drop flagged (fusion can buy accuracy with a
rare class). Over seeds: the mean of the pooled figures and of the interval ends.

Models are named configurations. The built-in ones (``--models`` without ``=``) are
listed by :func:`model_configs`; any other is written ``LABEL=BASE,SETTING=VALUE,...``:
the built-in configuration BASE with the settings given by their dotted names as in
``config.json`` (``head.kind``, ``image.pretrained``, ``train.epochs``), a value read as
JSON when it is JSON (``1``, ``true``, ``null``, ``[64, 32]``) and as text otherwise. So
a new option of the library (a fusion head, an ``auto`` candidate) is compared without
a change here. ``--spec FILE`` reads such entries one per line (``#`` comments).
``--oof-dir DIR`` keeps each model's and seed's out-of-fold predictions there and reads
them back on a rerun, so a long comparison can be resumed or split over processes.

    python experiments/cv.py --data ../shared/data/covid-chestxray --schema covid_chestxray \\
        [--models fused joint stacked gbm image image_network tabular_mlp xgboost] \\
        [--seeds 0 1 2] [--folds 5] [--out runs/cv_covid.json]
    python experiments/cv.py --data ../shared/data/ham10000 --schema ham10000 \\
        --models fused "fused_film=fused,head.kind=film" "image_scratch=image_network,image.pretrained=null" \\
        tabular_mlp xgboost --out runs/cv_ham.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fusion import Config, FusionClassifier, classification_metrics, grouped_kfold, grouped_split, load_dataset
from fusion.evaluation import balanced_accuracy, bootstrap_interval, macro_auroc
from fusion.training.run import resolved_for_data


def model_configs() -> dict[str, Config]:
    """The built-in models: the library's default fused model, each fusion strategy,
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


def _value(text: str):
    """A setting's value as written on the command line: JSON when it is JSON, else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _split(spec: str) -> list[str]:
    """``spec`` cut at its commas outside brackets: ``[64, 32]`` is one value."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(spec):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(spec[start:i])
            start = i + 1
    return [*parts, spec[start:]]


def parse_models(entries: list[str], builtins: dict[str, Config]) -> dict[str, Config]:
    """``{label: Config}`` of the ``--models`` entries: a built-in name, or
    ``LABEL=BASE,SETTING=VALUE,...`` (see the module docstring).

    Raises
    ------
    SystemExit
        An unknown base or setting, a repeated label, or a value the setting refuses.
    """
    out: dict[str, Config] = {}
    for entry in entries:
        label, _, spec = entry.partition("=")
        base, *settings = _split(spec) if spec else [label]
        label, base = label.strip(), base.strip()
        if base not in builtins:
            raise SystemExit(f"{entry!r}: unknown model {base!r}; built-in: {list(builtins)}")
        if label in out:
            raise SystemExit(f"{entry!r}: the label {label!r} is given twice")
        params = {}
        for item in settings:
            name, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"{entry!r}: {item!r} is not SETTING=VALUE (e.g. head.kind=film)")
            params[name.strip().replace(".", "__")] = _value(value.strip())
        try:
            out[label] = builtins[base].with_params(**params).validate()
        except (TypeError, ValueError) as err:
            raise SystemExit(f"{entry!r}: {err}") from None
    return out


def read_spec(path: str) -> list[str]:
    """The model entries of a spec file: one per line, ``#`` starts a comment."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines())
    return [line for line in lines if line]


def is_fused(cfg: Config) -> bool:
    """Whether a configuration is asked to read both modalities (``auto`` included,
    whatever it ships)."""
    return len(cfg.modalities) > 1


def out_of_fold(ds, cfg: Config, folds, seed: int) -> tuple[dict, float]:
    """Out-of-fold ``proba`` (calibrated probabilities) and ``pred`` (the labels the
    model's decision rule gives, ``calibration.decision``) of every row, and the
    training seconds."""
    proba, pred = np.zeros((len(ds), len(ds.classes))), np.zeros(len(ds), dtype=np.int64)
    seconds = 0.0
    for i, (train_idx, test_idx) in enumerate(folds):
        part = ds.subset(train_idx)
        inner = grouped_split(part.labels, part.groups, val_fraction=0.2, test_fraction=0.0, seed=seed + i)
        start = time.perf_counter()
        clf = FusionClassifier(cfg).fit(part.subset(inner["train"]), part.subset(inner["val"]))
        seconds += time.perf_counter() - start
        proba[test_idx] = clf.predict_dataset(ds.subset(test_idx))
        pred[test_idx] = clf.calibration_.decide(proba[test_idx])
    return {"proba": proba, "pred": pred}, seconds


def cached_out_of_fold(ds, cfg: Config, folds, seed: int, path: Path | None) -> tuple[dict, float]:
    """:func:`out_of_fold`, read from ``path`` when an earlier run saved it there (the
    same model, seed and folds: the file records the configuration and fold sizes it
    was made with, and any other is recomputed), else computed and saved there. So a
    long comparison can be stopped and resumed, or split over processes."""
    key = json.dumps({"config": cfg.to_dict(), "folds": [len(t) for _, t in folds], "n": len(ds)}, sort_keys=True)
    if path is not None and path.exists():
        with np.load(path) as saved:
            if str(saved["key"]) == key:
                return {"proba": saved["proba"], "pred": saved["pred"]}, float(saved["seconds"])
    out, seconds = out_of_fold(ds, cfg, folds, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, key=np.array(key), seconds=np.array(seconds), **out)
    return out, seconds


def _balanced(y: np.ndarray, proba: np.ndarray) -> float:
    return balanced_accuracy(y, proba.argmax(axis=1))


# The metrics with intervals and paired differences: name -> metric(y, scores), and
# which out-of-fold scores each reads: the probabilities, or the decided labels (one-hot,
# so that their argmax is the label the model's decision rule gave).
METRICS = {"macro_auroc": macro_auroc, "balanced_accuracy": _balanced}
READS = {"macro_auroc": "proba", "balanced_accuracy": "decided"}


def _scores(entry: dict, metric: str) -> np.ndarray:
    if READS[metric] == "proba":
        return entry["proba"]
    return np.eye(entry["proba"].shape[1])[entry["pred"]]


def summarise(values: list[dict]) -> dict:
    """Mean over seeds of a point and its interval ends."""
    keys = ("point", "low", "high")
    return {k: round(float(np.mean([v[k] for v in values if v[k] is not None])), 4) for k in keys}


def score_models(ds, oof: dict, seeds: list[int], seconds: dict, folds: int, n_boot: int) -> dict:
    """Each model's pooled figures per seed, and their means over seeds."""
    results = {}
    for name, by_seed in oof.items():
        per_seed = []
        for seed in seeds:
            got = by_seed[seed]
            m = classification_metrics(ds.labels, got["proba"], ds.classes, pred=got["pred"])
            entry = {"seed": seed, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "per_class": m["per_class"]}
            for metric, fn in METRICS.items():
                entry[metric] = bootstrap_interval(
                    ds.labels, _scores(got, metric), ds.groups, metric=fn, n_boot=n_boot, seed=seed
                )
            per_seed.append(entry)
        results[name] = {
            **{metric: summarise([s[metric] for s in per_seed]) for metric in METRICS},
            "macro_f1": round(float(np.mean([s["macro_f1"] for s in per_seed])), 4),
            "accuracy": round(float(np.mean([s["accuracy"] for s in per_seed])), 4),
            "sensitivity": {
                c: round(float(np.mean([s["per_class"][c]["sensitivity"] for s in per_seed])), 4) for c in ds.classes
            },
            "seconds_per_fold": round(seconds[name] / (len(seeds) * folds), 1),
            "seeds": per_seed,
        }
    return results


def paired_differences(ds, oof: dict, fused: list[str], singles: list[str], seeds: list[int], n_boot: int) -> dict:
    """``{metric: {"fused - single": mean over seeds of the paired difference and its
    interval}}``: same patients, same folds, same bootstrap replicates."""
    out = {}
    for metric, fn in METRICS.items():
        out[metric] = {
            f"{f} - {s}": summarise(
                [
                    bootstrap_interval(
                        ds.labels,
                        _scores(oof[f][seed], metric),
                        ds.groups,
                        metric=fn,
                        baseline=_scores(oof[s][seed], metric),
                        n_boot=n_boot,
                        seed=seed,
                    )
                    for seed in seeds
                ]
            )
            for f in fused
            for s in singles
        }
    return out


def sensitivity_beside(results: dict, reference: str, fused: list[str], classes) -> dict:
    """Each fused model's per-class sensitivity minus the reference image-only model's,
    and the class with the largest drop (the rare-class trap)."""
    ref = results[reference]["sensitivity"]
    out = {}
    for name in fused:
        diff = {c: round(results[name]["sensitivity"][c] - ref[c], 4) for c in classes}
        worst = min(classes, key=lambda c: diff[c])
        out[name] = {"difference": diff, "largest_drop": {"class": worst, "difference": diff[worst]}}
    return out


def choose_reference(results: dict, configs: dict, requested: str | None) -> str | None:
    """The model fused models are set beside, class by class: ``requested``, else the
    image-only model of highest balanced accuracy, else the best single-modality one."""
    if requested:
        if requested not in results:
            raise SystemExit(f"--reference {requested!r} is not among the models {list(results)}")
        return requested
    singles = [n for n in results if not is_fused(configs[n])]
    image_only = [n for n in singles if configs[n].modalities == ("image",)]
    pool = image_only or singles
    return max(pool, key=lambda n: results[n]["balanced_accuracy"]["point"]) if pool else None


def resolved_with_data(cfg: Config, data, schema, datasets: dict) -> tuple[Config, object]:
    """``cfg`` resolved as the train command resolves it (knowing what the schema says
    of the images), and the dataset at its image size, loaded once per size into
    ``datasets``."""
    cfg = resolved_for_data(cfg, data, schema)
    size = cfg.image.image_size
    if size not in datasets:
        datasets[size] = load_dataset(data, schema, image_size=size)
    return cfg, datasets[size]


def run_models(args, configs: dict[str, Config]) -> tuple[object, dict, dict]:
    """Out-of-fold probabilities of every model and seed, and each model's training seconds."""
    datasets, oof, seconds = {}, {n: {} for n in configs}, dict.fromkeys(configs, 0.0)
    for name, cfg in configs.items():
        if args.image_size:
            cfg.image.image_size = args.image_size
        cfg, ds = resolved_with_data(cfg, args.data, args.schema, datasets)
        for seed in args.seeds:
            cfg.train.seed = seed
            folds = grouped_kfold(ds.labels, ds.groups, k=args.folds, seed=seed)
            path = Path(args.oof_dir) / f"{name}_seed{seed}.npz" if args.oof_dir else None
            oof[name][seed], s = cached_out_of_fold(ds, cfg, folds, seed, path)
            seconds[name] += s
        scores = [
            (macro_auroc(ds.labels, oof[name][s]["proba"]), balanced_accuracy(ds.labels, oof[name][s]["pred"]))
            for s in args.seeds
        ]
        print(
            f"{name}: pooled macro AUROC / balanced accuracy by seed "
            f"{[f'{a:.3f} / {b:.3f}' for a, b in scores]} ({seconds[name]:.0f} s)",
            flush=True,
        )
    return next(iter(datasets.values())), oof, seconds


def print_report(summary: dict) -> None:
    """The summary's tables in Markdown."""
    results, classes = summary["results"], summary["classes"]
    print("\n| model | pooled macro AUROC [95% CI] | balanced accuracy [95% CI] | accuracy | macro-F1 | s/fold |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        a, b = r["macro_auroc"], r["balanced_accuracy"]
        print(
            f"| {name} | {a['point']:.3f} [{a['low']:.3f}, {a['high']:.3f}] "
            f"| {b['point']:.3f} [{b['low']:.3f}, {b['high']:.3f}] | {r['accuracy']:.3f} | {r['macro_f1']:.3f} "
            f"| {r['seconds_per_fold']} |"
        )
    paired = summary["paired_differences"]
    if paired["macro_auroc"]:
        print("\n| fused - single | macro AUROC difference [95% CI] | balanced accuracy difference [95% CI] |")
        print("|---|---|---|")
        for key, d in paired["macro_auroc"].items():
            e = paired["balanced_accuracy"][key]
            print(
                f"| {key} | {d['point']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] "
                f"| {e['point']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}] |"
            )
    beside = summary["per_class_sensitivity"]
    if beside["fused"]:
        reference, names = beside["reference"], list(beside["fused"])
        print(f"\nPer-class sensitivity beside {reference} (fused - {reference} in brackets; ! = largest drop):")
        print(f"| class | n | {reference} | " + " | ".join(names) + " |")
        print("|---|---|---|" + "---|" * len(names))
        for c, n in zip(classes, summary["class_counts"], strict=True):
            cells = []
            for name in names:
                d = beside["fused"][name]
                flag = " !" if d["largest_drop"]["class"] == c and d["largest_drop"]["difference"] < 0 else ""
                cells.append(f"{results[name]['sensitivity'][c]:.3f} ({d['difference'][c]:+.3f}){flag}")
            print(f"| {c} | {n} | {results[reference]['sensitivity'][c]:.3f} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--schema", required=True)
    p.add_argument(
        "--models", nargs="+", help="built-in names or LABEL=BASE,SETTING=VALUE,... (default: all built-in but auto)"
    )
    p.add_argument("--spec", help="file of model entries, one per line, added to --models")
    p.add_argument("--reference", help="model whose per-class sensitivity the fused ones are set beside")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--image-size", type=int, help="input size of every image model (default: each model's own)")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--oof-dir", help="folder of each model's and seed's out-of-fold predictions: read when there, else saved"
    )
    args = p.parse_args()
    builtins = model_configs()
    entries = (args.models or []) + (read_spec(args.spec) if args.spec else [])
    configs = parse_models(entries or [n for n in builtins if n != "auto"], builtins)
    ds, oof, seconds = run_models(args, configs)
    results = score_models(ds, oof, args.seeds, seconds, args.folds, args.n_boot)
    fused = [n for n in configs if is_fused(configs[n])]
    singles = [n for n in configs if not is_fused(configs[n])]
    reference = choose_reference(results, configs, args.reference)
    summary = {
        "data": args.data,
        "schema": args.schema,
        "group_column": ds.schema.group if ds.schema is not None else None,
        "n_images": len(ds),
        "n_patients": len(set(ds.groups)),  # groups: patients, or lesions for ham10000
        "classes": list(ds.classes),
        "class_counts": np.bincount(ds.labels, minlength=len(ds.classes)).tolist(),
        "folds": args.folds,
        "seeds": args.seeds,
        "models": {n: configs[n].to_dict() for n in configs},
        "results": results,
        "best_single": {m: max(singles, key=lambda n: results[n][m]["point"]) if singles else None for m in METRICS},
        "paired_differences": paired_differences(ds, oof, fused, singles, args.seeds, args.n_boot),
        "per_class_sensitivity": {
            "reference": reference,
            "fused": sensitivity_beside(results, reference, [n for n in fused if n != reference], ds.classes)
            if reference
            else {},
        },
    }
    summary["paired_differences_macro_auroc"] = summary["paired_differences"]["macro_auroc"]  # the key before
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print_report(summary)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
