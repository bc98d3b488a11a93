"""What a training hook sees and when it is called.

:func:`fusion.training.loop.fit_network` is a plain epoch loop; everything around it
(checkpoints, early stopping, progress, the checks for a diverging training, what a
process group adds) is a hook, as MONAI's handlers and Lightning's callbacks are. A
hook is a :class:`Hook` whose methods the loop calls, hook after hook in the order
given, at six points of a training; each method may read and change the
:class:`TrainState`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


def _no_best() -> dict:
    return {"f1": -1.0, "loss": math.inf, "epoch": 0, "state": None}


@dataclass
class TrainState:
    """Everything the loop holds between two steps, shared with every hook.

    ``epoch`` is the epoch under way (the last one completed once ``on_epoch_end``
    runs; the one a resumed run stopped after, during ``on_fit_start``). ``best``:
    the best epoch so far (``f1`` and ``loss`` on validation, ``epoch``, and the
    weights as ``state``); ``stale``: epochs since it; ``improved``: this epoch is the
    new best. ``loss_sum`` and ``seen``: this epoch's training loss summed over its
    rows, and the rows, of this process (of all, once the epoch's training ends).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    device: torch.device
    epochs: int
    has_val: bool
    forward: Callable
    world: int = 1
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=_no_best)
    stale: int = 0
    improved: bool = False
    resumed_from: int | None = None
    batch: int = 0
    n_batches: int = 0
    loss_sum: float = 0.0
    seen: int = 0

    @property
    def record(self) -> dict:
        """The current epoch's line of ``history`` (from ``on_epoch_end`` on)."""
        return self.history[-1]


class Hook:
    """One concern of a training, called at six points of the loop; every method
    does nothing unless a subclass overrides it.

    Examples
    --------
    >>> class StopAtLoss(Hook):
    ...     def on_epoch_end(self, state):
    ...         return state.record["train_loss"] < 0.1
    """

    def on_fit_start(self, state: TrainState) -> bool | None:
        """Before the first epoch (the weights, optimiser and generator are made);
        True when there is nothing left to train (a resumed run that had stopped)."""

    def on_epoch_start(self, state: TrainState) -> None:
        """The epoch's batches are drawn (``state.n_batches``); none is trained yet."""

    def on_batch_end(self, state: TrainState, loss: float) -> None:
        """After the optimiser step of batch ``state.batch``; ``loss``: its loss on this
        process."""

    def on_train_epoch_end(self, state: TrainState) -> None:
        """After the epoch's last batch, before validation."""

    def on_epoch_end(self, state: TrainState) -> bool | None:
        """The epoch's record is complete (``state.record``; validated, best epoch
        kept); True stops the training after it (every hook still sees the epoch)."""

    def on_fit_end(self, state: TrainState) -> None:
        """After the last epoch, the best epoch's weights loaded (not called when a
        hook or a step raised)."""


def call(hooks, event: str, *args) -> bool:
    """Call ``event`` on every hook in order; whether any asked to stop."""
    stop = False
    for hook in hooks:
        stop = bool(getattr(hook, event)(*args)) or stop
    return stop
