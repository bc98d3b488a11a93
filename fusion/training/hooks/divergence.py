"""Stop a training that diverged before a checkpoint of NaN weights is written."""

from __future__ import annotations

import math

import torch
from torch import nn

from fusion.errors import ConfigError
from fusion.training import distributed
from fusion.training.hooks.base import Hook, TrainState


class DivergenceCheck(Hook):
    """Stop at once, with a sentence naming where and the setting to change, when a
    batch's loss, a weight (or BatchNorm statistic) after an epoch, or the validation
    loss is not finite. Under a process group the batch's losses are summed over the
    processes first, so every process stops at the same batch (one alone would leave
    the others waiting in the next gradient exchange).

    Raises
    ------
    ValueError
        From each method, when the value it checks is NaN or infinite.
    """

    def __init__(self, lr: float):
        self.lr = lr

    def on_batch_end(self, state: TrainState, loss: float) -> None:
        checked = distributed.all_sum(loss, state.device) if state.world > 1 else loss
        check_finite(checked, "the loss", state.epoch, self.lr, (state.batch, state.n_batches))

    def on_train_epoch_end(self, state: TrainState) -> None:
        check_finite(_worst_weight(state.model), "a weight", state.epoch, self.lr)

    def on_epoch_end(self, state: TrainState) -> None:
        if "val_loss" in state.record:
            check_finite(state.record["val_loss"], "the validation loss", state.epoch, self.lr)


def check_finite(value: float, what: str, epoch: int, lr: float, batch: tuple[int, int] | None = None) -> None:
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
    raise ConfigError(
        f"training diverged: {what} became {kind} at epoch {epoch}{where}; lower the learning rate "
        f"(train.lr, now {lr:g})",
        field="train.lr",
        value=lr,
        accepted=f"a learning rate below {lr:g}",
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
