"""The training loop of the neural models, and the hardware settings it runs with.

Data are held in memory as ready tensors (uint8 images at model size, preprocessed
tabular arrays), so an epoch costs what the model costs: batches are sliced, turned
to float and augmented on the tensor side. Loss: class-weighted cross-entropy on the
fused logits plus, with several modalities, each branch's auxiliary loss. AdamW with a
one-cycle schedule; early stopping on validation macro-F1 keeps the best epoch. A
training that diverges (a loss, a weight or the validation loss not finite) stops at
once with a sentence, before a checkpoint of NaN weights is written.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fusion.config import HeadConfig, TrainConfig
from fusion.data.cache import MappedImages
from fusion.evaluation import macro_f1
from fusion.training import distributed
from fusion.training.checkpoint import load_checkpoint, save_checkpoint
from fusion.training.hardware import autocast, layout

logger = logging.getLogger(__name__)


@dataclass
class Arrays:
    """Model-ready inputs of one split. ``images``: uint8 (n, 1, S, S), or a
    :class:`~fusion.data.cache.MappedImages` (n, S, S) whose batches are read from
    disk as they are needed; ``tabular``: float32 (n, d); either may be None when the
    model does not use it."""

    labels: torch.Tensor
    images: torch.Tensor | MappedImages | None = None
    tabular: torch.Tensor | None = None
    presence: torch.Tensor | None = None  # (n, n_modalities) 0/1; None: all present

    def __len__(self) -> int:
        return len(self.labels)

    def prefetch(self, index: torch.Tensor) -> None:
        """Start reading the images of a coming batch from disk (images on disk only)."""
        if isinstance(self.images, MappedImages):
            self.images.prefetch(index.numpy())

    def batch(self, index: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor | None]:
        images = None
        if isinstance(self.images, torch.Tensor):
            images = self.images[index]
        elif self.images is not None:
            images = torch.from_numpy(self.images[index.numpy()]).unsqueeze(1)
        if images is not None:
            images = images.to(device, non_blocking=True).float().div_(255.0)
        tabular = None if self.tabular is None else self.tabular[index].to(device, non_blocking=True)
        return {"image": images, "tabular": tabular}


# ------------------------------------------------------------- augmentation
def augment_images(
    x: torch.Tensor, generator: torch.Generator, part: tuple[int, int, int] | None = None
) -> torch.Tensor:
    """Random small affine transform and exposure change of a batch in [0, 1].

    Rotation up to 7 degrees, scale 0.9-1.1, shift up to 6 %, contrast 0.85-1.15,
    brightness +-0.06: the variation between two films of the same chest. No flips: a
    mirrored chest puts the heart on the wrong side.

    ``part``: ``x`` is rows ``start:stop`` of a global batch of ``n`` rows, given as
    ``(start, stop, n)`` (distributed training). The random draws are made for all ``n``
    rows, so each row gets the transform it would get in one process and ``generator``
    advances identically on every process.
    """
    b = x.shape[0]
    start, stop, n = part if part is not None else (0, b, b)

    def uniform(lo, hi):
        return (torch.rand(n, generator=generator) * (hi - lo) + lo)[start:stop]

    angle = uniform(-7, 7) * math.pi / 180
    scale = uniform(0.9, 1.1)
    tx, ty = uniform(-0.06, 0.06), uniform(-0.06, 0.06)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = uniform(0.85, 1.15).to(x.device, x.dtype).view(b, 1, 1, 1)
    bright = uniform(-0.06, 0.06).to(x.device, x.dtype).view(b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + bright).clamp_(0.0, 1.0)


# ------------------------------------------------------------------ the loop
def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights, n / (k * count); absent classes get weight 0."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


# Pixels in one prediction batch: 256 films at 64 px (the default size).
PREDICT_PIXELS = 256 * 64 * 64


@torch.no_grad()
def predict_network(
    model: nn.Module,
    arrays: Arrays,
    device: torch.device,
    precision: str,
    batch_size: int = 256,
    *,
    frozen: bool = False,
    gather: bool = False,
) -> np.ndarray:
    """Class probabilities, shape (n, n_classes), float64.

    ``frozen``: ``model`` is an :func:`~fusion.model.inference_copy`, which holds its
    own precision and runs without autocast.

    ``gather``: under a torch.distributed process group, each process predicts its
    share of the rows (:func:`~fusion.training.distributed.shard`) and every process
    receives all of them; every process must then make the call. No effect in one
    process.

    ``batch_size`` is an upper bound: batches of large images hold at most
    :data:`PREDICT_PIXELS` pixels (20 films at 224 px), so the activations of one
    batch stay near 0.3 GB whatever the image size.
    """
    model.eval()
    if arrays.images is not None:
        side = int(arrays.images.shape[-1])
        batch_size = max(1, min(batch_size, PREDICT_PIXELS // (side * side)))
    rows = distributed.shard(len(arrays)) if gather and distributed.is_distributed() else torch.arange(len(arrays))
    out = []
    for start in range(0, len(rows), batch_size):
        index = rows[start : start + batch_size]
        arrays.prefetch(rows[start + batch_size : start + 2 * batch_size])
        presence = None if arrays.presence is None else arrays.presence[index].to(device)
        with autocast(device, "fp32" if frozen else precision):
            logits = model(layout(arrays.batch(index, device)), presence=presence)
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    proba = np.concatenate(out).astype(np.float64) if out else np.zeros((0, model.n_classes))
    return distributed.gather_rows(proba, len(arrays)) if gather else proba


def fit_network(
    model: nn.Module,
    train: Arrays,
    val: Arrays | None,
    cfg: TrainConfig,
    head: HeadConfig,
    *,
    epochs: int,
    augment: bool,
    device: torch.device,
    precision: str,
    verbose: bool = False,
    checkpoint_dir: str | Path | None = None,
    fingerprint: dict | None = None,
    resume: bool = False,
) -> dict:
    """Train ``model`` in place for at most ``epochs`` epochs and load its best epoch's
    weights.

    With ``checkpoint_dir``, the full training state is saved there after every epoch
    (see :mod:`fusion.checkpoint`); with ``resume``, training continues from the last
    saved epoch, after checking ``fingerprint`` (configuration and data) matches.

    Under a torch.distributed process group (see :mod:`fusion.training.distributed`)
    every process calls it with the same data: each trains on its part of every global
    batch of ``cfg.batch_size`` rows through DistributedDataParallel, validation is
    gathered from all, and only rank 0 writes checkpoints.

    Returns
    -------
    dict
        ``history`` (per epoch: train loss, val loss, val macro-F1, seconds),
        ``best_epoch``, ``epochs`` (planned), ``epochs_run``, ``seconds``,
        ``resumed_from_epoch``.
    """
    n_classes = model.n_classes
    weights = torch.tensor(class_weights(train.labels.numpy(), n_classes), dtype=torch.float32, device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, math.ceil(len(train) / cfg.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=epochs * steps, pct_start=0.2)
    generator = torch.Generator().manual_seed(cfg.seed)
    has_val = val is not None and len(val) > 0
    world = distributed.world_size()
    forward = distributed.training_forward(model, device)
    best = {"f1": -1.0, "loss": math.inf, "epoch": 0, "state": None}
    history, start, stale, first = [], time.perf_counter(), 0, 1
    resumed_from = None
    if resume:
        # Rank 0 reads the checkpoint and sends it: the other processes (other nodes,
        # perhaps) need not see the run folder.
        state = distributed.on_main(lambda: load_checkpoint(checkpoint_dir, fingerprint or {}, world))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer_state"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["rng"]["generator"])
        own = state["rng"]["ranks"][distributed.rank()] if state["rng"].get("ranks") else state["rng"]
        torch.set_rng_state(own["torch"])
        if device.type == "cuda" and own["cuda"] is not None:
            torch.cuda.set_rng_state(own["cuda"], device)
        best = {**state["best"], "state": state["best"]["state"]}
        history, stale = state["history"], state["stale"]
        resumed_from = first = state["epoch"]
        first += 1
        logger.info("resuming after epoch %d (best so far: epoch %d)", resumed_from, best["epoch"])
    progress = _progress(verbose)
    for epoch in range(first, epochs + 1):
        if has_val and stale >= cfg.patience and epoch - 1 > epochs // 2:
            break  # a resumed run that had already stopped early
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total, seen = 0.0, 0
        # Drop a last batch of one (per process): batch norm cannot train on it.
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        batches = [b for b in batches if len(b) >= 2 * world] or batches
        spans = [distributed.local_span(len(b)) for b in batches]  # this process's rows of each batch
        for k, index in enumerate(progress(batches, desc=f"epoch {epoch}/{epochs}")):
            start_row, stop_row = spans[k]
            part = index[start_row:stop_row]
            if k + 1 < len(batches):  # this process's part of the next batch, read while this one trains
                ahead_start, ahead_stop = spans[k + 1]
                train.prefetch(batches[k + 1][ahead_start:ahead_stop])
            inputs = train.batch(part, device)
            if augment and inputs["image"] is not None:
                span = (start_row, stop_row, len(index)) if world > 1 else None
                inputs["image"] = augment_images(inputs["image"], generator, span)
            labels = train.labels[part].to(device)
            # One process: the weighted mean over the batch. Several: each process's
            # weighted sum over the whole global batch's weight, times the world size
            # DDP divides the summed gradients by, so the gradient is the one-process one.
            norm = float(weights[train.labels[index].to(device)].sum()) / world if world > 1 else None
            with autocast(device, precision):
                logits, aux = forward(layout(inputs))
                loss = _cross_entropy(logits, labels, weights, norm)
                for aux_logits in aux.values():
                    loss = loss + head.aux_weight * _cross_entropy(aux_logits, labels, weights, norm)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler.last_epoch < scheduler.total_steps - 1:
                scheduler.step()
            value = float(loss.detach())
            # Every process stops at the same batch: one alone would leave the others
            # waiting in the next gradient exchange.
            checked = distributed.all_sum(value, device) if world > 1 else value
            _check_finite(checked, "the loss", epoch, cfg.lr, (k, len(batches)))
            total += value * len(index) / world
            seen += len(index)
        if world > 1:
            distributed.sync_buffers(model)
            total = distributed.all_sum(total, device)
        _check_finite(_worst_weight(model), "a weight", epoch, cfg.lr)
        record = {
            "epoch": epoch,
            "train_loss": total / max(seen, 1),
            "train_seconds": time.perf_counter() - t0,
            "train_images": seen,
        }
        if has_val:
            proba = predict_network(model, val, device, precision, gather=True)
            y = val.labels.numpy()
            record["val_loss"] = float(
                F.nll_loss(
                    torch.log(torch.from_numpy(proba).clamp_min(1e-12)),
                    torch.from_numpy(y),
                    weight=weights.cpu().double(),
                )
            )
            _check_finite(record["val_loss"], "the validation loss", epoch, cfg.lr)
            record["val_macro_f1"] = macro_f1(y, proba.argmax(1))
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        improved = (
            not has_val
            or record["val_macro_f1"] > best["f1"]
            or (record["val_macro_f1"] == best["f1"] and record["val_loss"] < best["loss"])
        )
        if improved:
            best.update(f1=record.get("val_macro_f1", -1.0), loss=record.get("val_loss", math.inf), epoch=epoch)
            best["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            stale = 0
        else:
            stale += 1
        rank_rng = _rank_rng(device) if world > 1 and checkpoint_dir is not None else None
        if checkpoint_dir is not None and distributed.is_main():
            save_checkpoint(
                checkpoint_dir,
                epoch=epoch,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                generator=generator,
                best=best,
                history=history,
                stale=stale,
                fingerprint=fingerprint or {},
                rank_rng=rank_rng,
            )
        val_text = f"  val loss {record['val_loss']:.4f}  val macro-F1 {record['val_macro_f1']:.3f}" if has_val else ""
        logger.info(
            "epoch %3d/%d  train loss %.4f%s  %.1fs%s",
            epoch,
            epochs,
            record["train_loss"],
            val_text,
            record["seconds"],
            " *" if improved else "",
        )
        # Early stopping waits for the second half: under the one-cycle schedule the
        # first epochs run at a high learning rate, and validation scores there are
        # noisy and not yet the model's best.
        if has_val and stale >= cfg.patience and epoch > epochs // 2:
            logger.info("early stop: no val macro-F1 gain for %d epochs; best epoch %d", cfg.patience, best["epoch"])
            break
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    distributed.unwrap_sync_batchnorm(model)
    model.eval()
    return {
        "history": history,
        "best_epoch": best["epoch"],
        "epochs": epochs,
        "epochs_run": len(history),
        "seconds": time.perf_counter() - start,
        "resumed_from_epoch": resumed_from,
    }


def _check_finite(value: float, what: str, epoch: int, lr: float, batch: tuple[int, int] | None = None) -> None:
    """Stop a training that diverged, naming where (``batch``: index and count of the
    epoch's batches) and the setting to change.

    Raises
    ------
    ValueError
        ``value`` is NaN or infinite.
    """
    if math.isfinite(value):
        return
    kind = "NaN" if math.isnan(value) else "infinite"
    where = f" (batch {batch[0] + 1} of {batch[1]})" if batch is not None else ""
    raise ValueError(
        f"training diverged: {what} became {kind} at epoch {epoch}{where}; lower the learning rate "
        f"(train.lr, now {lr:g})"
    )


@torch.no_grad()
def _worst_weight(model: nn.Module) -> float:
    """NaN or infinity when any weight or buffer (batch norm's statistics) is not
    finite, else 0; one device synchronisation for the whole model."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    if not tensors:
        return 0.0
    finite = torch.stack([torch.isfinite(t).all() for t in tensors]).all()
    return 0.0 if bool(finite) else math.nan


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, norm: float | None):
    """Class-weighted cross-entropy: the weighted mean (``norm`` None), or the weighted
    sum divided by ``norm``."""
    if norm is None:
        return F.cross_entropy(logits.float(), labels, weight=weights)
    return F.cross_entropy(logits.float(), labels, weight=weights, reduction="sum") / norm


def _rank_rng(device: torch.device) -> list[dict]:
    """Every process's torch random state (dropout draws from it), for the checkpoint."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return distributed.all_gather_objects({"torch": torch.get_rng_state(), "cuda": cuda})


def _progress(verbose: bool):
    """A tqdm progress bar over batches when verbose and attached to a terminal."""
    if not verbose:
        return lambda it, desc: it
    from tqdm.auto import tqdm

    return lambda it, desc: tqdm(it, desc=desc, leave=False, disable=not sys.stderr.isatty(), unit="batch")
