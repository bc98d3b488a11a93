"""What training under a torch.distributed process group adds around the loop (see
:mod:`fusion.training.distributed`); nothing in one process."""

from __future__ import annotations

from fusion.training import distributed
from fusion.training.hooks.base import Hook, TrainState


class DistributedSync(Hook):
    """The training step through DistributedDataParallel (with SyncBatchNorm on CUDA),
    each epoch's BatchNorm statistics and training loss gathered from every process,
    and plain BatchNorm back at the end. :func:`~fusion.training.loop.fit_network`
    runs it first, always: without it the processes would each train alone."""

    def on_fit_start(self, state: TrainState) -> None:
        # DDP broadcasts rank 0's weights, so every process starts equal.
        state.forward = distributed.training_forward(state.model, state.device)

    def on_train_epoch_end(self, state: TrainState) -> None:
        if state.world > 1:
            distributed.sync_buffers(state.model)
            state.loss_sum = distributed.all_sum(state.loss_sum, state.device)

    def on_fit_end(self, state: TrainState) -> None:
        distributed.unwrap_sync_batchnorm(state.model)
