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

from fusion.classifier import FusionClassifier
from fusion.data import load_dataset
from fusion.evaluation import classification_metrics, format_metrics
from fusion.persistence import write_json
from fusion.training import tune_allocator


def evaluate(model: str | Path, data: str | Path | None, schema: str | Path | None = None) -> dict:
    """Metrics of the model in ``model`` on the dataset ``data`` (None: a fresh synthetic
    cohort, seeded differently from training)."""
    clf = FusionClassifier.load(model)
    ds = load_dataset(
        data,
        schema if schema is not None else clf.schema_,
        image_size=clf.image_size_ or clf.config.image.image_size,
        seed=clf.config.train.seed + 1000,
        synthetic_n=clf.config.data.synthetic_n,
        modalities=clf.modalities_,
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
    metrics = classification_metrics(ds.labels, clf.predict_dataset(ds), clf.classes_)
    return {
        "model": str(model),
        "data": str(data) if data is not None else "synthetic (embedded, unseen seed)",
        "split": split,
        "classes": list(clf.classes_),
        "modalities": list(clf.modalities_),
        "n": len(ds),
        **metrics,
        "skipped": ds.skipped,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fusion.evaluate", description="Score a trained fusion model on a dataset.")
    p.add_argument("--model", required=True, help="run folder written by fusion.train")
    p.add_argument("--data", help="dataset folder, CSV or .npz (default: a new synthetic cohort)")
    p.add_argument("--schema", help="schema file or name (default: the model's own)")
    p.add_argument("--out", help="write the metrics as JSON to this file")
    args = p.parse_args(argv)
    tune_allocator()
    try:
        result = evaluate(args.model, args.data, args.schema)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_metrics(result, title=f"{result['data']} ({result['split']}, {result['n']} rows, {len(result['skipped'])} skipped)"))
    if args.out:
        write_json(args.out, result)
        print(f"metrics written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
