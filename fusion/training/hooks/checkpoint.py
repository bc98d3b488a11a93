"""Per-epoch checkpoints of the whole training state, and resuming from them (the file
format is :mod:`fusion.training.checkpoint`'s)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fusion.training import distributed
from fusion.training.checkpoint import load_checkpoint, save_checkpoint
from fusion.training.hooks.base import Hook, TrainState

logger = logging.getLogger(__name__)


class Checkpointing(Hook):
    """Save the training state in ``folder`` after every epoch (rank 0 writes it) and,
    with ``resume``, continue from the last saved epoch.

    ``fingerprint`` (configuration and data, JSON) is saved with every checkpoint, and
    a resume is refused unless it matches. Under a process group each process's random
    state is saved too, so each resumes its own stream; rank 0 reads the checkpoint
    and sends it, so the other processes (other nodes, perhaps) need not see the
    folder.

    Raises
    ------
    FileNotFoundError
        On resume, when ``folder`` holds no checkpoint.
    ValueError
        On resume, when the checkpoint is unreadable or another run's (configuration,
        data or number of processes).
    OSError
        ``ENOSPC`` when the disk fills while a checkpoint is written.
    """

    def __init__(self, folder: str | Path, fingerprint: dict | None = None, *, resume: bool = False):
        self.folder = Path(folder)
        self.fingerprint = fingerprint or {}
        self.resume = resume

    def on_fit_start(self, state: TrainState) -> None:
        if self.resume:
            saved = distributed.on_main(lambda: load_checkpoint(self.folder, self.fingerprint, state.world))
            _restore(state, saved)
            logger.info("resuming after epoch %d (best so far: epoch %d)", state.epoch, state.best["epoch"])

    def on_epoch_end(self, state: TrainState) -> None:
        rank_rng = _rank_rng(state.device) if state.world > 1 else None  # a collective step: every rank
        if not distributed.is_main():
            return
        save_checkpoint(
            self.folder,
            epoch=state.epoch,
            model=state.model,
            optimizer=state.optimizer,
            scheduler=state.scheduler,
            generator=state.generator,
            best=state.best,
            history=state.history,
            stale=state.stale,
            fingerprint=self.fingerprint,
            rank_rng=rank_rng,
        )


def _restore(state: TrainState, saved: dict) -> None:
    """Put a loaded checkpoint back into the loop's state (this process's random stream)."""
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer_state"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.generator.set_state(saved["rng"]["generator"])
    own = saved["rng"]["ranks"][distributed.rank()] if saved["rng"].get("ranks") else saved["rng"]
    torch.set_rng_state(own["torch"])
    if state.device.type == "cuda" and own["cuda"] is not None:
        torch.cuda.set_rng_state(own["cuda"], state.device)
    state.best = {**saved["best"], "state": saved["best"]["state"]}
    state.history, state.stale = saved["history"], saved["stale"]
    state.epoch = state.resumed_from = saved["epoch"]


def _rank_rng(device: torch.device) -> list[dict]:
    """Every process's torch random state (dropout draws from it), for the checkpoint."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return distributed.all_gather_objects({"torch": torch.get_rng_state(), "cuda": cuda})
