"""Training on several processes with PyTorch's own engine (``torchrun`` and
DistributedDataParallel), and the few collective steps the rest of fusion needs.

A job is started by ``torchrun``, which sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in every process; :func:`init_from_env` joins the
process group only when ``WORLD_SIZE`` is above 1, so a plain ``python -m fusion.train``
never touches ``torch.distributed`` and runs exactly as before. Backend: ``nccl`` on
CUDA (one GPU per process, ``cuda:LOCAL_RANK``), ``gloo`` on CPU.

Everything here asks ``torch.distributed`` itself for the rank and the world size:
fusion keeps no process-group state of its own.

What each process does (see :func:`fusion.training.loop.fit_network`):

- every epoch is one seeded permutation of the training rows, the same on every
  process; each global batch (``train.batch_size`` rows, as in one process) is split
  into ``world_size`` contiguous parts, one per process, and the loss is normalised by
  the whole global batch, so the averaged gradient is the one-process gradient;
- BatchNorm: ``SyncBatchNorm`` on CUDA, where torch supports it (statistics over the
  global batch); on CPU (gloo) each process normalises with its own part's statistics
  and the running statistics are rank 0's (DDP broadcasts buffers every step);
- validation and test predictions are sharded by rows and gathered on every process,
  so every process sees the same figures and takes the same early-stopping decision;
- only rank 0 writes files (the run folder, checkpoints, metrics, plots, progress).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

T = TypeVar("T")


# ---------------------------------------------------------------- process group
def env_world_size() -> int:
    """``WORLD_SIZE`` as ``torchrun`` sets it (1 when absent).

    Raises
    ------
    ValueError
        When it is not a positive integer.
    """
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"WORLD_SIZE must be a positive integer (as torchrun sets it); got {raw!r}")
    return value


def init_from_env(device: str = "auto", timeout_s: float = 1800.0) -> bool:
    """Join the process group ``torchrun`` describes in the environment, when
    ``WORLD_SIZE`` > 1; returns whether a group is (now) initialised.

    ``device`` is ``train.device``: ``nccl`` serves CUDA and ``gloo`` the CPU; on CUDA
    each process takes the GPU ``LOCAL_RANK``.
    """
    if env_world_size() == 1:
        return False
    if not torch.distributed.is_available():
        raise ValueError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if torch.distributed.is_initialized():
        return True
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if cuda else "gloo"
    torch.distributed.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    logger.info("joined the %s process group: rank %d of %d", backend, rank(), world_size())
    return True


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if is_distributed():
        torch.distributed.destroy_process_group()


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """Rank 0, the one process that writes files (True without a process group)."""
    return rank() == 0


def backend_name() -> str | None:
    """``gloo`` or ``nccl`` (None without a process group)."""
    return str(torch.distributed.get_backend()) if is_distributed() else None


def local_device(device: torch.device) -> torch.device:
    """This process's device: on CUDA under a process group, its own GPU."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


# ------------------------------------------------------------------ collectives
def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def broadcast_object(value: T | None) -> T:
    """Rank 0's ``value`` on every process (returned unchanged without a group).

    Only in-process messages are pickled here; nothing pickled is ever written."""
    if not is_distributed():
        return value
    box = [value if is_main() else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and give every process its result, or raise its
    error on every process (so a bad ``--out`` stops the whole job, not one rank)."""
    outcome: tuple | None = None
    if is_main():
        try:
            outcome = ("ok", fn())
        except Exception as err:  # re-raised on every rank just below
            outcome = ("error", err)
    outcome = broadcast_object(outcome)
    if outcome[0] == "error":
        raise outcome[1]
    return outcome[1]


def main_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0, then on the other ranks: a cache rank 0 builds is read,
    not built again, by the others. An error on rank 0 is raised on every rank."""
    if not is_distributed():
        return fn()
    result = on_main(lambda: (fn(),))
    return result[0] if is_main() else fn()


def all_gather_objects(value) -> list:
    """Every process's ``value``, in rank order."""
    if not is_distributed():
        return [value]
    out = [None] * world_size()
    torch.distributed.all_gather_object(out, value)
    return out


def all_sum(value: float, device: torch.device) -> float:
    """The sum of ``value`` over processes (float64)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return float(t.item())


def shard(n: int) -> torch.Tensor:
    """The rows ``0..n-1`` this process predicts: ``rank, rank + world, ...``."""
    return torch.arange(rank(), n, world_size())


def gather_rows(part: np.ndarray, n: int) -> np.ndarray:
    """Reassemble the rows each process computed for its :func:`shard` into the full
    array of ``n`` rows, in the original order, on every process."""
    if not is_distributed():
        return part
    parts = all_gather_objects(part)
    out = np.empty((n, *part.shape[1:]), dtype=part.dtype)
    for r, p in enumerate(parts):
        out[r :: len(parts)] = p
    return out


def local_span(n: int) -> tuple[int, int]:
    """Where this process's contiguous part of a global batch of ``n`` rows starts and
    stops (``torch.tensor_split``'s parts: sizes differ by at most one)."""
    world, r = world_size(), rank()
    size, extra = divmod(n, world)
    start = r * size + min(r, extra)
    return start, start + size + (1 if r < extra else 0)


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every process. DDP sends
    them at the start of each forward, so after the last step of an epoch each
    process holds its own update; this makes the evaluated and saved model the same
    everywhere."""
    if not is_distributed():
        return
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer, src=0)


# ----------------------------------------------------------------- the model
class _WithAux(nn.Module):
    """The training forward (fused and auxiliary logits) as a module's ``forward``:
    DistributedDataParallel synchronises gradients only for what runs through it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs):
        return self.model.forward_with_aux(inputs)


def training_forward(model: nn.Module, device: torch.device) -> Callable:
    """What a training step calls: ``model.forward_with_aux`` itself in one process;
    under a process group the same through DistributedDataParallel (which broadcasts
    rank 0's initial weights, so every process starts equal), with SyncBatchNorm where
    torch supports it (CUDA)."""
    if not is_distributed():
        return model.forward_with_aux
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(_WithAux(model), device_ids=ids)


def unwrap_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Turn every ``SyncBatchNorm`` back into a ``BatchNorm2d`` sharing its weights and
    statistics, so the trained model saves, copies and predicts as one trained in one
    process does (SyncBatchNorm's forward needs a process group)."""
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            plain = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine)
            plain.track_running_stats = child.track_running_stats
            if child.affine:
                plain.weight, plain.bias = child.weight, child.bias
            plain.running_mean, plain.running_var = child.running_mean, child.running_var
            plain.num_batches_tracked = child.num_batches_tracked
            plain.train(child.training)
            setattr(module, name, plain)
        else:
            unwrap_sync_batchnorm(child)
    return module
