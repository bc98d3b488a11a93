"""A process-wide setting that makes repeated forward passes cheaper on Linux."""

from __future__ import annotations


def tune_allocator() -> bool:
    """Raise glibc malloc's mmap and trim thresholds for this process.

    By default glibc returns freed blocks of a few hundred kB to the OS at once, so
    every forward pass maps and unmaps (and page-faults) its activations again; with
    32 MiB / 1 GiB thresholds they are reused (docs/performance.md gives
    the effect). The command-line tools call this; library users may call it once at
    start-up. It changes process-wide allocator settings, which is why importing fusion
    never does it.

    Returns
    -------
    bool
        Whether the settings were applied (False where the C library is not glibc).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)) and bool(mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024))
