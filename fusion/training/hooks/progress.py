"""What a person watching a training sees: a progress bar over each epoch's batches,
and one line per epoch in the ``fusion`` logger."""

from __future__ import annotations

import logging
import sys

from fusion.training.hooks.base import Hook, TrainState

logger = logging.getLogger(__name__)


class Progress(Hook):
    """One log line per epoch (losses, validation macro-F1, seconds, ``*`` on a new
    best epoch); with ``bar``, a tqdm bar over the batches when stderr is a terminal."""

    def __init__(self, bar: bool = False):
        self.bar = bar
        self._bar = None

    def on_epoch_start(self, state: TrainState) -> None:
        if self.bar:
            from tqdm.auto import tqdm

            desc = f"epoch {state.epoch}/{state.epochs}"
            self._bar = tqdm(
                total=state.n_batches, desc=desc, leave=False, disable=not sys.stderr.isatty(), unit="batch"
            )

    def on_batch_end(self, state: TrainState, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def on_epoch_end(self, state: TrainState) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        record = state.record
        val = f"  val loss {record['val_loss']:.4f}  val macro-F1 {record['val_macro_f1']:.3f}" if state.has_val else ""
        logger.info(
            "epoch %3d/%d  train loss %.4f%s  %.1fs%s",
            state.epoch,
            state.epochs,
            record["train_loss"],
            val,
            record["seconds"],
            " *" if state.improved else "",
        )
