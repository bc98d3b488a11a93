"""What the command-line entry points share: where their output may go.

Every output a command writes is checked before anything is written: it must not be
one of the command's inputs, must not replace an existing file, and its folder must
exist. Each command then says exactly which path it wrote. A command that cannot write
its output prints its answer first and then the error, so the answer is never lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path

# The library names configuration fields in its errors; the commands speak in flags.
FIELD_FLAGS = {
    "modalities": "--modalities",
    "model": "--model",
    "fusion": "--fusion",
    "image.backbone": "--backbone",
    "image.image_size": "--image-size",
    "image.freeze": "--freeze",
    "image.pretrained": "--pretrained",
    "image.weights": "--weights",
    "image.init_from": "--init-from",
    "train.epochs": "--epochs",
    "train.batch_size": "--batch-size",
    "train.lr": "--lr",
    "train.patience": "--patience",
    "train.seed": "--seed",
    "train.device": "--device",
    "train.precision": "--precision",
    "data.synthetic_n": "--synthetic-n",
    "data.schema": "--schema",
    # load_dataset's arguments of the image cache (add_cache_arguments' flags)
    "cache_dir": "--cache-dir",
    "memory_map": "--memory-map",
}
_FIELD = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape(f) for f in sorted(FIELD_FLAGS, key=len, reverse=True)) + r")(?![\w])"
)


def add_cache_arguments(p) -> None:
    """The flags of the decoded-image cache, the same on every command that loads a folder."""
    p.add_argument(
        "--cache-dir",
        help="where decoded images are cached (default: $FUSION_CACHE_DIR or ~/.cache/fusion; 'none' to disable)",
    )
    p.add_argument(
        "--cache-workers",
        type=_positive_int,
        help="processes that decode images while the cache is built (default: one per core from 1,024 films)",
    )
    p.add_argument(
        "--memory-map",
        choices=("auto", "always", "never"),
        default="auto",
        help="read cached images batch by batch from disk instead of holding them in memory "
        "(auto: when they take more than 256 MB)",
    )


def cache_options(args) -> dict:
    """Keyword arguments of :func:`fusion.data.loaders.load_dataset` from those flags."""
    return {
        "cache_dir": False if args.cache_dir == "none" else args.cache_dir,
        "cache_workers": args.cache_workers,
        "memory_map": {"auto": None, "always": True, "never": False}[args.memory_map],
    }


def _positive_int(value: str) -> int:
    import argparse

    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1; got {value!r}")
    return number


def in_flags(message: str) -> str:
    """A library error as a command-line user reads it: the flags that set the
    configuration fields it names are added at its end, ``... (flag: --epochs)``."""
    flags = list(dict.fromkeys(FIELD_FLAGS[m] for m in _FIELD.findall(message)))
    if not flags:
        return message
    return f"{message} ({'flag' if len(flags) == 1 else 'flags'}: {', '.join(flags)})"


def fail(err: BaseException) -> int:
    """Print a library error for a command-line user; the exit code of a bad request."""
    print(f"error: {in_flags(str(err))}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def log_to_terminal(verbose: bool):
    """Show the library's progress lines (the ``fusion`` logger) on stdout, plainly;
    warnings and above always. The logger is restored when the command returns, so a
    command run in-process (``main([...])`` from a script or a test) leaves no global
    state behind: records propagate to the caller's handlers again afterwards."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("fusion")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers[:], level, logger.propagate = saved[0], saved[1], saved[2]
        logger.setLevel(level)


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
            raise ValueError(
                f"{flag} {value!r}: that is an input of this command ({item}); outputs never replace inputs"
            )
    if path.is_dir():
        raise ValueError(
            f"{flag} {value!r} is a folder; give a file name (e.g. {path / ('out' + (suffix or '.json'))})"
        )
    if suffix and path.suffix.lower() != suffix:
        raise ValueError(f"{flag} {value!r}: must be a file name ending in {suffix}")
    if path.exists():
        raise ValueError(
            f"{flag} {value!r} already exists; outputs never replace a file: choose a new name or remove it"
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{flag} {value!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {value!r}: folder {str(folder)!r} is not writable")
    return path
