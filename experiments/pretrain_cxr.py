"""Pretrain an image backbone on public chest X-rays and ship its weights with fusion.

Trains the custom CNN on kermany-cxr (pediatric films, normal vs pneumonia, split by
patient into training and validation parts; the official test split is withheld) as a
*linear probe* would later read it: the backbone's embedding, dropout, one linear layer.
A linear head (rather than the fusion head's hidden layer) asks the backbone itself to
make the classes linearly separable, which is what the late-fusion strategies read from
it (a logistic regression on the frozen embedding). Recipe, chosen on the validation
part (docs/results.md): AdamW (lr 3e-3, weight decay 5e-4), one-cycle schedule, batch
64, class-weighted loss, small affine and exposure augmentation (no flips), at most 30
epochs, the epoch of lowest validation loss kept (validation AUC saturates after one
epoch and cannot choose).

Writes ``--ship``/``<name>.safetensors`` (the backbone's tensors) and beside it
``<name>.json`` with their SHA-256, the intensity normalisation, the input size, the
data, the validation figures and this script's exact command, which ``--pretrained cxr``
then loads offline.

Reproducible bit for bit: the same command, torch version and ``--threads`` give the
same file. Every random draw comes from ``--seed``; PyTorch runs its deterministic
algorithms on a fixed number of threads in plain fp32; the intensity statistics are
exact integer sums; and the instruction set is pinned to AVX2 (see ``PINNED_ISA``), so
an AVX-512 CPU runs the same kernels as an AVX2 one. ``--native-isa`` lets each library
pick the widest kernels of the CPU instead (faster on some machines, and still
repeatable on the one machine, but its low bits, hence the weights, differ between CPU
kinds). ``--limit N`` trains on a stratified N films of the training part: the short
run the tests repeat.

    python experiments/pretrain_cxr.py --data ../shared/data/kermany-cxr \\
        [--image-size 128] [--epochs 30] [--threads 2] [--ship fusion/weights]
"""

# ruff: noqa: E402
# (imports after the instruction-set pinning below, on purpose)
from __future__ import annotations

import os
import sys

# The CPU's instruction set picks the kernels, and kernels of different vector widths
# add in different orders, so an AVX-512 machine and an AVX2 one train weights that
# differ in their low bits after the first step and visibly after thirty epochs. Each
# library reads its cap once, when it first runs a kernel, from the environment, so the
# cap must be set here, before anything imports torch (``import fusion`` does): oneDNN
# (convolutions, pooling), PyTorch's own vectorised kernels (normalisation, reductions,
# augmentation, optimiser) and MKL (the linear head's matrix products; its "AVX2" branch
# falls back to each CPU's own on AMD processors, "COMPATIBLE" holds on every x86-64).
# Setting os.environ here reaches the C libraries: the script checks PyTorch's cap after
# import, and tests/test_experiments.py oneDNN's (its verbose header names the ISA).
PINNED_ISA = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}
if __name__ == "__main__" and "--native-isa" not in sys.argv[1:] and "torch" not in sys.modules:
    os.environ.update(PINNED_ISA)

import argparse
import copy
import hashlib
import json
import math
import shlex
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from fusion import __version__, grouped_split, load_dataset
from fusion.data import read_table
from fusion.evaluation import rank_auroc
from fusion.nets.backbones import create_backbone, low_pass

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cxr_shift, beside this script (also under runpy)
import cxr_shift

DATA_NOTE = (
    "kermany-cxr (Kermany et al., Cell 2018): pediatric anterior-posterior chest X-rays of children aged one "
    "to five from Guangzhou Women and Children's Medical Center, official training split (5,216 films), "
    "normal vs pneumonia; this script's training part only (patient-grouped), the official test split never seen"
)
REPRODUCIBLE_NOTE = (
    "bit for bit: the command above with torch {torch} and {threads} thread(s) writes this file again (its SHA-256 "
    "and validation figures; not train_seconds or the date); {isa}; another torch version or thread count rounds "
    "differently and so trains other weights"
)
PINNED_NOTE = (
    "the kernels are pinned to AVX2 (oneDNN, PyTorch, MKL in its compatible mode), so that AVX-512 CPUs run the "
    "ones AVX2 CPUs do (repeatability checked on one AVX-512 machine, whose native kernels give other weights)"
)
NATIVE_NOTE = "--native-isa: each library used this CPU's widest kernels ({capability}), so other CPU kinds differ"


SPLITS = {
    "shift": "patient-grouped: the validation part is the patients of PneumoniaMNIST's validation films",
    "random": "patient-grouped, stratified by normal / bacterial / viral, seed {seed}",
}


@dataclass
class Parts:
    """The training and validation films (uint8, (n, S, S)) with their labels and patient ids."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    groups_train: np.ndarray
    groups_val: np.ndarray
    classes: list[str]


class Probe(nn.Module):
    """(Detail limit ->) backbone -> dropout -> one linear layer.

    ``detail``: the input's detail is limited first, by the function that does it in a
    fusion model's image branch (``image.detail``), so weights that declare a limit are
    read as they were trained.
    """

    def __init__(self, n_classes: int, dropout: float = 0.2, detail: int | None = None):
        super().__init__()
        self.backbone = create_backbone("custom")
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.backbone.output_dim, n_classes)
        self.detail = detail

    def forward(self, x):
        return self.head(self.drop(self.backbone(low_pass(x, self.detail))))


def pinned_isa(native: bool) -> str:
    """The instruction set the kernels run with, as the record states it.

    Raises SystemExit when the pinning did not take: torch was imported before this
    script's first lines ran (``runpy`` inside a process that had loaded it), or the CPU
    lacks AVX2. Either way the weights would not be the ones the record promises.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    if native:
        return f"native ({capability})"
    unset = sorted(k for k, v in PINNED_ISA.items() if os.environ.get(k) != v)
    if unset or capability != "AVX2":
        raise SystemExit(
            f"the AVX2 pinning did not take (PyTorch reports {capability}; unset: {unset or 'none'}): run this script "
            "in its own process, before anything loads torch, on a CPU with AVX2, or pass --native-isa"
        )
    return "AVX2"


def make_deterministic(threads: int) -> None:
    """Same threads, same kernels, same seed (``train_probe``): the same weights, bit for bit.

    Thread counts change how reductions (batch-norm statistics, weight gradients) are
    split and so their rounding; deterministic algorithms rule out the kernels that add
    in arrival order; fp32 throughout (no bf16 matmul on CPUs that have it, no autocast).
    Inter-op threads can be set only once per process, before any parallel work.
    """
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.backends.mkldnn.deterministic = True
    torch.set_float32_matmul_precision("highest")


def stratified_subset(index: np.ndarray, strata: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """``n`` of ``index`` (sorted) in the proportions of ``strata``, the same ones for one seed.

    The films are shuffled, grouped by stratum and every (len/n)-th is taken, so each
    stratum keeps its share to within one film; all of ``index`` when ``n`` is None or
    not smaller.
    """
    if n is None or n >= len(index):
        return index
    shuffled = np.random.default_rng(seed).permutation(index)
    grouped = shuffled[np.argsort(strata[shuffled], kind="stable")]
    return np.sort(grouped[np.arange(n) * len(grouped) // n])


def load_parts(
    data: str, schema: str, image_size: int, val_fraction: float, seed: int, limit: int | None, split: str = "shift"
) -> Parts:
    """kermany-cxr split by patient into training and validation parts.

    ``split`` "shift": the validation part is the patients of PneumoniaMNIST's
    validation films (``experiments/splits``), so that the same films at 28 px are a
    second, shifted view of it that training never saw (:mod:`cxr_shift`). "random":
    a patient-grouped ``val_fraction`` stratified by the finer label (normal / bacterial /
    viral). ``limit`` then keeps that many training films (stratified by the finer
    label), the validation part stays whole.
    """
    ds = load_dataset(data, schema, image_size=image_size, modalities=("image",))
    table = read_table(Path(data) / "metadata.csv").set_index("filename")
    subtype = table.loc[list(ds.files), "subtype"].to_numpy()
    finer = np.where(ds.labels == 0, 0, np.where(subtype == "bacteria", 1, 2))
    if split == "shift":
        held = np.isin(ds.groups.astype(str), sorted(cxr_shift.held_out_patients()))
        parts = {"train": np.flatnonzero(~held), "val": np.flatnonzero(held)}
    else:
        parts = grouped_split(finer, ds.groups, val_fraction=val_fraction, test_fraction=0.0, seed=seed)
    train, val = stratified_subset(parts["train"], finer, limit, seed), parts["val"]
    return Parts(
        ds.images[train], ds.labels[train], ds.images[val], ds.labels[val], ds.groups[train], ds.groups[val],
        list(ds.classes),
    )  # fmt: skip


def intensity(images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the pixels on [0, 1], from exact integer sums.

    A float sum's rounding depends on the order the vector kernels add in, which differs
    between CPU kinds; a histogram of the 256 grey levels does not.
    """
    counts = np.bincount(np.ascontiguousarray(images).reshape(-1), minlength=256).tolist()
    n = sum(counts)
    total = sum(v * c for v, c in enumerate(counts))
    squares = sum(v * v * c for v, c in enumerate(counts))
    return total / (n * 255), math.sqrt(n * squares - total * total) / (n * 255)


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
def probabilities(model: Probe, images: np.ndarray, mean: float, std: float) -> torch.Tensor:
    model.eval()
    out = [torch.softmax(model(inputs(images[i : i + 256], mean, std)), 1) for i in range(0, len(images), 256)]
    return torch.cat(out).double()


def val_loss(proba: torch.Tensor, labels: np.ndarray) -> float:
    """Mean negative log-likelihood, the criterion that picks the epoch kept.

    In torch rather than numpy: numpy's log has its own AVX-512 code, and a last-bit
    difference could in principle flip the choice between two epochs.
    """
    picked = proba[torch.arange(len(labels)), torch.from_numpy(labels)]
    return float(-picked.clamp(1e-7, 1).log().mean())


def train_probe(parts: Parts, args) -> tuple[Probe, dict, tuple[float, float]]:
    """One training run: the model of the epoch of lowest validation loss, its summary
    and the intensity normalisation it was trained with.

    ``args`` needs ``epochs, batch_size, lr, weight_decay, patience, seed``. The seed
    draws the initial weights and dropout (torch's global generator, reset here, so runs
    of several seeds in one process each start as a fresh process would) and the batch
    order and augmentation (a generator of their own).
    """
    torch.manual_seed(args.seed)
    mean, std = intensity(parts.x_train)
    k = len(parts.classes)
    y_train = parts.y_train
    weights = torch.tensor(len(y_train) / (k * np.bincount(y_train, minlength=k)), dtype=torch.float32)
    model = Probe(k, detail=getattr(args, "detail", None)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = math.ceil(len(y_train) / args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps, pct_start=0.15
    )
    gen = torch.Generator().manual_seed(args.seed)
    best, stale, history, start = (math.inf, 0, None), 0, [], time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(y_train), generator=gen).numpy()
        for i in range(steps):
            batch = order[i * args.batch_size : (i + 1) * args.batch_size]
            if len(batch) < 2:
                continue
            logits = model(inputs(parts.x_train[batch], mean, std, gen))
            loss = F.cross_entropy(logits, torch.from_numpy(y_train[batch]), weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        proba = probabilities(model, parts.x_val, mean, std)
        loss_val = val_loss(proba, parts.y_val)
        auroc = rank_auroc(parts.y_val == 1, proba[:, 1].numpy())
        history.append({"epoch": epoch, "val_loss": round(loss_val, 4), "val_auroc": round(auroc, 4)})
        print(json.dumps(history[-1]), flush=True)
        if loss_val < best[0]:
            best, stale = (loss_val, epoch, copy.deepcopy(model.state_dict())), 0
        else:
            stale += 1
            if stale >= args.patience:
                break
    seconds = time.perf_counter() - start
    model.load_state_dict(best[2])
    return model, summarise(model, parts, args, (mean, std), len(history), best[1], seconds), (mean, std)


def summarise(model: Probe, parts: Parts, args, stats, epochs_run: int, best_epoch: int, seconds: float) -> dict:
    """The validation figures of the model kept, and how it was trained."""
    proba = probabilities(model, parts.x_val, *stats).numpy()
    return {
        "val_accuracy": round(float((proba.argmax(1) == parts.y_val).mean()), 4),
        "val_auroc": round(rank_auroc(parts.y_val == 1, proba[:, 1]), 4),
        "n_train": len(parts.y_train),
        "n_val": len(parts.y_val),
        "train_patients": len(set(parts.groups_train)),
        "val_patients": len(set(parts.groups_val)),
        "split": SPLITS[getattr(args, "split", "random")].format(seed=args.seed),
        "detail": getattr(args, "detail", None),
        "limit": args.limit,
        "epochs": args.epochs,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "train_seconds": round(seconds, 1),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def shift_figures(model: Probe, stats, parts: Parts, args) -> dict:
    """The kept model's figures on the views of :mod:`cxr_shift` that exist: its own
    validation part (unseen patients; with ``--split shift`` the 224 px view), the same
    patients' PneumoniaMNIST validation films at 28 px (``--split shift`` only: with a
    random split training has seen some of them) and nih-pneumonia's development part.
    Images are brought to the model's size as fusion brings them (bilinear)."""
    shared = Path(args.shared) if args.shared else Path(args.data).resolve().parent
    views = {"held_out": (parts.x_val, parts.y_val)}
    npz = shared / "pneumoniamnist" / "pneumoniamnist_trainval.npz"
    if args.split == "shift" and npz.is_file():
        with np.load(npz) as z:
            small = [Image.fromarray(a).resize((args.image_size,) * 2, Image.BILINEAR) for a in z["val_images"]]
            views["pneumoniamnist_val_28"] = (np.stack([np.asarray(a) for a in small]), z["val_labels"].ravel())
    nih = shared / "nih-pneumonia"
    if (nih / "metadata.csv").is_file():
        table = read_table(nih / "metadata.csv")
        films = cxr_shift.read_films(nih / "images", table["filename"], side=args.image_size)
        views["nih_dev"] = (films, (table["finding"].to_numpy() == "pneumonia").astype(int))
    out = {}
    for name, (images, labels) in views.items():
        out[name] = cxr_shift.figures(np.asarray(labels).astype(int), probabilities(model, images, *stats).numpy())
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # No abbreviations: the pinning above looks for the literal --native-isa.
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
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
    p.add_argument("--split", choices=sorted(SPLITS), default="shift", help="the validation part (see load_parts)")
    p.add_argument("--detail", type=int, help="limit the detail the backbone reads to N px (image.detail)")
    p.add_argument(
        "--shared", help="folder of the shared cohorts, for the shift-aware figures (default: --data's parent)"
    )
    p.add_argument("--limit", type=int, help="train on this many films of the training part (stratified; tests)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads; the weights depend on it (default 2)")
    p.add_argument("--native-isa", action="store_true", help="the CPU's widest kernels: weights differ by CPU kind")
    p.add_argument("--ship", help="folder to write the shipped weights to (e.g. fusion/weights)")
    p.add_argument("--name", default="custom_cxr", help="file stem of the shipped weights")
    args = p.parse_args(argv)
    if args.threads < 1 or (args.limit is not None and args.limit < 2):
        p.error("--threads must be at least 1 and --limit at least 2")
    return args


def main() -> None:
    args = parse_args()
    isa = pinned_isa(args.native_isa)
    make_deterministic(args.threads)
    parts = load_parts(args.data, args.schema, args.image_size, args.val_fraction, args.seed, args.limit, args.split)
    model, summary, (mean, std) = train_probe(parts, args)
    summary["shift_aware"] = shift_figures(model, (mean, std), parts, args)
    print(json.dumps(summary, indent=2))
    if args.ship:
        deterministic = {"threads": args.threads, "isa": isa, "seed": args.seed}
        ship(model.backbone, mean, std, parts.classes, Path(args.ship), args, summary, deterministic)


def ship(
    backbone: nn.Module, mean: float, std: float, classes: list[str], folder: Path, args, summary: dict, deterministic
) -> None:
    """Write the backbone's tensors and their provenance record."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{args.name}.safetensors"
    save_file(tensors, str(path))
    path.chmod(0o644)
    isa_note = PINNED_NOTE if deterministic["isa"] == "AVX2" else NATIVE_NOTE.format(capability=deterministic["isa"])
    record = {
        "backbone": "custom",
        "image_size": args.image_size,
        "detail": getattr(args, "detail", None),
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
        "deterministic": deterministic,
        "note": REPRODUCIBLE_NOTE.format(torch=torch.__version__, threads=deterministic["threads"], isa=isa_note),
    }
    (folder / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"shipped weights written to {path} (sha256 {record['sha256'][:12]}...)")


if __name__ == "__main__":
    main()
