"""Declarative schemas of tabular data, read from TOML.

A schema says what every column of a clinical table *is*: the label and how raw values
map to classes, the patient id used to split, the image column, each feature's type,
unit, valid range or categories and missing-value policy, and every excluded column with
the reason it must not be used. The same object validates a whole training table
(bad rows are skipped and reported, never coerced) and a single record at prediction
time (a ``ValueError`` that names the field, the value and what is accepted).

Example
-------
>>> from fusion.schema import load_schema
>>> schema = load_schema("synthetic")
>>> schema.classes
('covid', 'pneumonia', 'normal')
>>> schema.validate_record({"age": 54, "spo2": 91.0})["spo2"]
91.0
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FEATURE_TYPES = ("numeric", "categorical", "binary")
MISSING_POLICIES = ("indicator", "impute", "error")
OUT_OF_RANGE_POLICIES = ("error", "missing")

# Strings that mean "no value" in CSV exports. Anything else that does not parse is an
# error, so a typo never silently becomes a missing value.
MISSING_STRINGS = frozenset({"", "na", "n/a", "nan", "none", "null"})
# What may surround a number or a missing-value word: ASCII spaces and tabs. str.strip()
# would also take non-breaking, thin and ideographic spaces (pasted from a document),
# which the README's ASCII decimals exclude.
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


def _leaves_folder(relative: str) -> bool:
    """Whether a folder written in a schema leads out of the folder it is relative to,
    as written: absolute (POSIX, a Windows drive or share), the home folder (``~``), or
    more ``..`` than names before them. Symlinks are the loaders' to resolve."""
    if relative.startswith(("/", "\\", "~")) or PureWindowsPath(relative).drive:
        return True
    depth = 0
    for part in re.split(r"[\\/]+", relative):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _raw_str(value: Any) -> str:
    """Normalise a raw label or category value to the string the schema lists."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


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


@dataclass(frozen=True)
class LabelSpec:
    """The label column and how its raw values map to classes.

    ``classes`` keeps the schema's order, which is the order of the model's outputs.
    A raw value matches a class when it equals one of its ``values`` or starts with one
    of its ``prefixes``; a value matching no class goes to ``default`` or is an error.
    """

    column: str
    values: dict[str, tuple[str, ...]]
    prefixes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default: str | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.values)

    def __post_init__(self) -> None:
        if len(self.values) < 2:
            raise ValueError(f"label {self.column!r}: at least two classes are needed; got {list(self.values)}")
        if self.default is not None and self.default not in self.values:
            raise ValueError(
                f"label {self.column!r}: default {self.default!r} is not one of the classes {list(self.values)}"
            )
        seen: dict[str, str] = {}
        for cls, raws in self.values.items():
            for raw in raws:
                if raw in seen:
                    raise ValueError(
                        f"label {self.column!r}: raw value {raw!r} is listed for both {seen[raw]!r} and {cls!r}"
                    )
                seen[raw] = cls

    def encode(self, raw: Any) -> int:
        """Map a raw label value to its class index.

        Raises
        ------
        ValueError
            For a missing label, or an unknown raw value when the schema has no default.
        """
        if is_missing(raw):
            raise ValueError(f"label {self.column!r} is missing")
        text = _raw_str(raw)
        for index, cls in enumerate(self.values):
            if text in self.values[cls] or any(text.startswith(p) for p in self.prefixes.get(cls, ())):
                return index
        if self.default is not None:
            return self.classes.index(self.default)
        listed = {c: list(v) + [p + "*" for p in self.prefixes.get(c, ())] for c, v in self.values.items()}
        raise ValueError(
            f"label {self.column!r}: unknown value {_short(raw)}; the schema maps {listed} "
            "and declares no default class"
        )


@dataclass
class TableValidation:
    """The valid rows of a table, parsed, with every skipped row and its reason.

    Attributes
    ----------
    features : pandas.DataFrame
        One column per schema feature, parsed (numeric: float with NaN; others: str or
        None), indexed like the input rows that passed.
    labels : numpy.ndarray of int
        Class indices, aligned with ``features``.
    groups : numpy.ndarray of str or None
        Group (patient) ids, when the schema declares a group column.
    images : numpy.ndarray of str or None
        Image file names, when the schema declares an image column.
    skipped : list of dict
        ``{"row": index, "file": image or None, "reason": str}`` for each rejected row.
    notes : list of dict
        Values the schema's declared policies turned into missing values (row, reason).
    """

    features: pd.DataFrame
    labels: np.ndarray
    groups: np.ndarray | None
    images: np.ndarray | None
    skipped: list[dict]
    notes: list[dict]


@dataclass(frozen=True)
class Schema:
    """A declarative description of a multimodal table; see the module docstring."""

    name: str
    label: LabelSpec
    features: tuple[Feature, ...]
    group: str | None = None
    image_column: str | None = None
    image_folder: str | None = None
    image_allow_outside: bool = False
    excluded: dict[str, str] = field(default_factory=dict)
    description: str = ""
    text: str = ""

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"schema {self.name!r}: features declared twice: {short_list(dupes)}")
        roles: dict[str, str] = {}
        for role, column in [("label", self.label.column), ("group", self.group), ("image", self.image_column)]:
            if column is not None:
                roles.setdefault(column, role)
        for column in list(names) + list(self.excluded):
            if column in roles:
                raise ValueError(
                    f"schema {self.name!r}: column {column!r} is both the {roles[column]} column "
                    "and a feature or excluded column"
                )
        both = sorted(set(names) & set(self.excluded))
        if both:
            raise ValueError(f"schema {self.name!r}: columns both features and excluded: {short_list(both)}")
        for column, reason in self.excluded.items():
            if not isinstance(reason, str) or not reason.strip():
                raise ValueError(f"schema {self.name!r}: excluded column {column!r} needs a reason")
        self._check_image_folder()

    def _check_image_folder(self) -> None:
        """The image folder lies inside the dataset folder unless the schema says otherwise:
        a dataset's table must not make the loaders read ``/etc`` or a home folder."""
        if not isinstance(self.image_allow_outside, bool):
            raise TypeError(f"schema {self.name!r}: image_allow_outside must be True or False")
        folder = self.image_folder
        if folder is None or self.image_allow_outside or not _leaves_folder(folder):
            return
        raise ValueError(
            f"schema {self.name!r}: [image] 'folder' must be a relative folder inside the dataset folder "
            f"(no leading '/', '~' or drive, no '..' climbing out of it); got {_short(folder)}; for images kept "
            "elsewhere on purpose, set allow_outside = true in [image]"
        )

    @property
    def classes(self) -> tuple[str, ...]:
        return self.label.classes

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"schema {self.name!r} has no feature {name!r}; features: {list(self.feature_names)}")

    # ------------------------------------------------------------------ records
    def validate_record(self, record: Mapping[str, Any] | pd.Series | None) -> dict[str, Any]:
        """Validate one clinical record for prediction.

        Parameters
        ----------
        record : mapping or pandas.Series
            Keyed by feature names; a missing key is a missing value. The label, group,
            image and excluded columns are ignored if present, so a row of the training
            table can be passed as it is.

        Returns
        -------
        dict
            Every feature name mapped to its parsed value (NaN or None when missing).

        Raises
        ------
        TypeError
            ``record`` is not a mapping.
        ValueError
            A field is unknown, or a value is not accepted (the message names the field,
            the value and what is accepted).
        """
        pandas = sys.modules.get("pandas")
        if pandas is not None and isinstance(record, pandas.Series):
            record = record.to_dict()
        if not isinstance(record, Mapping):
            raise TypeError(
                f"record must be a dict or pandas Series keyed by feature name; got {type(record).__name__}"
            )
        known = (
            set(self.feature_names)
            | set(self.excluded)
            | {c for c in (self.label.column, self.group, self.image_column) if c}
        )
        unknown = sorted(str(k) for k in record if k not in known)
        if unknown:
            raise ValueError(
                f"record has unknown field(s) {short_list(unknown)}; "
                f"schema {self.name!r} accepts {short_list(self.feature_names, 20)}"
            )
        out = {}
        for feature in self.features:
            out[feature.name], _ = feature.parse(record.get(feature.name))
        return out

    # ------------------------------------------------------------------- tables
    def required_columns(self, *, with_label: bool = True, with_image: bool = True) -> list[str]:
        cols = list(self.feature_names)
        if with_label:
            cols.append(self.label.column)
        if self.group:
            cols.append(self.group)
        if with_image and self.image_column:
            cols.append(self.image_column)
        return cols

    def undeclared_columns(self, columns) -> list[str]:
        """Columns of a table the schema says nothing about (neither used nor excluded)."""
        declared = set(self.required_columns()) | set(self.excluded)
        return [c for c in columns if c not in declared]

    def validate_table(self, table: pd.DataFrame, *, with_label: bool = True) -> TableValidation:
        """Validate a whole table; rows that fail are skipped and each one reported.

        Read CSV files with ``dtype=str, keep_default_na=False`` (as
        :func:`fusion.data.read_table` does) so that the schema, not pandas, decides
        what is a number and what is missing.

        Raises
        ------
        ValueError
            When a column the schema needs is absent from the table.
        """
        used = list(dict.fromkeys(self.required_columns(with_label=with_label)))
        missing_cols = [c for c in used if c not in table.columns]
        if missing_cols:
            raise ValueError(
                f"table lacks column(s) {short_list(missing_cols)} required by schema {self.name!r}; "
                f"it has {short_list(table.columns, 20)}"
            )
        parsed: dict[str, list] = {f.name: [] for f in self.features}
        labels, groups, images, kept, skipped, notes = [], [], [], [], [], []
        # Only the columns read: a 10,000-column table is not turned into rows x 10,000 objects.
        for index, row in zip(table.index, table[used].to_dict("records"), strict=True):
            file = row.get(self.image_column) if self.image_column else None
            file = None if is_missing(file) else str(file)
            reasons, row_notes, values = [], [], {}
            for feature in self.features:
                try:
                    values[feature.name], note = feature.parse(row[feature.name])
                except ValueError as err:
                    reasons.append(str(err))
                    continue
                if note:
                    row_notes.append(note)
            label = -1
            if with_label:
                try:
                    label = self.label.encode(row[self.label.column])
                except ValueError as err:
                    reasons.append(str(err))
            group = None
            if self.group:
                group = row[self.group]
                if is_missing(group):
                    reasons.append(f"group column {self.group!r} is missing")
                group = _raw_str(group)
            if self.image_column and file is None:
                reasons.append(f"image column {self.image_column!r} is empty")
            if reasons:
                skipped.append({"row": _jsonable(index), "file": file, "reason": "; ".join(reasons)})
                continue
            notes.extend({"row": _jsonable(index), "file": file, "reason": n} for n in row_notes)
            for name, value in values.items():
                parsed[name].append(value)
            labels.append(label)
            groups.append(group)
            images.append(file)
            kept.append(index)
        import pandas as pd

        features = records_frame(self, parsed, index=pd.Index(kept, name=table.index.name))
        return TableValidation(
            features=features,
            labels=np.asarray(labels, dtype=np.int64),
            groups=np.asarray(groups, dtype=object) if self.group else None,
            images=np.asarray(images, dtype=object) if self.image_column else None,
            skipped=skipped,
            notes=notes,
        )


def records_frame(schema: Schema, columns: Mapping[str, list], index=None) -> pd.DataFrame:
    """Parsed feature values as a DataFrame with one explicit dtype per feature type:
    float64 (NaN = missing) for numeric, object (None = missing) for the others, so
    that pandas' string inference never turns a missing category into NaN."""
    import pandas as pd

    data = {}
    for feature in schema.features:
        values = columns[feature.name]
        if feature.type == "numeric":
            data[feature.name] = pd.Series(values, dtype="float64", index=index)
        else:
            data[feature.name] = pd.Series(values, dtype=object, index=index)
    return pd.DataFrame(data, index=index)


def _jsonable(index: Any) -> Any:
    if isinstance(index, np.integer):
        return int(index)
    return index


# ------------------------------------------------------------ records as JSON text
# A JSON record is a few hundred bytes; a megabyte of "record" is not one. The one
# limit of every reader of JSON records (``--record``, the service's ``record`` field).
MAX_RECORD_BYTES = 64 * 1024
# A record is one object of plain values: 2 lets a list or object where a value belongs
# reach its field's own message; deeper text is refused before the parser recurses.
MAX_RECORD_DEPTH = 2
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


class RecordTooLarge(ValueError):
    """A JSON record over :data:`MAX_RECORD_BYTES` (the service answers 413)."""


class JSONNumber:
    """A JSON number no float or reasonable int holds (5,000 digits, ``1e999``), kept
    as its text so that the field it belongs to is refused naming it, rather than the
    parser failing with Python's "Exceeds the limit (4300 digits)" or the value
    becoming infinity."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _json_int(text: str) -> int | JSONNumber:
    # 400 digits is past float's range already; int() of 4,300 and more is refused by Python.
    return int(text) if len(text.lstrip("-")) <= 400 else JSONNumber(text)


def _json_float(text: str) -> float | JSONNumber:
    number = float(text)
    return number if math.isfinite(number) else JSONNumber(text)


def _nesting(text: str) -> int:
    """How deep the objects and lists of JSON ``text`` nest (brackets in strings aside)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


class RepeatedKey(ValueError):
    """A JSON object that names ``key`` twice: ``json.loads`` alone would keep the last
    value silently."""

    def __init__(self, key: str):
        super().__init__(f"the key {_short(key)} appears more than once")
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """``json.loads``'s ``object_pairs_hook`` that refuses a repeated key (RepeatedKey)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise RepeatedKey(key)
        out[key] = value
    return out


def parse_record_json(data: str | bytes, *, origin: str = "record") -> dict | None:
    """A record from JSON text, checked before and while it is parsed; None for blank text.

    The one parser of records given as text (``fusion.predict --record`` and the
    service's ``record`` field): at most :data:`MAX_RECORD_BYTES` of UTF-8, nested at
    most :data:`MAX_RECORD_DEPTH` deep, each key once (``json.loads`` would keep the
    last of ``{"age": 61, "age": 30}`` silently), one JSON object. Numbers beyond
    float's range stay :class:`JSONNumber` text for :meth:`Schema.validate_record` to
    refuse naming their field. ``origin`` begins every message ("record", or the flag
    and file it came from).

    Raises
    ------
    RecordTooLarge
        Over :data:`MAX_RECORD_BYTES` (a ``ValueError``).
    ValueError
        Not UTF-8, not valid JSON, nested too deep, a repeated key, or not an object.
    """
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_RECORD_BYTES:
        raise RecordTooLarge(f"{origin} is {size} bytes; a record is at most {MAX_RECORD_BYTES} bytes")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{origin} must be UTF-8 text holding a JSON object") from None
    if not data.strip():
        return None
    depth = _nesting(data)
    if depth > MAX_RECORD_DEPTH:
        raise ValueError(
            f"{origin} is nested {depth} levels deep; a record is one JSON object of plain values "
            f'(numbers, strings, null), such as {{"age": 61}}'
        )

    try:
        record = json.loads(data, object_pairs_hook=unique_keys, parse_int=_json_int, parse_float=_json_float)
    except RepeatedKey as err:
        raise ValueError(f"{origin} has the key {_short(err.key)} more than once; each field may appear once") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{origin} is not valid JSON ({err}); give a JSON object such as '{{\"age\": 61}}'") from None
    if not isinstance(record, dict):
        raise ValueError(
            f"{origin} must be a JSON object keyed by feature name; got a JSON {_JSON_TYPES[type(record)]}"
        )
    return record


_JSON_TYPES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    JSONNumber: "number",
    bool: "boolean",
    type(None): "null",
}


# ----------------------------------------------------------------------- loading
def _check_keys(spec: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """A misspelt key would silently be a default: refuse it, listing the allowed ones."""
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ValueError(f"{where} has unknown key(s) {short_list(extra)}; allowed: {sorted(allowed)}")


_TYPE_NAMES = {str: "a string", list: "a list", dict: "a table", int: "an integer", float: "a number"}


def _get(
    spec: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    where: str,
    default: Any = None,
    *,
    required: bool = False,
) -> Any:
    """``spec[key]`` checked to be of ``kind``; a wrong type is refused naming the table
    and the key (a number where a column name belongs, say), never passed on."""
    if key not in spec:
        if required:
            raise ValueError(f"{where} needs the key {key!r}")
        return default
    value = spec[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise ValueError(f"{where}: {key!r} must be {expected}; got {_short(value)}")
    if isinstance(value, str) and kinds == (str,) and not value.strip():
        raise ValueError(f"{where}: {key!r} must not be empty")
    return value


def _true_or_false(spec: Mapping[str, Any], key: str, where: str) -> bool:
    """An optional TOML boolean (default false); ``1`` or ``"yes"`` are refused, not read as true."""
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{where}: {key!r} must be true or false; got {_short(value)}")
    return value


def _table(doc: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> dict:
    return _get(doc, key, dict, where, {}, required=required)


def _str_list(spec: Mapping[str, Any], key: str, where: str) -> tuple:
    values = _get(spec, key, list, where, [])
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError(f"{where}: every entry of {key!r} must be a string or number; got {_short(v)}")
    return tuple(values)


def _feature_from_toml(name: str, spec: Any, where: str) -> Feature:
    where = f"{where}: [features.{name}]"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a table (type, unit, range, ...); got {_short(spec)}")
    _check_keys(spec, {"type", "unit", "range", "categories", "missing", "out_of_range", "bands", "description"}, where)
    if "type" not in spec:
        raise ValueError(f"{where} needs a 'type', one of {FEATURE_TYPES}")
    rng = _get(spec, "range", list, where)
    if rng is not None:
        if len(rng) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng):
            raise ValueError(f"{where}: 'range' must be [low, high] numbers; got {_short(rng)}")
        rng = (float(rng[0]), float(rng[1]))
    bands = _get(spec, "bands", list, where, [])
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bands):
        raise ValueError(f"{where}: 'bands' must be a list of numbers; got {_short(bands)}")
    try:
        return Feature(
            name=name,
            type=_get(spec, "type", str, where),
            unit=_get(spec, "unit", str, where),
            range=rng,
            categories=tuple(_raw_str(c) for c in _str_list(spec, "categories", where)),
            missing=_get(spec, "missing", str, where, "indicator"),
            out_of_range=_get(spec, "out_of_range", str, where, "error"),
            bands=tuple(float(v) for v in bands),
            description=_get(spec, "description", str, where, ""),
        )
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith(where) else f"{where}: {message}") from None


def _label_from_toml(spec: Mapping[str, Any], where: str) -> LabelSpec:
    where = f"{where}: [label]"
    _check_keys(spec, {"column", "classes", "default"}, where)
    column = _get(spec, "column", str, where, required=True)
    classes = _get(spec, "classes", dict, where, required=True)
    values: dict[str, tuple[str, ...]] = {}
    prefixes: dict[str, tuple[str, ...]] = {}
    for cls, mapping in classes.items():
        if isinstance(mapping, list):
            values[cls] = tuple(_raw_str(v) for v in _str_list(classes, cls, f"{where} classes"))
        elif isinstance(mapping, Mapping):
            at = f"{where} class {cls!r}"
            _check_keys(mapping, {"values", "prefixes"}, at)
            values[cls] = tuple(_raw_str(v) for v in _str_list(mapping, "values", at))
            prefixes[cls] = tuple(str(p) for p in _str_list(mapping, "prefixes", at))
        else:
            raise ValueError(
                f"{where}: class {cls!r} must map to a list of raw values or "
                f"{{values = [...], prefixes = [...]}}; got {_short(mapping)}"
            )
    try:
        return LabelSpec(column=column, values=values, prefixes=prefixes, default=_get(spec, "default", str, where))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _excluded_from_toml(spec: Mapping[str, Any], where: str) -> dict[str, str]:
    where = f"{where}: [excluded]"
    excluded = {}
    for column, entry in spec.items():
        if isinstance(entry, Mapping):
            _check_keys(entry, {"reason"}, f"{where} {column!r}")
            entry = entry.get("reason")
        if isinstance(entry, str) and entry.strip():
            reason = entry
        else:
            raise ValueError(
                f'{where}: {column!r} needs a reason: a string or {{ reason = "..." }}; got {_short(entry)}'
            )
        excluded[column] = reason
    return excluded


def parse_schema(text: str, *, origin: str = "<string>") -> Schema:
    """Build a :class:`Schema` from TOML text; ``origin`` names the source in errors.

    Every table and key is checked: an unknown key (a typo such as ``colum``) or a
    value of the wrong type is refused with a message naming the table and the key,
    because a silently ignored ``[group]`` key would put one patient's films on both
    sides of a split.

    Raises
    ------
    ValueError
        Invalid TOML, an unknown table or key, a wrong type or value, or a missing
        required key.
    """
    if not isinstance(text, str):
        raise TypeError(f"schema text must be a string; got {type(text).__name__}")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{origin}: not valid TOML: {err}") from None
    _check_keys(
        doc, {"name", "description", "label", "group", "image", "features", "excluded"}, f"{origin}: the top level"
    )
    if "label" not in doc:
        raise ValueError(f"{origin}: a schema needs a [label] table (column and classes)")
    top = f"{origin}: the top level"
    label = _table(doc, "label", top)
    group = _table(doc, "group", top)
    _check_keys(group, {"column"}, f"{origin}: [group]")
    image = _table(doc, "image", top)
    _check_keys(image, {"column", "folder", "allow_outside"}, f"{origin}: [image]")
    features = _table(doc, "features", top)
    try:
        return Schema(
            name=_get(doc, "name", str, top, Path(origin).stem),
            description=_get(doc, "description", str, top, ""),
            label=_label_from_toml(label, origin),
            group=_get(group, "column", str, f"{origin}: [group]", required=bool(group)),
            image_column=_get(image, "column", str, f"{origin}: [image]", required=bool(image)),
            image_folder=_get(image, "folder", str, f"{origin}: [image]"),
            image_allow_outside=_true_or_false(image, "allow_outside", f"{origin}: [image]"),
            features=tuple(_feature_from_toml(n, s, origin) for n, s in features.items()),
            excluded=_excluded_from_toml(_table(doc, "excluded", top), origin),
            text=text,
        )
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith(origin) else f"{origin}: {message}") from None


def _schema_dir():
    """The folder of built-in schemas: ``data/schema`` of a source checkout (editable
    installs, running from the repository), else the copy installed as ``fusion.schemas``."""
    checkout = Path(__file__).resolve().parent.parent / "data" / "schema"
    if checkout.is_dir():
        return checkout
    return resources.files("fusion.schemas")


def builtin_schemas() -> list[str]:
    """Names of the schemas shipped with fusion (``data/schema/*.toml``)."""
    return sorted(p.name[:-5] for p in _schema_dir().iterdir() if p.name.endswith(".toml"))


def load_schema(source: str | Path) -> Schema:
    """Load a schema from a TOML file, or a built-in one by name (e.g. ``"synthetic"``).

    Raises
    ------
    FileNotFoundError
        When ``source`` is neither a file nor a built-in name; the message lists both.
    """
    path = Path(source)
    if path.is_file():
        return parse_schema(path.read_text(encoding="utf-8"), origin=str(path))
    name = str(source)
    if name in builtin_schemas():
        text = _schema_dir().joinpath(name + ".toml").read_text(encoding="utf-8")
        return parse_schema(text, origin=f"data/schema/{name}.toml")
    raise FileNotFoundError(
        f"schema {str(source)!r} is neither a file nor a built-in schema; built-in: {builtin_schemas()}"
    )
