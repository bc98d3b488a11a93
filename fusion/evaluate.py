"""Score a trained model on another dataset: ``python -m fusion.evaluate``.

Every row of the dataset is scored (for an ``.npz``, its ``test`` split when it has
one). The dataset is read with the model's own schema unless ``--schema`` is given,
and its images are decoded at the model's image size.

Example
-------
python -m fusion.evaluate --model runs/fused --data path/to/other_hospital --out scores.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fusion.allocator import tune_allocator
from fusion.classifier import FusionClassifier
from fusion.cli import (
    add_cache_arguments,
    add_verbosity_arguments,
    cache_options,
    fail,
    log_to_terminal,
    output_file,
    verbosity,
)
from fusion.data.loaders import load_dataset
from fusion.evaluation import classification_metrics, format_metrics, metric_intervals
from fusion.evaluation.conformal import set_report
from fusion.evaluation.decision import decision_report, describe_ranges
from fusion.evaluation.subgroups import format_subgroups, subgroup_report
from fusion.persistence import write_json
from fusion.schema import group_unit


def evaluate(
    model: str | Path,
    data: str | Path | None,
    schema: str | Path | None = None,
    *,
    cache_dir: str | Path | bool | None = None,
    cache_workers: int | None = None,
    memory_map: bool | None = None,
    seed: int = 0,
    by: list[str] | None = None,
) -> dict:
    """Metrics of the model in ``model`` on the dataset ``data`` (None: a fresh synthetic
    cohort, seeded differently from training), each headline figure with a 95 %
    bootstrap interval over patients (``seed`` makes it reproducible). Rows that cannot
    be scored (bad values, unreadable images, labels outside the model's classes) are
    listed under ``skipped`` with row, file and reason, as training lists them.
    ``by``: record features to report subgroups of (see
    :mod:`fusion.evaluation.subgroups`). The result also holds the prediction sets'
    coverage (:mod:`fusion.evaluation.conformal`) and the decision curves
    (:mod:`fusion.evaluation.decision`)."""
    clf = FusionClassifier.load(model)
    ds = load_dataset(
        data,
        schema if schema is not None else clf.schema_,
        image_size=clf.image_size_ or clf.config_.image.image_size,
        channels=clf.image_channels_,
        seed=clf.config_.train.seed + 1000,
        synthetic_n=clf.config_.data.synthetic_n,
        modalities=clf.modalities_,
        cache_dir=cache_dir,
        cache_workers=cache_workers,
        memory_map=memory_map,
    )
    if tuple(ds.classes) != tuple(clf.classes_):
        raise ValueError(f"the dataset's classes {list(ds.classes)} differ from the model's {list(clf.classes_)}")
    split = "all"
    if ds.splits is not None:
        split = "test" if "test" in ds.splits else "all"
        if split == "test":
            ds = ds.subset(ds.splits["test"])
    if len(ds) == 0:
        raise ValueError(f"{ds.name}: no valid rows to score ({len(ds.skipped)} skipped)")
    proba = clf.predict_dataset(ds)
    pred = clf.calibration_.decide(proba)  # the labels predict gives (calibration.decision)
    metrics = classification_metrics(ds.labels, proba, clf.classes_, pred=pred)
    metrics["intervals"] = metric_intervals(
        ds.labels, proba, clf.classes_, ds.groups, seed=seed, pred=pred, unit=group_unit(ds.schema)
    )
    if clf.calibration_.conformal is not None:
        used = [m for m in clf.modalities_ if m in ds.modalities]
        sets = clf.calibration_.conformal
        metrics["prediction_sets"] = set_report(sets, ds.labels, proba, used, clf.classes_, ds.groups, seed=seed)
    metrics["decision_curves"] = decision_report(clf, ds, proba, clf.config_.calibration.healthy)
    if by:
        if ds.records is None or ds.schema is None:
            raise ValueError("subgroups need the dataset's records; this dataset has none")
        metrics["subgroups"] = subgroup_report(
            ds.records, ds.labels, proba, clf.classes_, ds.groups, by, ds.schema, seed=seed, pred=pred
        )
    return {
        "model": str(model),
        "data": str(data) if data is not None else "synthetic (embedded, unseen seed)",
        "split": split,
        "classes": list(clf.classes_),
        "modalities": list(clf.modalities_),
        "n": len(ds),
        **metrics,
        "skipped": ds.skipped,
        "missing_tokens": ds.missing_tokens,
    }


def main(argv: list[str] | None = None, *, prog: str = "python -m fusion.evaluate") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Score a trained fusion model on a dataset.")
    p.add_argument("--model", required=True, help="run folder written by fusion.train")
    p.add_argument("--data", help="dataset folder, CSV or .npz (default: a new synthetic cohort)")
    p.add_argument("--schema", help="schema file or name (default: the model's own)")
    p.add_argument("--out", help="write the metrics as JSON to this new file")
    p.add_argument(
        "--by",
        help="report subgroups of these record features, comma-separated (categorical features by value, "
        "numeric ones by the bands their schema declares), e.g. sex,view,age",
    )
    p.add_argument(
        "--decision-curves",
        metavar="OUT.png",
        help="also draw the decision curves (net benefit against threshold per disease class) to this new .png file",
    )
    add_cache_arguments(p)
    add_verbosity_arguments(p, quiet="print the metrics, warnings and errors, without the progress lines")
    args = p.parse_args(argv)
    tune_allocator()
    out, figure, output_error = None, None, None
    inputs = [args.model, args.data, args.schema]
    # Checked before the work, reported after the answer (see fusion.cli).
    try:
        out = output_file(args.out, "--out", inputs=inputs) if args.out else None
        figure = (
            output_file(args.decision_curves, "--decision-curves", inputs=inputs, suffix=".png")
            if (args.decision_curves)
            else None
        )
    except ValueError as err:
        output_error = f"error: {err}"
    try:
        by = [b.strip() for b in args.by.split(",") if b.strip()] if args.by else None
        with log_to_terminal(verbosity(args)):
            result = evaluate(args.model, args.data, args.schema, by=by, **cache_options(args))
    except (ValueError, FileNotFoundError) as err:
        return fail(err, p, verbose=verbosity(args) > 0)
    print(
        format_metrics(
            result, title=f"{result['data']} ({result['split']}, {result['n']} rows, {len(result['skipped'])} skipped)"
        )
    )
    if result.get("subgroups"):
        print(format_subgroups(result["subgroups"]))
    print_answers(result)
    print_skipped(result["skipped"])
    if figure:
        from fusion.plots import plot_decision_curves

        try:
            plot_decision_curves(result["decision_curves"], figure, title=f"Decision curves ({result['data']})")
            print(f"decision curves drawn to {figure}")
        except OSError as err:
            output_error = f"error: could not write {str(figure)!r}: {err.strerror or err}"
    if out:
        try:
            write_json(out, result)
            print(f"metrics written to {out}")
        except OSError as err:
            output_error = f"error: could not write {str(out)!r}: {err.strerror or err}"
    if output_error:
        print(output_error, file=sys.stderr)
        return 2
    return 0


def print_answers(result: dict) -> None:
    """The prediction sets' coverage and, per disease class, the thresholds where acting
    on the model beats treating everyone and no one."""
    sets = result.get("prediction_sets")
    if sets:
        c, s = sets["coverage"], sets["set_size"]
        print(
            f"prediction sets ({sets['target']:.0%}, {sets['method']}): coverage {c['value']:.3f} "
            f"[{c['low']:.3f}, {c['high']:.3f}], mean size {s['value']:.2f} [{s['low']:.2f}, {s['high']:.2f}]"
        )
    for name, entry in result.get("decision_curves", {}).get("classes", {}).items():
        ranges = "; ".join(f"{model} {describe_ranges(m['useful'])}" for model, m in entry["models"].items())
        print(f"decision curve, {name}: useful thresholds {ranges}")


def print_skipped(skipped: list[dict], show: int = 10) -> None:
    """Each row that was not scored, and why (the first ``show``; all are in the JSON)."""
    if not skipped:
        return
    print(f"{len(skipped)} row(s) not scored:")
    for s in skipped[:show]:
        print(f"  row {s['row']}" + (f" ({s['file']})" if s.get("file") else "") + f": {s['reason']}")
    if len(skipped) > show:
        print(f"  ... and {len(skipped) - show} more (all listed under 'skipped' with --out)")


if __name__ == "__main__":
    sys.exit(main())
