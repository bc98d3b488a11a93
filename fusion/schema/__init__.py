"""Declarative schemas of tabular data, read from TOML.

A schema says what every column of a clinical table *is*: the label and how raw values
map to classes, the patient id used to split, the image column, each feature's type,
unit, valid range or categories and missing-value policy, and every excluded column with
the reason it must not be used. The same object validates a whole training table
(bad rows are skipped and reported, never coerced) and a single record at prediction
time (a ``ValueError``, :class:`~fusion.errors.InputError`, that names the field, the
value and what is accepted, and carries them as ``field``, ``value`` and ``accepted``).

Example
-------
>>> from fusion.schema import load_schema
>>> schema = load_schema("synthetic")
>>> schema.classes
('covid', 'pneumonia', 'normal')
>>> schema.validate_record({"age": 54, "spo2": 91.0})["spo2"]
91.0
"""

from fusion.schema.core import LabelSpec, Schema, TableValidation, group_unit, records_frame
from fusion.schema.kinds import (
    FEATURE_TYPES,
    KINDS,
    MISSING_POLICIES,
    OUT_OF_RANGE_POLICIES,
    Feature,
    make_feature,
)
from fusion.schema.loading import builtin_schemas, load_schema, parse_schema
from fusion.schema.records import (
    MAX_RECORD_BYTES,
    MAX_RECORD_DEPTH,
    JSONNumber,
    RecordTooLarge,
    RepeatedKey,
    parse_record_json,
    unique_keys,
)
from fusion.schema.values import (
    ASCII_SPACE,
    DECIMAL,
    MISSING_STRINGS,
    SHOW_CHARS,
    SHOW_NAMES,
    is_missing,
    short_list,
    short_repr,
)

__all__ = [
    "ASCII_SPACE",
    "DECIMAL",
    "FEATURE_TYPES",
    "KINDS",
    "MAX_RECORD_BYTES",
    "MAX_RECORD_DEPTH",
    "MISSING_POLICIES",
    "MISSING_STRINGS",
    "OUT_OF_RANGE_POLICIES",
    "SHOW_CHARS",
    "SHOW_NAMES",
    "Feature",
    "JSONNumber",
    "LabelSpec",
    "RecordTooLarge",
    "RepeatedKey",
    "Schema",
    "TableValidation",
    "builtin_schemas",
    "group_unit",
    "is_missing",
    "load_schema",
    "make_feature",
    "parse_record_json",
    "parse_schema",
    "records_frame",
    "short_list",
    "short_repr",
    "unique_keys",
]
