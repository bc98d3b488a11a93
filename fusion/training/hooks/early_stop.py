"""Early stopping on validation macro-F1."""

from __future__ import annotations

import logging

from fusion.training.hooks.base import Hook, TrainState

logger = logging.getLogger(__name__)


class EarlyStopping(Hook):
    """Stop when validation macro-F1 has not improved for ``patience`` epochs (the
    loop keeps the best epoch; ``state.stale`` counts the epochs since it).

    It waits for the second half of the planned epochs: under the one-cycle schedule
    the first epochs run at a high learning rate, and validation scores there are
    noisy and not yet the model's best. Without validation it never stops.
    """

    def __init__(self, patience: int):
        self.patience = patience

    def on_fit_start(self, state: TrainState) -> bool:
        return self._due(state)  # a resumed run that had already stopped early

    def on_epoch_end(self, state: TrainState) -> bool:
        if not self._due(state):
            return False
        logger.info("early stop: no val macro-F1 gain for %d epochs; best epoch %d", self.patience, state.best["epoch"])
        return True

    def _due(self, state: TrainState) -> bool:
        return state.has_val and state.stale >= self.patience and state.epoch > state.epochs // 2
