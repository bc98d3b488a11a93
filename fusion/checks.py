"""Checking values: each one's type and range, before anything is built from it, with
messages that name the value's place (a configuration field, a key of a file).

A model folder's files are verified against their manifest, but a careful hand-editor
updates the hashes too: the values themselves must then say whether they make sense.
Every error is a ``ValueError`` that names the file and the key at fault
(``.../calibration.json: thresholds.covid must be a number between 0 and 1; got -0.5``),
never an ``AttributeError``, a ``ZeroDivisionError`` or an 80 GB allocation later on.

Example
-------
>>> where = Where("calibration.json")
>>> number(0.5, where / "temperature", low=0, low_open=True)
0.5
>>> str(where / "thresholds" / "covid")
'calibration.json: thresholds.covid'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fusion.schema.values import short_repr


@dataclass(frozen=True)
class Where:
    """A place in a file: the file's name and the dotted key path inside it (``file``
    empty: a value not read from a file, named by its key path alone)."""

    file: str
    key: str = ""

    def __truediv__(self, key: Any) -> Where:
        return Where(self.file, f"{self.key}.{key}" if self.key else str(key))

    def item(self, index: int) -> Where:
        return Where(self.file, f"{self.key}[{index}]")

    def __str__(self) -> str:
        if self.file and self.key:
            return f"{self.file}: {self.key}"
        return self.file or self.key


def mapping(value: Any, where: Where) -> dict:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be an object; got {short_repr(value)}")
    return dict(value)


def keys(value: Any, where: Where, required: Iterable[str], optional: Iterable[str] = ()) -> dict:
    """``value`` as a dict holding every ``required`` key and no key outside
    ``required`` and ``optional`` (a misspelt key would silently be a default)."""
    value = mapping(value, where)
    required = tuple(required)
    unknown = sorted(set(value) - set(required) - set(optional), key=str)
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {short_repr(unknown)}; known: {sorted({*required, *optional})}")
    for key in required:
        if key not in value:
            raise ValueError(f"{where / key} is missing")
    return value


def _range(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        if not (low_open or high_open):
            return f" between {low} and {high}"
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def _within(value, low, high, low_open: bool, high_open: bool) -> bool:
    if low is not None and (value < low or (low_open and value == low)):
        return False
    return high is None or not (value > high or (high_open and value == high))


def number(value: Any, where: Where, *, low=None, high=None, low_open: bool = False, high_open: bool = False) -> float:
    """A finite number (not a bool, not a string) within the bounds given."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not _within(value, low, high, low_open, high_open):
        raise ValueError(
            f"{where} must be a finite number{_range(low, high, low_open, high_open)}; got {short_repr(value)}"
        )
    return float(value)


def integer(value: Any, where: Where, *, low=None, high=None) -> int:
    """A whole number (not a bool, not 2.0) within the bounds given."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or not _within(value, low, high, False, False):
        raise ValueError(f"{where} must be a whole number{_range(low, high, False, False)}; got {short_repr(value)}")
    return int(value)


def text(value: Any, where: Where, *, choices: Iterable[str] | None = None) -> str:
    """A non-empty string (one of ``choices`` when given)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty string; got {short_repr(value)}")
    if choices is not None:
        choices = list(choices)
        if value not in choices:
            raise ValueError(f"{where} must be one of {choices}; got {short_repr(value)}")
    return value


def texts(value: Any, where: Where, *, unique: bool = False, min_length: int = 0) -> tuple[str, ...]:
    """A list of non-empty strings; ``unique``: none twice."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where} must be a list of non-empty strings; got {short_repr(value)}")
    if len(value) < min_length:
        raise ValueError(f"{where} must list at least {min_length}; got {short_repr(value)}")
    if unique:
        seen: set[str] = set()
        for v in value:
            if v in seen:
                raise ValueError(f"{where} lists {short_repr(v)} twice; each must be unique")
            seen.add(v)
    return tuple(value)


def numbers_list(
    value: Any, where: Where, *, length: int | None = None, low=None, low_open: bool = False
) -> list[float]:
    """A list of finite numbers (``length`` of them when given), each within the bound."""
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list of numbers; got {short_repr(value)}")
    if length is not None and len(value) != length:
        raise ValueError(f"{where} must hold {length} numbers; got {len(value)}")
    return [number(v, where.item(i), low=low, low_open=low_open) for i, v in enumerate(value)]


def matrix(value: Any, where: Where, rows: int, columns: int) -> list[list[float]]:
    """A list of ``rows`` lists of ``columns`` finite numbers."""
    if not isinstance(value, list) or len(value) != rows:
        raise ValueError(f"{where} must be {rows} rows of {columns} numbers; got {short_repr(value)}")
    return [numbers_list(row, where.item(i), length=columns) for i, row in enumerate(value)]
