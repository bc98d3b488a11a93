"""A cache of decoded images, so each X-ray is decoded and resized once, not every run.

Decoding a large PNG or JPEG costs milliseconds; reading the same picture, already at
model size, from a memory-mapped uint8 array costs microseconds. A dataset's decoded
images are stored as one ``.npy`` array per (file list, image size), keyed by every
file's path, modification time and size, so a changed or replaced file changes the
key and is decoded afresh. Entries live in a user cache folder (the loaders' ``cache_dir``,
``$FUSION_CACHE_DIR``, or ``$XDG_CACHE_HOME/fusion``, default ``~/.cache/fusion``),
never beside the data, which may be read-only. Writes are atomic
(:func:`fusion.persistence.atomic_write`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fusion.persistence import atomic_write, to_json

CACHE_VERSION = 2  # 2: JPEGs decoded in full (no DCT-scaled draft), EXIF orientation applied
# Arrays above this size are memory-mapped instead of read into memory.
MMAP_BYTES = 256 * 1024 * 1024


def default_cache_dir() -> Path:
    if os.environ.get("FUSION_CACHE_DIR"):
        return Path(os.environ["FUSION_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fusion"


def _key(files: list[Path], size: int) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{size}".encode())
    for path in files:
        try:
            st = path.stat()
            digest.update(f"|{path.resolve()}|{st.st_mtime_ns}|{st.st_size}".encode())
        except OSError:
            digest.update(f"|{path}|absent".encode())
    return digest.hexdigest()[:32]


def _save_array(path: Path, array: np.ndarray) -> None:
    # Through a file object: np.save would append ".npy" to the temporary name.
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def cached_images(
    files: list[Path], size: int, decode: Callable[[Path], np.ndarray], cache_dir: str | Path | None
) -> tuple[np.ndarray, dict[int, str]]:
    """Decoded images of ``files`` at ``size``, from the cache when it is current.

    Parameters
    ----------
    files : list of Path
    size : int
    decode : callable
        ``decode(path) -> uint8 (size, size)``; raises ``ValueError`` for a bad file.
    cache_dir : str, Path or None
        Cache folder; ``None`` disables caching.

    Returns
    -------
    images : numpy.ndarray of uint8, shape (n, size, size)
        Rows of files that failed to decode are zeros.
    errors : dict of int -> str
        Index of each file that failed, with the reason (failures are cached too, and
        redone when the file changes).
    """
    if cache_dir is not None:
        folder = Path(cache_dir)
        key = _key(files, size)
        array_path, meta_path = folder / f"images-{key}.npy", folder / f"images-{key}.json"
        if array_path.is_file() and meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                mmap = "r" if array_path.stat().st_size > MMAP_BYTES else None
                images = np.load(array_path, mmap_mode=mmap, allow_pickle=False)
                if images.shape == (len(files), size, size) and meta.get("n") == len(files):
                    return images, {int(k): v for k, v in meta["errors"].items()}
            except (OSError, ValueError, KeyError):
                pass  # a damaged entry is rebuilt below
    images = np.zeros((len(files), size, size), dtype=np.uint8)
    errors: dict[int, str] = {}
    for i, path in enumerate(files):
        try:
            images[i] = decode(path)
        except ValueError as err:
            errors[i] = str(err)
    if cache_dir is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(array_path, lambda p: _save_array(p, images))
            atomic_write(
                meta_path,
                lambda p: p.write_text(to_json({"n": len(files), "size": size, "errors": errors}), encoding="utf-8"),
            )
        except OSError:
            pass  # an unwritable cache only costs speed
    return images, errors
