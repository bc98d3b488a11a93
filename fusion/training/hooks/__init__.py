"""Hooks of the training loop (:func:`fusion.training.loop.fit_network`): one class per
concern, each in its own module.

====================  ==================================================================
:class:`Hook`          the protocol: ``on_fit_start``, ``on_epoch_start``,
                       ``on_batch_end``, ``on_train_epoch_end``, ``on_epoch_end`` (may
                       stop the training), ``on_fit_end``; and :class:`TrainState`
DistributedSync        what a process group adds (always run, first)
DivergenceCheck        a loss, weight or validation loss not finite stops the training
Checkpointing          the training state saved after every epoch; resume
Progress               a progress bar and one log line per epoch
EarlyStopping          stop when validation macro-F1 stalls
====================  ==================================================================
"""

from __future__ import annotations

from pathlib import Path

from fusion.config import TrainConfig
from fusion.training.hooks.base import Hook, TrainState
from fusion.training.hooks.checkpoint import Checkpointing
from fusion.training.hooks.distributed import DistributedSync
from fusion.training.hooks.divergence import DivergenceCheck
from fusion.training.hooks.early_stop import EarlyStopping
from fusion.training.hooks.progress import Progress

__all__ = [
    "Checkpointing",
    "DistributedSync",
    "DivergenceCheck",
    "EarlyStopping",
    "Hook",
    "Progress",
    "TrainState",
    "standard_hooks",
]


def standard_hooks(
    cfg: TrainConfig,
    *,
    verbose: bool = False,
    checkpoint_dir: str | Path | None = None,
    fingerprint: dict | None = None,
    resume: bool = False,
) -> list[Hook]:
    """The hooks a network trains with, in the order they run: the divergence check
    (first, so no checkpoint of NaN weights is written), checkpoints in
    ``checkpoint_dir`` (with ``resume``, from its last epoch; ``fingerprint``: what a
    resumed checkpoint must match), progress (a bar when ``verbose``) and early stopping
    after ``cfg.patience`` epochs without gain.

    Raises
    ------
    ValueError
        ``resume`` without a ``checkpoint_dir`` to resume from.
    """
    if resume and checkpoint_dir is None:
        raise ValueError("resume needs checkpoint_dir, the folder of the checkpoint to continue from")
    hooks: list[Hook] = [DivergenceCheck(cfg.lr)]
    if checkpoint_dir is not None:
        hooks.append(Checkpointing(checkpoint_dir, fingerprint, resume=resume))
    return [*hooks, Progress(bar=verbose), EarlyStopping(cfg.patience)]
