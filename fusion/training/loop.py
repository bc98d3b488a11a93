"""The training loop of the neural models, and their batched prediction.

Data are held in memory as ready tensors (uint8 images at model size, preprocessed
tabular arrays), so an epoch costs what the model costs: batches are sliced, turned
to float and augmented on the tensor side. Loss: cross-entropy on the fused logits plus,
with several modalities, each branch's auxiliary loss; ``train.balance`` says how the
classes' imbalance is met (class-weighted loss by default, class-balanced batches, or
neither). AdamW with a one-cycle schedule; the best epoch on validation macro-F1 is
kept.

The loop is plain: what surrounds it is in :mod:`fusion.training.hooks`. Early
stopping, checkpoints and resume, progress lines, the stop of a training that
diverges (a loss, a weight or the validation loss not finite, before a checkpoint of
NaN weights is written) and what a process group adds are each a hook.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fusion.backends.base import class_weights
from fusion.config import HeadConfig, TrainConfig
from fusion.data.cache import MappedImages
from fusion.evaluation import macro_f1
from fusion.training import distributed
from fusion.training.hardware import autocast, channels_first, layout
from fusion.training.hooks import DistributedSync, Hook, TrainState, standard_hooks
from fusion.training.hooks.base import call


@dataclass
class Arrays:
    """Model-ready inputs of one split. ``images``: uint8 (n, C, S, S) (for colour a
    channels-first view of the decoded (n, S, S, C)), or a
    :class:`~fusion.data.cache.MappedImages` (n, S, S) or (n, S, S, C) whose batches are
    read from disk as they are needed; ``tabular``: float32 (n, d); either may be None
    when the model does not use it."""

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
            images = channels_first(torch.from_numpy(self.images[index.numpy()]))
        if images is not None:
            images = images.to(device, non_blocking=True).float().div_(255.0)
        tabular = None if self.tabular is None else self.tabular[index].to(device, non_blocking=True)
        return {"image": images, "tabular": tabular}


# ------------------------------------------------------------- augmentation
def augment_images(
    x: torch.Tensor,
    generator: torch.Generator,
    part: tuple[int, int, int] | None = None,
    *,
    flip_rotate: bool = False,
) -> torch.Tensor:
    """Random small affine transform and exposure change of a batch in [0, 1].

    Rotation up to 7 degrees, scale 0.9-1.1, shift up to 6 %, contrast 0.85-1.15,
    brightness +-0.06: the variation between two films of the same chest. No flips: a
    mirrored chest puts the heart on the wrong side.

    ``flip_rotate``: each image is also mirrored (or not) and turned by a random number
    of quarter turns, the eight symmetries of the square, folded into the same affine
    transform: for images without an up or a side (skin lesions, pathology), where
    they are label-preserving. Colour batches (three channels) also get a mild
    saturation change, 0.9-1.1 (brightness and contrast apply to every channel alike);
    the hue, which carries diagnoses (the blue-white veil of a melanoma), is kept.

    ``part``: ``x`` is rows ``start:stop`` of a global batch of ``n`` rows, given as
    ``(start, stop, n)`` (distributed training). The random draws are made for all ``n``
    rows, so each row gets the transform it would get in one process and ``generator``
    advances identically on every process. A gray batch without ``flip_rotate`` draws
    exactly what it always drew.
    """
    b = x.shape[0]
    start, stop, n = part if part is not None else (0, b, b)

    def uniform(lo, hi):
        return (torch.rand(n, generator=generator) * (hi - lo) + lo)[start:stop]

    angle = uniform(-7, 7) * math.pi / 180
    scale = uniform(0.9, 1.1)
    tx, ty = uniform(-0.06, 0.06), uniform(-0.06, 0.06)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    if flip_rotate:
        theta = torch.cat([theta[:, :, :2] @ _symmetries(uniform(0, 8)), theta[:, :, 2:]], dim=2)
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = uniform(0.85, 1.15).to(x.device, x.dtype).view(b, 1, 1, 1)
    bright = uniform(-0.06, 0.06).to(x.device, x.dtype).view(b, 1, 1, 1)
    if x.shape[1] == 3:
        x = _saturate(x, uniform(0.9, 1.1).to(x.device, x.dtype).view(b, 1, 1, 1))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + bright).clamp_(0.0, 1.0)


def _symmetries(draw: torch.Tensor) -> torch.Tensor:
    """One of the square's eight symmetries per row, as 2 x 2 matrices: ``draw`` in
    [0, 8) picks a number of quarter turns (its integer part mod 4) and a mirror (4 and
    above)."""
    k = draw.floor().long()
    turns, mirror = k % 4, k >= 4
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0])[turns]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0])[turns]
    flip = torch.where(mirror, -1.0, 1.0)
    # A quarter-turn rotation after a mirror of the x axis (diag(flip, 1)).
    return torch.stack([torch.stack([cos * flip, -sin], 1), torch.stack([sin * flip, cos], 1)], 1)


def _saturate(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Colour saturation scaled by ``factor`` (per row): each pixel moved towards (or
    away from) its own gray (ITU-R 601 luma), as torchvision's ``adjust_saturation``."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    gray = (x * weights).sum(dim=1, keepdim=True)
    return (gray + (x - gray) * factor).clamp_(0.0, 1.0)


# How a batch is augmented: augment_images with the run's settings.
Augment = Callable[..., torch.Tensor]


# ------------------------------------------------------------------ the loop
def loss_weights(labels: np.ndarray, n_classes: int, balance: str) -> np.ndarray:
    """The loss's class weights: inverse frequency (:func:`~fusion.backends.base.class_weights`)
    with ``balance`` "weights", else all 1 (class-balanced sampling already gives each
    class its share of the gradient; "none" asks for the plain loss)."""
    if balance == "weights":
        return class_weights(labels, n_classes)
    return np.ones(n_classes)


def epoch_order(labels: torch.Tensor, balance: str, generator: torch.Generator) -> torch.Tensor:
    """The rows one epoch visits, in order: a seeded permutation of them all or, with
    ``balance`` "sampling", as many rows drawn with replacement, each row with
    probability 1 / (k * its class's count), so that every class is drawn equally
    often (rare rows recur within an epoch, frequent ones are left out of it)."""
    if balance != "sampling":
        return torch.randperm(len(labels), generator=generator)
    counts = torch.bincount(labels)
    return torch.multinomial(1.0 / counts[labels].double(), len(labels), replacement=True, generator=generator)


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

    ``frozen``: ``model`` is an :func:`~fusion.nets.joint.inference_copy`, which holds its
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
        side = int(arrays.images.shape[2])  # (n, C, S, S) in memory, (n, S, S[, C]) on disk
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
    hooks: Sequence[Hook] | None = None,
    flip_rotate: bool = False,
) -> dict:
    """Train ``model`` in place for at most ``epochs`` epochs and load its best epoch's
    weights.

    A plain epoch loop: each epoch trains on one seeded permutation of ``train``,
    scores ``val`` and keeps the best epoch (highest validation macro-F1, then lowest
    validation loss; without ``val``, the last). The rest is done by ``hooks``, in
    their order (see :mod:`fusion.training.hooks`; default:
    :func:`~fusion.training.hooks.standard_hooks` of ``cfg``, without checkpoints),
    after a :class:`~fusion.training.hooks.DistributedSync`, which always runs first.
    Under a torch.distributed process group every process calls it with the same
    data and trains on its part of every global batch (see
    :mod:`fusion.training.distributed`).

    ``augment``: augment the training images (:func:`augment_images`), with mirror
    images and quarter turns as well when ``flip_rotate``.

    Returns
    -------
    dict
        ``history`` (per epoch: train loss, val loss, val macro-F1, seconds),
        ``best_epoch``, ``epochs`` (planned), ``epochs_run``, ``seconds``,
        ``resumed_from_epoch``.

    Raises
    ------
    TypeError
        A hook that is not a :class:`~fusion.training.hooks.Hook`.
    """
    begun = time.perf_counter()
    hooks = [DistributedSync(), *_checked(standard_hooks(cfg) if hooks is None else hooks)]
    state = _start(model, train, val, cfg, epochs, device)
    weights = loss_weights(train.labels.numpy(), model.n_classes, cfg.balance)
    loss = _Loss(torch.tensor(weights, dtype=torch.float32, device=device), head.aux_weight, device, precision)
    augment = functools.partial(augment_images, flip_rotate=flip_rotate) if augment else None
    stop = call(hooks, "on_fit_start", state)
    while not stop and state.epoch < epochs:
        state.epoch += 1
        state.history.append(_epoch(state, train, val, cfg, augment, loss, hooks))
        _keep_best(state)
        stop = call(hooks, "on_epoch_end", state)
    if state.best["state"] is not None:
        model.load_state_dict(state.best["state"])
    call(hooks, "on_fit_end", state)
    model.eval()
    return {
        "history": state.history,
        "best_epoch": state.best["epoch"],
        "epochs": epochs,
        "epochs_run": len(state.history),
        "seconds": time.perf_counter() - begun,
        "resumed_from_epoch": state.resumed_from,
    }


def _epoch(
    state: TrainState, train: Arrays, val: Arrays | None, cfg: TrainConfig, augment: Augment | None, loss: _Loss, hooks
) -> dict:
    """Train one epoch, then validate: the epoch's line of the history."""
    t0 = time.perf_counter()
    _train_epoch(state, train, cfg, augment, loss, hooks)
    call(hooks, "on_train_epoch_end", state)
    record = {
        "epoch": state.epoch,
        "train_loss": state.loss_sum / max(state.seen, 1),
        "train_seconds": time.perf_counter() - t0,
        "train_images": state.seen,
    }
    if state.has_val:
        record.update(_validate(state.model, val, loss))
    record["seconds"] = time.perf_counter() - t0
    return record


def _checked(hooks: Sequence[Hook]) -> list[Hook]:
    """``hooks`` as a list, each checked to be a Hook (one without a method the loop
    calls would fail only at that point, perhaps epochs later)."""
    hooks = list(hooks)
    for i, hook in enumerate(hooks):
        if not isinstance(hook, Hook):
            raise TypeError(f"hooks[{i}] must be a fusion.training.hooks.Hook; got {type(hook).__name__}")
    return hooks


def _start(model: nn.Module, train: Arrays, val: Arrays | None, cfg: TrainConfig, epochs: int, device) -> TrainState:
    """The optimiser (AdamW), its one-cycle schedule over ``epochs`` and the seeded
    generator of the batches' order and augmentation."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, math.ceil(len(train) / cfg.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=epochs * steps, pct_start=0.2)
    return TrainState(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=torch.Generator().manual_seed(cfg.seed),
        device=device,
        epochs=epochs,
        has_val=val is not None and len(val) > 0,
        forward=model.forward_with_aux,
        world=distributed.world_size(),
    )


@dataclass
class _Loss:
    """Cross-entropy (class-weighted by ``weights``) of the fused logits plus ``aux_weight`` times each
    branch's auxiliary loss, under ``precision``'s autocast."""

    weights: torch.Tensor
    aux_weight: float
    device: torch.device
    precision: str

    def __call__(self, forward, inputs: dict, labels: torch.Tensor, norm: float | None) -> torch.Tensor:
        with autocast(self.device, self.precision):
            logits, aux = forward(layout(inputs))
            loss = _cross_entropy(logits, labels, self.weights, norm)
            for aux_logits in aux.values():
                loss = loss + self.aux_weight * _cross_entropy(aux_logits, labels, self.weights, norm)
        return loss


def _train_epoch(
    state: TrainState, train: Arrays, cfg: TrainConfig, augment: Augment | None, loss: _Loss, hooks
) -> None:
    """One pass over ``train`` in a seeded order (:func:`epoch_order`), one optimiser
    step per batch."""
    state.model.train()
    batch_size = cfg.batch_size
    order = epoch_order(train.labels, cfg.balance, state.generator)
    # Drop a last batch of one (per process): batch norm cannot train on it.
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = [b for b in batches if len(b) >= 2 * state.world] or batches
    spans = [distributed.local_span(len(b)) for b in batches]  # this process's rows of each batch
    state.n_batches, state.loss_sum, state.seen = len(batches), 0.0, 0
    call(hooks, "on_epoch_start", state)
    for k, index in enumerate(batches):
        if k + 1 < len(batches):  # this process's part of the next batch, read while this one trains
            ahead_start, ahead_stop = spans[k + 1]
            train.prefetch(batches[k + 1][ahead_start:ahead_stop])
        state.batch = k
        value = _step(state, train, index, spans[k], augment, loss)
        call(hooks, "on_batch_end", state, value)
        state.loss_sum += value * len(index) / state.world
        state.seen += len(index)


def _step(state: TrainState, train: Arrays, index: torch.Tensor, span, augment: Augment | None, loss: _Loss) -> float:
    """One optimiser step on this process's rows ``span`` of the global batch ``index``;
    its loss."""
    start, stop = span
    part = index[start:stop]
    inputs = train.batch(part, state.device)
    if augment is not None and inputs["image"] is not None:
        inputs["image"] = augment(
            inputs["image"], state.generator, (start, stop, len(index)) if state.world > 1 else None
        )
    labels = train.labels[part].to(state.device)
    # One process: the weighted mean over the batch. Several: each process's weighted
    # sum over the whole global batch's weight, times the world size DDP divides the
    # summed gradients by, so the gradient is the one-process one.
    world = state.world
    norm = float(loss.weights[train.labels[index].to(state.device)].sum()) / world if world > 1 else None
    value = loss(state.forward, inputs, labels, norm)
    state.optimizer.zero_grad(set_to_none=True)
    value.backward()
    state.optimizer.step()
    if state.scheduler.last_epoch < state.scheduler.total_steps - 1:
        state.scheduler.step()
    return float(value.detach())


def _validate(model: nn.Module, val: Arrays, loss: _Loss) -> dict:
    """Validation loss (class-weighted) and macro-F1, predicted by every process."""
    proba = predict_network(model, val, loss.device, loss.precision, gather=True)
    y = val.labels.numpy()
    log_proba = torch.log(torch.from_numpy(proba).clamp_min(1e-12))
    value = F.nll_loss(log_proba, torch.from_numpy(y), weight=loss.weights.cpu().double())
    return {"val_loss": float(value), "val_macro_f1": macro_f1(y, proba.argmax(1))}


def _keep_best(state: TrainState) -> None:
    """Keep the epoch's weights when it is the best so far; count the epochs since."""
    record, best = state.record, state.best
    state.improved = (
        not state.has_val
        or record["val_macro_f1"] > best["f1"]
        or (record["val_macro_f1"] == best["f1"] and record["val_loss"] < best["loss"])
    )
    if state.improved:
        best.update(f1=record.get("val_macro_f1", -1.0), loss=record.get("val_loss", math.inf), epoch=state.epoch)
        best["state"] = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
        state.stale = 0
    else:
        state.stale += 1


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, norm: float | None):
    """Class-weighted cross-entropy: the weighted mean (``norm`` None), or the weighted
    sum divided by ``norm``."""
    if norm is None:
        return F.cross_entropy(logits.float(), labels, weight=weights)
    return F.cross_entropy(logits.float(), labels, weight=weights, reduction="sum") / norm
