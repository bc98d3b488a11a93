"""Per-epoch training checkpoints, so a killed run resumes where it stopped.

One checkpoint is one safetensors file: every tensor (model, best model, optimiser
moments, RNG states) as a tensor, and every other piece of state (epoch, history,
early-stopping counters, scheduler, optimiser hyper-parameters, the run's fingerprint)
as JSON in the file's metadata. It is written to a temporary name and renamed, so a
kill at any instant leaves either the previous complete checkpoint or the new one,
never half of one; ``progress.json`` is written after it. No pickle is involved, so
a checkpoint cannot carry code either.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fusion.persistence import atomic_write, is_disk_full, to_json, write_json

CHECKPOINT = "checkpoint.safetensors"
PROGRESS = "progress.json"


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            key = f"optimizer.{index}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value
            else:
                scalars[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    folder: str | Path,
    *,
    epoch: int,
    model,
    optimizer,
    scheduler,
    generator: torch.Generator,
    best: dict,
    history: list,
    stale: int,
    fingerprint: dict,
    rank_rng: list[dict] | None = None,
) -> None:
    """Write the state after ``epoch`` atomically, then ``progress.json``.

    ``rank_rng``: under torch.distributed, each process's random states (``torch``,
    ``cuda``) in rank order, so each process resumes its own stream.

    Raises
    ------
    OSError
        ``ENOSPC`` when the disk is full (whatever the writer reported it as); the
        previous epoch's checkpoint is then left whole."""
    folder = Path(folder)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if best.get("state") is not None:
        tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best["state"].items()})
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()})
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    device = next(model.parameters()).device
    if device.type == "cuda":  # dropout and modality dropout draw from the GPU's generator
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    for r, states in enumerate(rank_rng or []):
        tensors.update({f"rng.rank{r}.{k}": v.cpu() for k, v in states.items() if v is not None})
    meta = {
        "epoch": epoch,
        "history": history,
        "stale": stale,
        "best": {k: v for k, v in best.items() if k != "state"},
        "has_best": best.get("state") is not None,
        "scheduler": scheduler.state_dict(),
        "optimizer": opt_meta,
        "fingerprint": fingerprint,
        "world_size": len(rank_rng) if rank_rng else 1,
    }
    try:
        atomic_write(
            folder / CHECKPOINT,
            lambda tmp: save_file(tensors, str(tmp), metadata={"fusion": to_json(meta, indent=None, allow_nan=True)}),
        )
        write_json(
            folder / PROGRESS,
            {"epoch": epoch, "complete": False, "best_epoch": best.get("epoch"), "history": history[-1:]},
        )
    except Exception as err:
        if not is_disk_full(err):
            raise
        raise OSError(
            errno.ENOSPC, f"no space left on device writing the checkpoint of epoch {epoch} in {folder}", str(folder)
        ) from err


def read_progress(folder: str | Path) -> dict | None:
    path = Path(folder) / PROGRESS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def load_checkpoint(folder: str | Path, fingerprint: dict, world_size: int = 1) -> dict:
    """Read a checkpoint and check that it belongs to this run (of ``world_size``
    processes).

    Raises
    ------
    FileNotFoundError
        No checkpoint in ``folder``.
    ValueError
        The checkpoint is unreadable, was made with another configuration or other
        data (the message lists what differs), or by another number of processes.
    """
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from in {str(folder)!r} (expected {CHECKPOINT})")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads(fh.metadata()["fusion"])
    except Exception as err:
        raise ValueError(f"{path}: unreadable checkpoint ({err})") from None
    saved_world, world = meta.get("world_size", 1), world_size
    if saved_world != world:
        raise ValueError(
            f"cannot resume {str(folder)!r}: the checkpoint was made by {saved_world} process(es) "
            f"(WORLD_SIZE {saved_world}) and this job has {world}. Each process resumes its own random "
            "stream, and on CPU its own BatchNorm statistics of its part of every batch, so another number "
            "of processes would not continue the same run; resume with the same number of processes, "
            "or start a new run in another folder."
        )
    differ = describe_differences(meta["fingerprint"], fingerprint)
    if differ:
        raise ValueError(
            f"cannot resume {str(folder)!r}: the checkpoint was made with a different "
            f"configuration or data ({'; '.join(differ)}). Rerun with the original settings, "
            "or start a new run in another folder."
        )
    meta["model"] = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    meta["best"]["state"] = (
        {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")} if meta["has_best"] else None
    )
    meta["optimizer_state"] = _unflatten_optimizer(tensors, meta["optimizer"])
    meta["rng"] = {
        "generator": tensors["rng.generator"],
        "torch": tensors["rng.torch"],
        "cuda": tensors.get("rng.cuda"),
        "ranks": [
            {"torch": tensors[f"rng.rank{r}.torch"], "cuda": tensors.get(f"rng.rank{r}.cuda")}
            for r in range(meta.get("world_size", 1))
            if f"rng.rank{r}.torch" in tensors
        ],
    }
    return meta


def describe_differences(saved, current, prefix: str = "") -> list[str]:
    """Human-readable list of the keys whose values differ between two JSON trees."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            out += describe_differences(saved.get(key), current.get(key), f"{prefix}{key}.")
        return out
    if saved != current:
        return [f"{prefix.rstrip('.')}: checkpoint {saved!r}, now {current!r}"]
    return []


def mark_complete(folder: str | Path) -> None:
    """The run finished: the checkpoint is no longer needed (the model is saved).

    ``progress.json`` says "complete" before the checkpoint is deleted: an interrupt
    between the two leaves a complete run with a stale checkpoint (harmless, and
    removed here on the next call), never an incomplete run without the checkpoint
    that resuming would need.
    """
    folder = Path(folder)
    progress = read_progress(folder) or {}
    if not progress.get("complete"):
        write_json(folder / PROGRESS, {**progress, "complete": True})
    (folder / CHECKPOINT).unlink(missing_ok=True)
