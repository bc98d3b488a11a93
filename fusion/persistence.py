"""Saving and loading model folders, with no pickle anywhere.

A model folder holds:

- ``config.json``: the :class:`fusion.config.Config`, classes, modalities, format and
  library version;
- the backend's own files: ``model.safetensors`` (networks), ``xgboost.json`` (the
  XGBoost baseline);
- ``preprocessing.json``: tabular preprocessing state and image size/normalisation;
- ``schema.toml``: the schema the model was trained with, as written;
- ``manifest.json``: the SHA-256 of each of these files.

Loading checks every hash first and reads tensors with safetensors, which cannot carry
code, so a folder whose files were replaced (by a pickle, say) is refused before
anything in it is interpreted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write a file via a temporary name in the same folder, then rename, so a crash
    never leaves half a file: readers see the old version or the new one.

    ``write(tmp_path)`` writes the content to the temporary path.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _json_default(value):
    """What the standard encoder cannot write: numpy scalars and arrays (pandas and
    numpy hand them out as row indices, counts and metrics), paths, sets and tuples."""
    import numpy as np

    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"cannot write a {type(value).__name__} as JSON: {value!r:.80}")


def to_json(data, *, indent: int | None = 2, allow_nan: bool = False) -> str:
    """The one JSON encoding the library writes with: numpy values as Python numbers,
    and NaN or infinity refused (strict JSON readers reject them) rather than written,
    unless ``allow_nan`` (state that only this library reads back, e.g. checkpoints)."""
    return json.dumps(data, indent=indent, allow_nan=allow_nan, default=_json_default)


def write_json(path: str | Path, data) -> None:
    atomic_write_text(path, to_json(data) + "\n")


def save_state_dict(state: dict[str, torch.Tensor], path: str | Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def write_manifest(folder: str | Path, files: list[str], version: str) -> None:
    folder = Path(folder)
    write_json(
        folder / MANIFEST,
        {
            "format_version": FORMAT_VERSION,
            "fusion_version": version,
            "sha256": {f: sha256(folder / f) for f in sorted(files)},
        },
    )


def verify_folder(folder: str | Path) -> dict:
    """Check a model folder against its manifest before anything is read from it.

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    FileNotFoundError
        No folder or no manifest.
    ValueError
        A listed file is missing or its SHA-256 differs (the file was changed or
        replaced), or the format version is newer than this library reads.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {str(folder)!r} does not exist")
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a fusion model folder: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        hashes = dict(manifest["sha256"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a valid manifest ({err})") from None
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{folder}: model format {manifest.get('format_version')} was written by fusion "
            f"{manifest.get('fusion_version')}; this fusion reads format {FORMAT_VERSION}: upgrade fusion"
        )
    for name, expected in hashes.items():
        if Path(name).name != name:
            raise ValueError(f"{path}: lists {name!r}, which is not a file of the folder")
        file = folder / name
        if not file.is_file():
            raise ValueError(f"{folder}: {name} is listed in the manifest but missing")
        actual = sha256(file)
        if actual != expected:
            raise ValueError(
                f"{folder}: {name} does not match its SHA-256 in {MANIFEST} (expected {expected[:12]}..., "
                f"found {actual[:12]}...): the file was changed or replaced after saving; refusing to load it"
            )
    return manifest


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights with safetensors (which holds tensors only, never code)."""
    try:
        state = load_file(str(path))
    except Exception as err:
        raise ValueError(f"{path}: not a valid safetensors file ({err})") from None
    return check_finite(state, path)


def check_finite(state: dict[str, torch.Tensor], origin: str | Path) -> dict[str, torch.Tensor]:
    """Refuse weights that hold NaN or infinity (a training that diverged, a damaged
    or hand-made file): a network built from them answers labels from NaN
    probabilities. Returns ``state``.

    Raises
    ------
    ValueError
        Naming ``origin`` (the file) and the first tensor at fault.
    """
    for name, tensor in state.items():
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        bad = int(tensor.numel() - torch.isfinite(tensor).sum())
        if bad:
            raise ValueError(
                f"{origin}: tensor {name[:60]!r} holds {bad} non-finite value(s) (NaN or infinity) of "
                f"{tensor.numel()}; weights that are not finite cannot answer (did the training diverge?): "
                "retrain the model"
            )
    return state


# The temporary files of interrupted writes: atomic_write's (".<name>.<8 random>.tmp",
# tempfile.mkstemp's alphabet) and safetensors' own (".tmp<6 random>", which it makes in
# the target's folder while it writes).
_TEMPORARY = re.compile(r"\.(?:.+\.[a-z0-9_]{8}\.tmp|tmp[A-Za-z0-9]{6})")


def remove_temporary(folder: str | Path) -> list[Path]:
    """Remove what interrupted writes left in ``folder`` and its immediate subfolders
    (a write that fails removes its own temporary file; a kill -9 or a power cut
    cannot). Meant for folders the library writes alone, such as a run folder; files
    of any other name are left alone. Returns the files removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    places = [folder, *(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())]
    removed = []
    for place in places:
        for path in sorted(place.glob(".*")):
            if _TEMPORARY.fullmatch(path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


_DISK_FULL_TEXT = ("No space left on device", "(os error 28)", "Disk quota exceeded", "(os error 122)")


def is_disk_full(err: BaseException | None) -> bool:
    """Whether ``err``, or an error that caused it, says the disk (or the user's quota)
    is full: an ``OSError`` with ``ENOSPC``/``EDQUOT``, or the text safetensors and
    XGBoost give it (their errors are not ``OSError``)."""
    for _ in range(8):  # a cause chain, bounded
        if err is None:
            return False
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(err) for text in _DISK_FULL_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False
