"""Records given as JSON text (``fusion.predict --record``, the service's ``record``
field): one parser with one size limit, nesting limit and repeated-key check."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from fusion.errors import InputError
from fusion.schema.values import short_repr as _short

# A JSON record is a few hundred bytes; a megabyte of "record" is not one. The one
# limit of every reader of JSON records (``--record``, the service's ``record`` field).
MAX_RECORD_BYTES = 64 * 1024
# A record is one object of plain values: 2 lets a list or object where a value belongs
# reach its field's own message; deeper text is refused before the parser recurses.
MAX_RECORD_DEPTH = 2
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


class RecordTooLarge(InputError):
    """A JSON record over :data:`MAX_RECORD_BYTES` (the service answers 413); its
    field is ``"record"``."""

    default_field = "record"


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
    float's range stay :class:`JSONNumber` text for :meth:`fusion.schema.core.Schema.validate_record` to
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
        raise RecordTooLarge(
            f"{origin} is {size} bytes; a record is at most {MAX_RECORD_BYTES} bytes",
            value=size,
            accepted=f"at most {MAX_RECORD_BYTES} bytes",
        )
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _refused(f"{origin} must be UTF-8 text holding a JSON object") from None
    if not data.strip():
        return None
    depth = _nesting(data)
    if depth > MAX_RECORD_DEPTH:
        raise _refused(
            f"{origin} is nested {depth} levels deep; a record is one JSON object of plain values "
            f'(numbers, strings, null), such as {{"age": 61}}'
        )

    try:
        record = json.loads(data, object_pairs_hook=unique_keys, parse_int=_json_int, parse_float=_json_float)
    except RepeatedKey as err:
        raise _refused(f"{origin} has the key {_short(err.key)} more than once; each field may appear once") from None
    except json.JSONDecodeError as err:
        raise _refused(f"{origin} is not valid JSON ({err}); give a JSON object such as '{{\"age\": 61}}'") from None
    if not isinstance(record, dict):
        raise _refused(f"{origin} must be a JSON object keyed by feature name; got a JSON {_JSON_TYPES[type(record)]}")
    return record


def _refused(message: str) -> InputError:
    """A record given as text that is no record: the field is the record."""
    return InputError(message, field="record", accepted='a JSON object keyed by feature name, such as {"age": 61}')


_JSON_TYPES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    JSONNumber: "number",
    bool: "boolean",
    type(None): "null",
}
