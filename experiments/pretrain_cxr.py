"""Pretrain an image backbone on public chest X-rays and ship its weights with fusion.

Trains the image-only model on kermany-cxr (pediatric films, normal vs pneumonia, split
by patient into training and validation parts; the official test split is withheld),
then writes:

- ``--out``: the run folder (any backbone), which ``--init-from RUN_DIR`` accepts;
- for a backbone with shipped weights (``custom``), ``--ship``: the backbone's tensors
  as ``<name>.safetensors`` and beside them ``<name>.json`` with their SHA-256, the
  intensity normalisation, the input size, the data, the validation figures and this
  script's exact command, which ``--pretrained cxr`` then loads offline.

    python experiments/pretrain_cxr.py --data ../shared/data/kermany-cxr \\
        [--image-size 128] [--steps 3000] [--out runs/pretrain_cxr] [--ship fusion/weights]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shlex
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from fusion import Config, FusionClassifier, __version__, classification_metrics, grouped_split, load_dataset

DATA_NOTE = (
    "kermany-cxr (Kermany et al., Cell 2018): pediatric anterior-posterior chest X-rays of children aged one "
    "to five from Guangzhou Women and Children's Medical Center, official training split (5,216 films), "
    "normal vs pneumonia; this script's training part only (patient-grouped), the official test split never seen"
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the kermany-cxr folder")
    p.add_argument("--schema", default="kermany_cxr")
    p.add_argument("--backbone", default="custom")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=3000, help="optimisation steps")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/pretrain_cxr", help="run folder to write (new or empty)")
    p.add_argument("--ship", help="folder to write the shipped weights to (e.g. fusion/weights)")
    p.add_argument("--name", default="custom_cxr", help="file stem of the shipped weights")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the library's per-epoch lines

    ds = load_dataset(args.data, args.schema, image_size=args.image_size, modalities=("image",))
    index = grouped_split(ds.labels, ds.groups, val_fraction=args.val_fraction, test_fraction=0.0, seed=args.seed)
    train, val = ds.subset(index["train"]), ds.subset(index["val"])
    cfg = Config(modalities=("image",))
    cfg.image.backbone, cfg.image.image_size = args.backbone, args.image_size
    cfg.train.steps, cfg.train.seed = args.steps, args.seed
    start = time.perf_counter()
    clf = FusionClassifier(cfg).fit(train, val, verbose=True)
    seconds = time.perf_counter() - start
    metrics = classification_metrics(val.labels, clf.predict_dataset(val), clf.classes_)
    clf.save(args.out)
    summary = {
        "val_accuracy": round(metrics["accuracy"], 4),
        "val_auroc": round(metrics["auroc_macro"], 4),
        "val_macro_f1": round(metrics["macro_f1"], 4),
        "n_train": len(train),
        "n_val": len(val),
        "train_patients": len(set(train.groups)),
        "val_patients": len(set(val.groups)),
        "epochs_run": clf.history_["epochs_run"],
        "best_epoch": clf.history_["best_epoch"],
        "train_seconds": round(seconds, 1),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    print(json.dumps(summary, indent=2))
    (Path(args.out) / "pretrain.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.ship:
        ship(clf, Path(args.ship), args, summary)


def ship(clf: FusionClassifier, folder: Path, args: argparse.Namespace, summary: dict) -> None:
    """Write the backbone's tensors and their provenance record."""
    branch = clf.network_.branches["image"]
    tensors = {k: v.detach().cpu().contiguous() for k, v in branch.backbone.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{args.name}.safetensors"
    save_file(tensors, str(path))
    record = {
        "backbone": args.backbone,
        "image_size": args.image_size,
        "mean": float(branch.mean),
        "std": float(branch.std),
        "classes": list(clf.classes_),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "bytes": path.stat().st_size,
        "parameters": int(sum(t.numel() for t in tensors.values() if t.is_floating_point())),
        "data": DATA_NOTE,
        "domain_shift": (
            "children aged one to five, anterior-posterior films, one hospital; adult cohorts (covid-chestxray, "
            "NIH) differ in anatomy, projection mix and scanners"
        ),
        "validation": summary,
        "command": "python experiments/pretrain_cxr.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "fusion_version": __version__,
        "torch_version": torch.__version__,
        "date": date.today().isoformat(),
        "split_seed": args.seed,
        "val_fraction": args.val_fraction,
        "note": "np.random and torch seeds fixed; figures vary slightly across CPU kinds and thread counts",
    }
    (folder / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"shipped weights written to {path} (sha256 {record['sha256'][:12]}...)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
