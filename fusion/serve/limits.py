"""The service's limits, declared once: defaults, bounds and their checks.

Imported by the command line before anything heavy (its ``--help`` states them), by
:func:`fusion.serve.app.create_app` and by :mod:`fusion.serve.server`.
"""

from __future__ import annotations

import math
from typing import Any

# A 16-bit DICOM of 4,300 x 4,300 px is about 37 MB; PNG and JPEG films are far less.
DEFAULT_MAX_BODY = 64 * 2**20
# Bodies are held in memory: no more than this, whatever the operator asks.
MAX_BODY_LIMIT = 1024 * 2**20
# A body must arrive whole within this many seconds of its first byte being read:
# 64 MB at about 2 MB/s. A slower link needs a longer deadline.
DEFAULT_BODY_TIMEOUT = 30.0
# A request's line and headers (a few hundred bytes) within this many seconds.
DEFAULT_HEADER_TIMEOUT = 10.0
MAX_TIMEOUT = 3600.0
# Requests with a body read or computed at once, by default: twice the inference
# threads (one computing while the next is read), at least this many.
MIN_CONCURRENT = 8
# ... and at most this many, whatever the operator asks (each may hold a body).
MAX_CONCURRENT = 500
# The names of this machine: always answered (no DNS rebinding can make a browser
# send them for another site).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def check_count(name: str, value: Any, *, high: int | None = None) -> int:
    """``value`` as a positive integer (at most ``high``); ``name`` is named when it is not."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__}")
    if value < 1 or (high is not None and value > high):
        accepted = f"an integer in [1, {high}]" if high is not None else "at least 1"
        raise ValueError(f"{name} must be {accepted}; got {value}")
    return value


def check_seconds(name: str, value: Any) -> float:
    """``value`` as a deadline in seconds, in (0, 3600]; ``name`` is named when it is not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds; got {type(value).__name__}")
    if not (0 < value <= MAX_TIMEOUT and math.isfinite(value)):  # also refuses NaN
        raise ValueError(f"{name} must be a number of seconds in (0, {MAX_TIMEOUT:g}]; got {value}")
    return float(value)
