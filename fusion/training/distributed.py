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
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from fusion.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")


# ---------------------------------------------------------------- process group
RENDEZVOUS_TIMEOUT_ENV = "FUSION_RENDEZVOUS_TIMEOUT"
DEFAULT_RENDEZVOUS_S = 300.0
MAX_RENDEZVOUS_S = 86_400.0
_WHOLE = re.compile(r"[0-9]{1,9}", re.ASCII)  # torchrun writes plain digits; int() also takes "٢" and "1_0"
_HOST = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?", re.ASCII)
_STILL_WAITING_S = 5.0  # after this, each process says what it still waits for (a warning, shown without --verbose)


def _cut(value: str) -> str:
    from fusion.schema import short_repr

    return short_repr(value)


def _env_int(environ, name: str, low: int, high: int, accepted: str, default: int | None = None) -> int | None:
    raw = environ.get(name)
    if raw is None:
        return default
    value = int(raw) if _WHOLE.fullmatch(raw) else -1
    if not low <= value <= high:
        raise ConfigError(
            f"{name} must be {accepted} (as torchrun sets it); got {_cut(raw)}",
            field=name,
            value=raw,
            accepted=accepted,
        )
    return value


@dataclass(frozen=True)
class DistributedEnv:
    """The process group ``torchrun`` describes in the environment, checked whole
    before anything waits on it: each variable a plain integer in its range (``RANK <
    WORLD_SIZE``, ``LOCAL_RANK < LOCAL_WORLD_SIZE <= WORLD_SIZE``), ``MASTER_ADDR`` a
    host name or IP address, ``MASTER_PORT`` a port, and
    ``FUSION_RENDEZVOUS_TIMEOUT`` (seconds, default 300) how long the processes wait
    for each other before the job fails with a sentence. ``MASTER_*`` are read only
    for more than one process.
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    rendezvous_s: float = DEFAULT_RENDEZVOUS_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DistributedEnv:
        """Read and check the variables.

        Raises
        ------
        ValueError
            Naming the variable, its value and what is accepted.
        """
        env = os.environ if environ is None else environ
        world = _env_int(env, "WORLD_SIZE", 1, 10**6, "a positive integer", default=1)
        if world > 1 and "RANK" not in env:
            raise ConfigError(
                f"RANK is not set but WORLD_SIZE is {world}: start the processes with torchrun",
                field="RANK",
                related=("WORLD_SIZE",),
            )
        rank = _env_int(env, "RANK", 0, 10**6, "a whole number of at least 0", default=0)
        if rank >= world:
            raise ConfigError(
                f"RANK {rank} is not below WORLD_SIZE {world}: ranks run from 0 to {world - 1}",
                field="RANK",
                related=("WORLD_SIZE",),
                value=rank,
                accepted=f"0 to {world - 1}",
            )
        local_world = _env_int(env, "LOCAL_WORLD_SIZE", 1, 10**6, "a positive integer", default=world)
        if local_world > world:
            raise ConfigError(
                f"LOCAL_WORLD_SIZE {local_world} is above WORLD_SIZE {world}",
                field="LOCAL_WORLD_SIZE",
                related=("WORLD_SIZE",),
                value=local_world,
                accepted=f"at most {world}",
            )
        local_rank = _env_int(env, "LOCAL_RANK", 0, 10**6, "a whole number of at least 0", default=0)
        bound = "LOCAL_WORLD_SIZE" if "LOCAL_WORLD_SIZE" in env else "WORLD_SIZE"
        if local_rank >= local_world:
            raise ConfigError(
                f"LOCAL_RANK {local_rank} is not below {bound} {local_world}",
                field="LOCAL_RANK",
                related=(bound,),
                value=local_rank,
                accepted=f"0 to {local_world - 1}",
            )
        if world == 1:
            return cls(rank=rank, local_rank=local_rank)
        return cls(world, rank, local_rank, _master_addr(env), _master_port(env), _rendezvous_s(env))

    @property
    def where(self) -> str:
        return f"{self.master_addr}:{self.master_port}"


def _master_addr(env: Mapping[str, str]) -> str:
    import ipaddress

    if "MASTER_ADDR" not in env:
        raise ConfigError(
            "MASTER_ADDR is not set: the address of the process of RANK 0 (torchrun sets it)", field="MASTER_ADDR"
        )
    addr = env["MASTER_ADDR"]
    try:
        ipaddress.ip_address(addr)
        return addr
    except ValueError:
        if _HOST.fullmatch(addr):
            return addr
    raise ConfigError(
        f"MASTER_ADDR must be a host name or IP address (as torchrun sets it); got {_cut(addr)}",
        field="MASTER_ADDR",
        value=addr,
        accepted="a host name or IP address",
    )


def _master_port(env: Mapping[str, str]) -> int:
    if "MASTER_PORT" not in env:
        raise ConfigError(
            "MASTER_PORT is not set: the port the process of RANK 0 listens on (torchrun sets it)", field="MASTER_PORT"
        )
    return _env_int(env, "MASTER_PORT", 1, 65535, "a port number from 1 to 65535")


def _rendezvous_s(env: Mapping[str, str]) -> float:
    from fusion.schema import DECIMAL

    raw = env.get(RENDEZVOUS_TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_RENDEZVOUS_S
    value = float(raw.strip()) if DECIMAL.fullmatch(raw.strip()) else math.nan
    if not 0 < value <= MAX_RENDEZVOUS_S:
        accepted = f"a number of seconds above 0 and at most {MAX_RENDEZVOUS_S:g}"
        raise ConfigError(
            f"{RENDEZVOUS_TIMEOUT_ENV} must be {accepted} (how long the processes wait for each other); "
            f"got {_cut(raw)}",
            field=RENDEZVOUS_TIMEOUT_ENV,
            value=raw,
            accepted=accepted,
        )
    return value


def env_world_size() -> int:
    """``WORLD_SIZE`` as ``torchrun`` sets it (1 when absent).

    Raises
    ------
    ValueError
        When it, or another variable of the process group, is not valid (see
        :class:`DistributedEnv`).
    """
    return DistributedEnv.from_env().world_size


def init_from_env(device: str = "auto", timeout_s: float = 1800.0) -> bool:
    """Join the process group ``torchrun`` describes in the environment, when
    ``WORLD_SIZE`` > 1; returns whether a group is (now) initialised.

    ``device`` is ``train.device``: ``nccl`` serves CUDA and ``gloo`` the CPU; on CUDA
    each process takes the GPU ``LOCAL_RANK``. The processes first wait for each other
    at ``MASTER_ADDR:MASTER_PORT`` for ``FUSION_RENDEZVOUS_TIMEOUT`` seconds (default
    300), saying what they wait for; ``timeout_s`` bounds each collective step after.

    Raises
    ------
    ValueError
        A variable of the environment is not valid (named, with its value), or not every
        process joined in time (how many did, where, and what to do).
    """
    env = DistributedEnv.from_env()
    if env.world_size == 1:
        return False
    if not torch.distributed.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed", field="WORLD_SIZE")
    if torch.distributed.is_initialized():
        return True
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        count = torch.cuda.device_count()
        if env.local_rank >= count:
            raise ConfigError(
                f"LOCAL_RANK {env.local_rank} names GPU cuda:{env.local_rank}, but this machine has {count}: "
                f"start at most {count} process(es) per machine",
                field="LOCAL_RANK",
                value=env.local_rank,
                accepted=f"0 to {count - 1}",
            )
        torch.cuda.set_device(env.local_rank)
    backend = "nccl" if cuda else "gloo"
    store = _rendezvous(env)
    store.set_timeout(timedelta(seconds=timeout_s))
    torch.distributed.init_process_group(
        backend=backend, store=store, rank=env.rank, world_size=env.world_size, timeout=timedelta(seconds=timeout_s)
    )
    logger.info("joined the %s process group: rank %d of %d", backend, rank(), world_size())
    return True


def _rendezvous(env: DistributedEnv):
    """The job's key-value store, once every process has reached it (rank 0 serves it,
    unless torchrun's agent already does); fails with a sentence after
    ``env.rendezvous_s`` seconds."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    serves = env.rank == 0 and not agent
    who = f"rank {env.rank} of {env.world_size}"
    logger.info("%s: waiting for the other processes at %s (up to %g s)", who, env.where, env.rendezvous_s)
    deadline = time.monotonic() + env.rendezvous_s
    try:
        store = torch.distributed.TCPStore(
            env.master_addr,
            env.master_port,
            env.world_size,
            is_master=serves,
            timeout=timedelta(seconds=env.rendezvous_s),
            wait_for_workers=False,
            multi_tenant=serves,
        )
    except (RuntimeError, torch.distributed.DistError) as err:
        raise ValueError(_store_failure(env, serves, err)) from None
    # One key per torchrun restart: its agent's store outlives a failed attempt.
    key = f"fusion/joined/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    joined = store.add(key, 1)
    said = time.monotonic()
    while joined < env.world_size:
        now = time.monotonic()
        if now >= deadline:
            raise ConfigError(
                f"only {joined} of {env.world_size} processes (WORLD_SIZE) reached {env.where} within "
                f"{env.rendezvous_s:g} s ({RENDEZVOUS_TIMEOUT_ENV}): start every process of the job "
                "(torchrun --nproc_per_node=N starts them all) or set WORLD_SIZE to the number started",
                field="WORLD_SIZE",
                related=(RENDEZVOUS_TIMEOUT_ENV,),
                value=env.world_size,
            )
        if now - said >= _STILL_WAITING_S:
            missing = env.world_size - joined
            logger.warning(
                "%s: waiting for %d more process(es) at %s (%.0f s left)", who, missing, env.where, deadline - now
            )
            said = now
        time.sleep(0.05)
        joined = store.add(key, 0)
    return store


def _store_failure(env: DistributedEnv, serves: bool, err: Exception) -> str:
    """Why the store could not be served or reached, as a sentence."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if serves:
        return (
            f"rank 0 could not listen at {env.where} (MASTER_ADDR, MASTER_PORT): {_cut(reason)}; "
            "choose a free port on this machine"
        )
    return (
        f"rank {env.rank} of {env.world_size}: no process of rank 0 answered at {env.where} within "
        f"{env.rendezvous_s:g} s ({RENDEZVOUS_TIMEOUT_ENV}): start every process of the job (torchrun does) "
        "and check MASTER_ADDR and MASTER_PORT"
    )


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
        return torch.device("cuda", DistributedEnv.from_env().local_rank)
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
