"""What a raw value of a record is: missing or not, a plain decimal or not, and how an
error message shows it (cut to a readable length)."""

from __future__ import annotations

import math
import numbers
import re
import sys
from typing import Any

import numpy as np

# Strings that mean "no value" in CSV exports. Anything else that does not parse is an
# error, so a typo never silently becomes a missing value.
MISSING_STRINGS = frozenset({"", "na", "n/a", "nan", "none", "null"})
# What may surround a number or a missing-value word: ASCII spaces and tabs. str.strip()
# would also take non-breaking, thin and ideographic spaces (pasted from a document),
# which the input contract's ASCII decimals exclude (docs/contracts.md).
ASCII_SPACE = " \t"


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, np.floating) and np.isnan(value):
        return True
    pandas = sys.modules.get("pandas")  # pandas' own missing values exist only once it is imported
    if pandas is not None and (value is pandas.NA or value is pandas.NaT):
        return True
    return isinstance(value, str) and value.strip(ASCII_SPACE).lower() in MISSING_STRINGS


# A clinical number as a person or a CSV export writes it: ASCII digits, one optional
# sign, point and exponent. Python's float() also takes "3_8", "١٢" (Arabic-Indic
# digits) and "infinity", none of which belongs in a record.
DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
SHOW_CHARS = 60


def short_repr(value: Any) -> str:
    """``repr(value)``, cut to ``SHOW_CHARS`` characters: an error message names the bad
    value without echoing a megabyte of it."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for str() (Python's 4,300-digit limit)
        return f"<an integer of {value.bit_length()} bits>"
    if len(text) <= SHOW_CHARS:
        return text
    return f"{text[:SHOW_CHARS]}... ({len(text)} characters)"


_short = short_repr
SHOW_NAMES = 5


def short_list(items: Any, show: int = SHOW_NAMES) -> str:
    """A list for an error message: the first ``show`` entries, each cut as
    :func:`short_repr` cuts, then how many more (``['a', 'b', ... and 4998 more]``)."""
    items = list(items)
    shown = ", ".join(short_repr(item) for item in items[:show])
    if len(items) <= show:
        return f"[{shown}]"
    return f"[{shown}, ... and {len(items) - show:,} more]"


def raw_str(value: Any) -> str:
    """Normalise a raw label or category value to the string the schema lists."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()
