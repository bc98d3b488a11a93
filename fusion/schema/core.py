"""The schema of a table: its label, group, image and feature columns, and the
validation of whole tables and single records against it."""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import PureWindowsPath
from typing import TYPE_CHECKING, Any

import numpy as np

from fusion.errors import InputError, SchemaError
from fusion.schema.kinds import Feature
from fusion.schema.values import is_missing, short_list
from fusion.schema.values import raw_str as _raw_str
from fusion.schema.values import short_repr as _short

# The smallest [image] detail (and image.detail): below 8 x 8 px a film is a few blotches of gray.
MIN_DETAIL = 8

if TYPE_CHECKING:
    import pandas as pd


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
            raise SchemaError(
                f"label {self.column!r}: at least two classes are needed; got {list(self.values)}",
                field="[label] classes",
                value=list(self.values),
                accepted="at least two classes",
            )
        if self.default is not None and self.default not in self.values:
            raise SchemaError(
                f"label {self.column!r}: default {self.default!r} is not one of the classes {list(self.values)}",
                field="[label] default",
                value=self.default,
                accepted=f"one of {list(self.values)}",
            )
        seen: dict[str, str] = {}
        for cls, raws in self.values.items():
            for raw in raws:
                if raw in seen:
                    raise SchemaError(
                        f"label {self.column!r}: raw value {raw!r} is listed for both {seen[raw]!r} and {cls!r}",
                        field="[label] classes",
                        value=raw,
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
            raise InputError(f"label {self.column!r} is missing", field=self.column, value=raw)
        text = _raw_str(raw)
        for index, cls in enumerate(self.values):
            if text in self.values[cls] or any(text.startswith(p) for p in self.prefixes.get(cls, ())):
                return index
        if self.default is not None:
            return self.classes.index(self.default)
        listed = {c: list(v) + [p + "*" for p in self.prefixes.get(c, ())] for c, v in self.values.items()}
        raise InputError(
            f"label {self.column!r}: unknown value {_short(raw)}; the schema maps {listed} "
            "and declares no default class",
            field=self.column,
            value=raw,
            accepted=f"a raw value the schema maps: {listed}",
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
    missing_tokens : dict of str -> dict of str -> int
        How many values of the rows kept each declared missing token turned into a
        missing value, by feature then token (``{"sex": {"unknown": 34}}``); features
        and tokens that never occurred are left out.
    """

    features: pd.DataFrame
    labels: np.ndarray
    groups: np.ndarray | None
    images: np.ndarray | None
    skipped: list[dict]
    notes: list[dict]
    missing_tokens: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Schema:
    """A declarative description of a multimodal table; see the module docstring.

    ``missing_tokens`` are the values that mean "not known" in every feature column of
    the table (the TOML's ``[missing] tokens``): each feature's own ``missing_tokens``
    gain them (after its own), so a feature, the form and the card list all the tokens
    that apply to it. A table token may not be a category of any feature.

    ``image_flip_rotate`` (``[image] flip_rotate``): the images have no up and no side
    (a skin lesion, a pathology slide), so training may mirror them and turn them by
    quarter turns (``image.flip_rotate`` follows it when unset). False for films: a
    mirrored chest puts the heart on the wrong side.

    ``image_detail`` (``[image] detail``): the finest detail a model should read of these
    images, as a side in pixels (``image.detail`` follows it when unset): for a
    collection whose classes differ in sharpness for reasons of acquisition, so a
    network that reads fine texture learns the scanner rather than the lungs.
    """

    name: str
    label: LabelSpec
    features: tuple[Feature, ...]
    group: str | None = None
    image_column: str | None = None
    image_folder: str | None = None
    image_allow_outside: bool = False
    image_channels: int | None = None
    image_flip_rotate: bool = False
    image_detail: int | None = None
    excluded: dict[str, str] = field(default_factory=dict)
    description: str = ""
    text: str = ""
    missing_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._spread_tokens()
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SchemaError(f"schema {self.name!r}: features declared twice: {short_list(dupes)}", value=dupes)
        roles: dict[str, str] = {}
        for role, column in [("label", self.label.column), ("group", self.group), ("image", self.image_column)]:
            if column is not None:
                roles.setdefault(column, role)
        for column in list(names) + list(self.excluded):
            if column in roles:
                raise SchemaError(
                    f"schema {self.name!r}: column {column!r} is both the {roles[column]} column "
                    "and a feature or excluded column",
                    value=column,
                )
        both = sorted(set(names) & set(self.excluded))
        if both:
            raise SchemaError(
                f"schema {self.name!r}: columns both features and excluded: {short_list(both)}", value=both
            )
        for column, reason in self.excluded.items():
            if not isinstance(reason, str) or not reason.strip():
                raise SchemaError(
                    f"schema {self.name!r}: excluded column {column!r} needs a reason",
                    field=f"[excluded] {column}",
                    value=reason,
                    accepted="a reason",
                )
        self._check_image_folder()
        if self.image_channels not in (None, 1, 3):
            raise SchemaError(
                f"schema {self.name!r}: [image] 'channels' must be 1 (gray films) or 3 (colour images); "
                f"got {_short(self.image_channels)}",
                field="[image] channels",
                value=self.image_channels,
                accepted="1 or 3",
            )
        if not isinstance(self.image_flip_rotate, bool):
            raise SchemaError(
                f"schema {self.name!r}: [image] 'flip_rotate' must be true or false; "
                f"got {_short(self.image_flip_rotate)}",
                field="[image] flip_rotate",
                value=self.image_flip_rotate,
                accepted="true or false",
            )
        self._check_detail()

    def _check_detail(self) -> None:
        detail = self.image_detail
        if detail is None or (isinstance(detail, int) and not isinstance(detail, bool) and detail >= MIN_DETAIL):
            return
        accepted = f"a whole number of at least {MIN_DETAIL} (a side in pixels)"
        raise SchemaError(
            f"schema {self.name!r}: [image] 'detail' must be {accepted}; got {_short(detail)}",
            field="[image] detail",
            value=detail,
            accepted=accepted,
        )

    def _spread_tokens(self) -> None:
        """Give every feature the table's missing tokens (frozen: ``object.__setattr__``)."""
        tokens = tuple(self.missing_tokens)
        object.__setattr__(self, "missing_tokens", tokens)
        if not tokens:
            return
        accepted = "distinct, non-blank strings that are no feature's category"
        blank = [t for t in tokens if not isinstance(t, str) or not t.strip()]
        clash = next(((t, f.name) for f in self.features for t in tokens if t in f.categories), None)
        if blank or len(set(tokens)) != len(tokens) or clash:
            why = (
                f"{_short(clash[0])} is a category of feature {clash[1]!r} (declare tokens per feature instead)"
                if clash
                else f"got {_short(list(tokens))}"
            )
            raise SchemaError(
                f"schema {self.name!r}: [missing] tokens must be {accepted}; {why}",
                field="[missing] tokens",
                value=list(tokens),
                accepted=accepted,
            )
        features = tuple(
            replace(f, missing_tokens=(*f.missing_tokens, *(t for t in tokens if t not in f.missing_tokens)))
            for f in self.features
        )
        object.__setattr__(self, "features", features)

    def _check_image_folder(self) -> None:
        """The image folder lies inside the dataset folder unless the schema says otherwise:
        a dataset's table must not make the loaders read ``/etc`` or a home folder."""
        if not isinstance(self.image_allow_outside, bool):
            raise TypeError(f"schema {self.name!r}: image_allow_outside must be True or False")
        folder = self.image_folder
        if folder is None or self.image_allow_outside or not _leaves_folder(folder):
            return
        raise SchemaError(
            f"schema {self.name!r}: [image] 'folder' must be a relative folder inside the dataset folder "
            f"(no leading '/', '~' or drive, no '..' climbing out of it); got {_short(folder)}; for images kept "
            "elsewhere on purpose, set allow_outside = true in [image]",
            field="[image] folder",
            value=folder,
            accepted="a relative folder inside the dataset folder",
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
            raise InputError(
                f"record has unknown field(s) {short_list(unknown)}; "
                f"schema {self.name!r} accepts {short_list(self.feature_names, 20)}",
                field="record",
                value=unknown,
                accepted=f"the fields of schema {self.name!r}",
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
        tokens: Counter[tuple[str, str]] = Counter()
        # Only the columns read: a 10,000-column table is not turned into rows x 10,000 objects.
        for index, row in zip(table.index, table[used].to_dict("records"), strict=True):
            file = row.get(self.image_column) if self.image_column else None
            file = None if is_missing(file) else str(file)
            values, reasons, row_notes, row_tokens = self._parse_features(row)
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
            tokens.update(row_tokens)
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
            missing_tokens=self._token_counts(tokens),
        )

    def _parse_features(self, row: Mapping[str, Any]) -> tuple[dict, list[str], list[str], list[tuple[str, str]]]:
        """One table row's features: the parsed values, the reasons of the values
        refused, the notes of values a declared policy made missing, and the
        ``(feature, token)`` of each value a declared missing token made missing."""
        values, reasons, notes, tokens = {}, [], [], []
        for feature in self.features:
            raw = row[feature.name]
            try:
                values[feature.name], note = feature.parse(raw)
            except ValueError as err:
                reasons.append(str(err))
                continue
            if note:
                notes.append(note)
            token = feature.missing_token(raw) if feature.missing_tokens else None
            if token is not None:
                tokens.append((feature.name, token))
        return values, reasons, notes, tokens

    def _token_counts(self, counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
        """``{feature: {token: count}}`` in the schema's order of features and tokens."""
        out = {}
        for feature in self.features:
            found = {t: counts[feature.name, t] for t in feature.missing_tokens if counts[feature.name, t]}
            if found:
                out[feature.name] = found
        return out


def records_frame(schema: Schema, columns: Mapping[str, list], index=None) -> pd.DataFrame:
    """Parsed feature values as a DataFrame with each feature's explicit dtype: float64
    (NaN = missing) for numbers, object (None = missing) for the others, so that
    pandas' string inference never turns a missing category into NaN."""
    import pandas as pd

    data = {f.name: pd.Series(columns[f.name], dtype=f.dtype, index=index) for f in schema.features}
    return pd.DataFrame(data, index=index)


def _jsonable(index: Any) -> Any:
    if isinstance(index, np.integer):
        return int(index)
    return index


def group_unit(schema: Schema | None) -> str:
    """The word for one group of rows, as reports say it ("resamples of lesions"): the
    schema's group column without an ``id`` ending (``lesion_id`` -> "lesion",
    ``patientid`` -> "patient"); "patient" when there is no schema or group, the
    grouping every chest X-ray cohort uses."""
    column = (schema.group if schema is not None else None) or "patient"
    word = re.sub(r"[\s_-]*id$", "", column.strip(), flags=re.IGNORECASE)
    return word.replace("_", " ").lower() or "patient"
