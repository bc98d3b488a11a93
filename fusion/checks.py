"""Checking values: each one's type and range, before anything is built from it, with
messages that name the value's place (a configuration field, a key of a file).

A model folder's files are verified against their manifest, but a careful hand-editor
updates the hashes too: the values themselves must then say whether they make sense.
Every error is a ``ValueError`` that names the file and the key at fault
(``.../calibration.json: thresholds.covid must be a number between 0 and 1; got -0.5``),
never an ``AttributeError``, a ``ZeroDivisionError`` or an 80 GB allocation later on.
It carries them too (:mod:`fusion.errors`): a :class:`~fusion.errors.ModelFolderError`
with the file and the key, or, for a configuration field (:meth:`Where.setting`), a
:class:`~fusion.errors.ConfigError` with the field; each with the value and what is
accepted.

Example
-------
>>> where = Where("calibration.json")
>>> number(0.5, where / "temperature", low=0, low_open=True)
0.5
>>> str(where / "thresholds" / "covid")
'calibration.json: thresholds.covid'
>>> try:
...     number(-1, Where.setting("train.lr"), low=0, low_open=True)
... except ValueError as err:
...     print(type(err).__name__, err.field, err.value, err.accepted)
ConfigError train.lr -1 a finite number > 0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fusion.errors import MISSING, ConfigError, FusionError, ModelFolderError
from fusion.schema.values import short_repr


@dataclass(frozen=True)
class Where:
    """A place in a file: the file's name and the dotted key path inside it (``file``
    empty: a value not read from a file, named by its key path alone).

    ``error`` is the class of the errors raised about the place (:meth:`refuse`):
    :class:`~fusion.errors.ModelFolderError` (saved state) unless made by
    :meth:`setting`."""

    file: str
    key: str = ""
    error: type[FusionError] = field(default=ModelFolderError, compare=False, repr=False)

    @classmethod
    def setting(cls, name: str) -> Where:
        """A configuration field by its dotted name (``"train.lr"``): refusals are
        :class:`~fusion.errors.ConfigError`."""
        return cls("", name, ConfigError)

    def __truediv__(self, key: Any) -> Where:
        return Where(self.file, f"{self.key}.{key}" if self.key else str(key), self.error)

    def item(self, index: int) -> Where:
        return Where(self.file, f"{self.key}[{index}]", self.error)

    def __str__(self) -> str:
        if self.file and self.key:
            return f"{self.file}: {self.key}"
        return self.file or self.key

    def refuse(self, message: str, *, value: Any = MISSING, accepted: str | None = None) -> FusionError:
        """The error saying ``message`` about this place: its key as the field, its file."""
        return self.error(message, field=self.key or None, value=value, accepted=accepted, file=self.file or None)


def mapping(value: Any, where: Where) -> dict:
    if not isinstance(value, Mapping):
        raise where.refuse(f"{where} must be an object; got {short_repr(value)}", value=value, accepted="an object")
    return dict(value)


def keys(value: Any, where: Where, required: Iterable[str], optional: Iterable[str] = ()) -> dict:
    """``value`` as a dict holding every ``required`` key and no key outside
    ``required`` and ``optional`` (a misspelt key would silently be a default)."""
    value = mapping(value, where)
    required = tuple(required)
    unknown = sorted(set(value) - set(required) - set(optional), key=str)
    if unknown:
        known = sorted({*required, *optional})
        raise where.refuse(
            f"{where} has unknown key(s) {short_repr(unknown)}; known: {known}", value=unknown, accepted=f"{known}"
        )
    for key in required:
        if key not in value:
            raise (where / key).refuse(f"{where / key} is missing")
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
        accepted = f"a finite number{_range(low, high, low_open, high_open)}"
        raise where.refuse(f"{where} must be {accepted}; got {short_repr(value)}", value=value, accepted=accepted)
    return float(value)


def integer(value: Any, where: Where, *, low=None, high=None) -> int:
    """A whole number (not a bool, not 2.0) within the bounds given."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or not _within(value, low, high, False, False):
        accepted = f"a whole number{_range(low, high, False, False)}"
        raise where.refuse(f"{where} must be {accepted}; got {short_repr(value)}", value=value, accepted=accepted)
    return int(value)


def text(value: Any, where: Where, *, choices: Iterable[str] | None = None) -> str:
    """A non-empty string (one of ``choices`` when given)."""
    if not isinstance(value, str) or not value:
        raise where.refuse(
            f"{where} must be a non-empty string; got {short_repr(value)}", value=value, accepted="a non-empty string"
        )
    if choices is not None:
        choices = list(choices)
        if value not in choices:
            accepted = f"one of {choices}"
            raise where.refuse(f"{where} must be {accepted}; got {short_repr(value)}", value=value, accepted=accepted)
    return value


def texts(value: Any, where: Where, *, unique: bool = False, min_length: int = 0) -> tuple[str, ...]:
    """A list of non-empty strings; ``unique``: none twice."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise where.refuse(
            f"{where} must be a list of non-empty strings; got {short_repr(value)}",
            value=value,
            accepted="a list of non-empty strings",
        )
    if len(value) < min_length:
        raise where.refuse(
            f"{where} must list at least {min_length}; got {short_repr(value)}",
            value=value,
            accepted=f"a list of at least {min_length}",
        )
    if unique:
        seen: set[str] = set()
        for v in value:
            if v in seen:
                raise where.refuse(f"{where} lists {short_repr(v)} twice; each must be unique", value=v)
            seen.add(v)
    return tuple(value)


def numbers_list(
    value: Any, where: Where, *, length: int | None = None, low=None, low_open: bool = False
) -> list[float]:
    """A list of finite numbers (``length`` of them when given), each within the bound."""
    if not isinstance(value, list):
        raise where.refuse(
            f"{where} must be a list of numbers; got {short_repr(value)}", value=value, accepted="a list of numbers"
        )
    if length is not None and len(value) != length:
        raise where.refuse(
            f"{where} must hold {length} numbers; got {len(value)}", value=value, accepted=f"{length} numbers"
        )
    return [number(v, where.item(i), low=low, low_open=low_open) for i, v in enumerate(value)]


def matrix(value: Any, where: Where, rows: int, columns: int) -> list[list[float]]:
    """A list of ``rows`` lists of ``columns`` finite numbers."""
    if not isinstance(value, list) or len(value) != rows:
        accepted = f"{rows} rows of {columns} numbers"
        raise where.refuse(f"{where} must be {accepted}; got {short_repr(value)}", value=value, accepted=accepted)
    return [numbers_list(row, where.item(i), length=columns) for i, row in enumerate(value)]
