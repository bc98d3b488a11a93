"""Feature kinds: what a column of a record is and how its values are parsed."""

from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusion.schema.values import ASCII_SPACE, DECIMAL, is_missing
from fusion.schema.values import raw_str as _raw_str
from fusion.schema.values import short_repr as _short

FEATURE_TYPES = ("numeric", "categorical", "binary")
MISSING_POLICIES = ("indicator", "impute", "error")
OUT_OF_RANGE_POLICIES = ("error", "missing")


@dataclass(frozen=True)
class Feature:
    """One feature column.

    Parameters
    ----------
    name : str
        Column name, also the key of a record at prediction time.
    type : {"numeric", "categorical", "binary"}
    unit : str, optional
        Unit of a numeric value, for documentation and plots.
    range : (float, float), optional
        Inclusive valid range of a numeric value.
    categories : tuple of str
        Allowed values of a categorical feature; for a binary feature exactly two,
        ``(negative, positive)``.
    missing : {"indicator", "impute", "error"}
        ``indicator``: impute and add a 0/1 missing-value column (use when missingness
        may carry information); ``impute``: impute only; ``error``: the value is required.
    out_of_range : {"error", "missing"}
        What a numeric value outside ``range`` means: an invalid row or record
        (``error``), or a value known to be recorded in another unit or scale that is
        therefore treated as not measured (``missing``; counted in the report).
    bands : tuple of float
        Cut points of a numeric feature's bands for subgroup reports, ascending (e.g.
        ``[40, 65]``: under 40, 40 to 65, 65 and over).
    description : str
    """

    name: str
    type: str
    unit: str | None = None
    range: tuple[float, float] | None = None
    categories: tuple[str, ...] = ()
    missing: str = "indicator"
    out_of_range: str = "error"
    bands: tuple[float, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        where = f"feature {self.name!r}"
        if self.type not in FEATURE_TYPES:
            raise ValueError(f"{where}: type must be one of {FEATURE_TYPES}; got {self.type!r}")
        if self.missing not in MISSING_POLICIES:
            raise ValueError(f"{where}: missing must be one of {MISSING_POLICIES}; got {self.missing!r}")
        if self.out_of_range not in OUT_OF_RANGE_POLICIES:
            raise ValueError(f"{where}: out_of_range must be one of {OUT_OF_RANGE_POLICIES}; got {self.out_of_range!r}")
        if self.type == "numeric":
            if self.categories:
                raise ValueError(f"{where}: a numeric feature takes a range, not categories")
            if self.range is not None:
                lo, hi = self.range
                if not lo < hi:
                    raise ValueError(f"{where}: range must be [low, high] with low < high; got {list(self.range)}")
            if list(self.bands) != sorted(set(self.bands)):
                raise ValueError(f"{where}: bands must be strictly ascending cut points; got {list(self.bands)}")
        else:
            if self.range is not None or self.bands:
                raise ValueError(f"{where}: a {self.type} feature takes categories, not a range or bands")
            if self.type == "binary" and len(self.categories) != 2:
                raise ValueError(
                    f"{where}: a binary feature needs exactly two categories "
                    f"[negative, positive]; got {list(self.categories)}"
                )
            if self.type == "categorical" and len(self.categories) < 2:
                raise ValueError(f"{where}: a categorical feature needs at least two categories")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"{where}: categories repeat: {list(self.categories)}")

    @property
    def accepted(self) -> str:
        """A human description of the accepted values, for error messages."""
        if self.type == "numeric":
            unit = f" {self.unit}" if self.unit else ""
            if self.range is None:
                return f"a finite number{unit}"
            return f"a number in [{self.range[0]:g}, {self.range[1]:g}]{unit}"
        return "one of " + ", ".join(repr(c) for c in self.categories)

    def band(self, value: Any) -> str:
        """The subgroup a parsed value falls in: its band (numeric features with
        ``bands``), its category, or "missing"."""
        if is_missing(value):
            return "missing"
        if self.type != "numeric":
            return str(value)
        edges = list(self.bands)
        if not edges:
            raise ValueError(f"feature {self.name!r} is numeric and declares no bands (e.g. bands = [40, 65])")
        for i, edge in enumerate(edges):
            if value < edge:
                return f"< {edges[0]:g}" if i == 0 else f"{edges[i - 1]:g}-{edge:g}"
        return f">= {edges[-1]:g}"

    def band_names(self) -> list[str]:
        """Every subgroup :meth:`band` can return, in their natural order."""
        if self.type != "numeric":
            return [*self.categories, "missing"]
        edges = list(self.bands)
        inner = [f"{a:g}-{b:g}" for a, b in itertools.pairwise(edges)]
        return [f"< {edges[0]:g}", *inner, f">= {edges[-1]:g}", "missing"] if edges else ["missing"]

    def parse(self, value: Any) -> tuple[Any, str | None]:
        """Parse one raw value.

        Returns
        -------
        value : float, str or None
            ``float`` (NaN when missing) for numeric features, the category string or
            ``None`` for the others.
        note : str or None
            Set when a value was turned into a missing value by the schema's declared
            ``out_of_range = "missing"`` policy, so callers can report it.

        Raises
        ------
        ValueError
            The value is not accepted; the message names the feature, the value and
            what is accepted.
        """
        if is_missing(value):
            if self.missing == "error":
                raise ValueError(f"{self.name!r} is required ({self.accepted}); got a missing value")
            return (math.nan if self.type == "numeric" else None), None
        if self.type == "numeric":
            return self._parse_number(value)
        # A string must be one declared value exactly: " M " is not "M" (a value that
        # needs cleaning is refused, never cleaned silently). Numbers and booleans are
        # compared through their plain text (1 -> "1", True -> "True").
        text = value if isinstance(value, str) else _raw_str(value)
        if text not in self.categories:
            raise ValueError(f"{self.name!r} must be {self.accepted}; got {_short(value)}")
        return text, None

    def _parse_number(self, value: Any) -> tuple[float, str | None]:
        bad = f"{self.name!r} must be {self.accepted}; got {_short(value)}"
        if isinstance(value, (bool, np.bool_)):
            raise ValueError(bad)
        if isinstance(value, str):
            text = value.strip(ASCII_SPACE)
            if not DECIMAL.fullmatch(text):
                raise ValueError(bad)
            number = float(text)
        elif isinstance(value, numbers.Real):
            try:
                number = float(value)
            except OverflowError:  # an int beyond float's range, e.g. 10**400
                raise ValueError(bad) from None
        else:
            raise ValueError(bad)
        if not math.isfinite(number):
            raise ValueError(bad)
        if self.range is not None and not self.range[0] <= number <= self.range[1]:
            if self.out_of_range == "missing":
                return math.nan, f"{self.name}={_short(value)} outside {self.accepted}: treated as missing"
            raise ValueError(bad)
        return number, None
