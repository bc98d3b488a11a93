"""Pretrain an image backbone on public chest X-rays and ship its weights with fusion.

Trains the custom CNN on kermany-cxr (pediatric films, normal vs pneumonia, split by
patient into training and validation parts; the official test split is withheld) as a
*linear probe* would later read it: the backbone's embedding, dropout, one linear layer.
A linear head (rather than the fusion head's hidden layer) asks the backbone itself to
make the classes linearly separable, which is what the late-fusion strategies read from
it (a logistic regression on the frozen embedding). Recipe, chosen on the validation
part (README, Results): AdamW (lr 3e-3, weight decay 5e-4), one-cycle schedule, batch
64, class-weighted loss, small affine and exposure augmentation (no flips), at most 30
epochs, the epoch of lowest validation loss kept (validation AUC saturates after one
epoch and cannot choose).

Writes ``--ship``/``<name>.safetensors`` (the backbone's tensors) and beside it
``<name>.json`` with their SHA-256, the intensity normalisation, the input size, the
data, the validation figures and this script's exact command, which ``--pretrained cxr``
then loads offline.

    python experiments/pretrain_cxr.py --data ../shared/data/kermany-cxr \\
        [--image-size 128] [--epochs 30] [--ship fusion/weights]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import shlex
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from fusion import __version__, grouped_split, load_dataset
from fusion.data import read_table
from fusion.evaluation import rank_auroc
from fusion.nets.backbones import create_backbone

DATA_NOTE = (
    "kermany-cxr (Kermany et al., Cell 2018): pediatric anterior-posterior chest X-rays of children aged one "
    "to five from Guangzhou Women and Children's Medical Center, official training split (5,216 films), "
    "normal vs pneumonia; this script's training part only (patient-grouped), the official test split never seen"
)


class Probe(nn.Module):
    """Backbone -> dropout -> one linear layer."""

    def __init__(self, n_classes: int, dropout: float = 0.2):
        super().__init__()
        self.backbone = create_backbone("custom")
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.backbone.output_dim, n_classes)

    def forward(self, x):
        return self.head(self.drop(self.backbone(x)))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotation up to 7 degrees, scale 0.9-1.1, shift up to 6 % of the side, contrast
    0.8-1.2, brightness +-0.08; no flips (a mirrored chest puts the heart on the right)."""
    n = x.shape[0]

    def r():
        return torch.rand(n, generator=gen)

    angle = (r() * 2 - 1) * math.radians(7)
    scale = 0.9 + 0.2 * r()
    tx, ty = (r() * 2 - 1) * 0.12, (r() * 2 - 1) * 0.12  # 6 % of the side in [-1, 1] coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = (0.8 + 0.4 * r()).view(n, 1, 1, 1)
    bright = ((r() * 2 - 1) * 0.08).view(n, 1, 1, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + bright).clamp(0, 1)


def inputs(images: np.ndarray, mean: float, std: float, gen: torch.Generator | None = None) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).unsqueeze(1)
    if gen is not None:
        x = augment(x, gen)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def probabilities(model: Probe, images: np.ndarray, mean: float, std: float) -> np.ndarray:
    model.eval()
    out = [torch.softmax(model(inputs(images[i : i + 256], mean, std)), 1) for i in range(0, len(images), 256)]
    return torch.cat(out).numpy().astype(np.float64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the kermany-cxr folder")
    p.add_argument("--schema", default="kermany_cxr")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ship", help="folder to write the shipped weights to (e.g. fusion/weights)")
    p.add_argument("--name", default="custom_cxr", help="file stem of the shipped weights")
    args = p.parse_args()
    torch.manual_seed(args.seed)

    ds = load_dataset(args.data, args.schema, image_size=args.image_size, modalities=("image",))
    # Split by patient, stratified by the finer label (normal / bacterial / viral), so
    # both parts hold each kind of pneumonia in proportion.
    table = read_table(Path(args.data) / "metadata.csv").set_index("filename")
    subtype = table.loc[list(ds.files), "subtype"].to_numpy()
    finer = np.where(ds.labels == 0, 0, np.where(subtype == "bacteria", 1, 2))
    split = grouped_split(finer, ds.groups, val_fraction=args.val_fraction, test_fraction=0.0, seed=args.seed)
    train, val = split["train"], split["val"]
    x_train, y_train = ds.images[train], ds.labels[train]
    mean, std = float(x_train.mean() / 255.0), float(x_train.std() / 255.0)
    k = len(ds.classes)
    weights = torch.tensor(len(y_train) / (k * np.bincount(y_train, minlength=k)), dtype=torch.float32)
    model = Probe(k).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = math.ceil(len(train) / args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps, pct_start=0.15
    )
    gen = torch.Generator().manual_seed(args.seed)
    best, stale, history, start = (math.inf, 0, None), 0, [], time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=gen).numpy()
        for i in range(steps):
            batch = order[i * args.batch_size : (i + 1) * args.batch_size]
            if len(batch) < 2:
                continue
            loss = F.cross_entropy(
                model(inputs(x_train[batch], mean, std, gen)), torch.from_numpy(y_train[batch]), weight=weights
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        proba = probabilities(model, ds.images[val], mean, std)
        val_loss = float(-np.log(np.clip(proba[np.arange(len(val)), ds.labels[val]], 1e-7, 1)).mean())
        auroc = rank_auroc(ds.labels[val] == 1, proba[:, 1])
        history.append({"epoch": epoch, "val_loss": round(val_loss, 4), "val_auroc": round(auroc, 4)})
        print(json.dumps(history[-1]), flush=True)
        if val_loss < best[0]:
            best, stale = (val_loss, epoch, copy.deepcopy(model.state_dict())), 0
        else:
            stale += 1
            if stale >= args.patience:
                break
    seconds = time.perf_counter() - start
    model.load_state_dict(best[2])
    proba = probabilities(model, ds.images[val], mean, std)
    summary = {
        "val_accuracy": round(float((proba.argmax(1) == ds.labels[val]).mean()), 4),
        "val_auroc": round(rank_auroc(ds.labels[val] == 1, proba[:, 1]), 4),
        "n_train": len(train),
        "n_val": len(val),
        "train_patients": len(set(ds.groups[train])),
        "val_patients": len(set(ds.groups[val])),
        "split": "patient-grouped, stratified by normal / bacterial / viral, seed " + str(args.seed),
        "epochs_run": len(history),
        "best_epoch": best[1],
        "train_seconds": round(seconds, 1),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    print(json.dumps(summary, indent=2))
    if args.ship:
        ship(model.backbone, mean, std, list(ds.classes), Path(args.ship), args, summary)


def ship(backbone: nn.Module, mean: float, std: float, classes: list[str], folder: Path, args, summary: dict) -> None:
    """Write the backbone's tensors and their provenance record."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{args.name}.safetensors"
    save_file(tensors, str(path))
    path.chmod(0o644)
    record = {
        "backbone": "custom",
        "image_size": args.image_size,
        "mean": mean,
        "std": std,
        "classes": classes,
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
        "note": "seeded; figures vary slightly across CPU kinds and thread counts",
    }
    (folder / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"shipped weights written to {path} (sha256 {record['sha256'][:12]}...)")


if __name__ == "__main__":
    main()
