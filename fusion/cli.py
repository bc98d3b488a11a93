"""What the command-line entry points share: where their output may go.

Every output a command writes is checked before anything is written: it must not be
one of the command's inputs, must not replace an existing file, and its folder must
exist. Each command then says exactly which path it wrote. A command that cannot write
its output prints its answer first and then the error, so the answer is never lost.
"""

from __future__ import annotations

import os
from pathlib import Path


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def output_file(value: str, flag: str, *, inputs: list[str | Path | None] = (), suffix: str | None = None) -> Path:
    """Check the file a command is asked to write to.

    Parameters
    ----------
    value : str
        The path given on the command line.
    flag : str
        The option that gave it (named in errors).
    inputs : list of paths
        The command's inputs (files or folders); the output may be none of them.
    suffix : str, optional
        Required file suffix, e.g. ".png" (a figure written under another name would be
        a PNG with a misleading name, and ``DIR`` would silently become ``DIR.png``).

    Returns
    -------
    Path
        The path to write, exactly as it will be written.

    Raises
    ------
    ValueError
        The path is an input or inside an input folder, is an existing file or folder,
        lacks the suffix, or its folder does not exist or is not writable.
    """
    path = Path(value)
    for item in inputs:
        if item is None:
            continue
        item = Path(item)
        if _same(path, item):
            raise ValueError(f"{flag} {value!r}: that is an input of this command ({item}); outputs never replace inputs")
    if path.is_dir():
        raise ValueError(f"{flag} {value!r} is a folder; give a file name (e.g. {path / ('out' + (suffix or '.json'))})")
    if suffix and path.suffix.lower() != suffix:
        raise ValueError(f"{flag} {value!r}: must be a file name ending in {suffix}")
    if path.exists():
        raise ValueError(f"{flag} {value!r} already exists; outputs never replace a file: choose a new name or remove it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{flag} {value!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {value!r}: folder {str(folder)!r} is not writable")
    return path
