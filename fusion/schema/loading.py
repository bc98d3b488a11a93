"""Schemas from TOML text, files and the built-in folder, every key checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fusion.errors import SchemaError
from fusion.schema.core import LabelSpec, Schema
from fusion.schema.kinds import FEATURE_TYPES, Feature, make_feature
from fusion.schema.values import raw_str as _raw_str
from fusion.schema.values import short_list
from fusion.schema.values import short_repr as _short

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class _Where:
    """A table of a schema being read (``""``: the top level): messages name it as
    ``"<origin>: <table>"``; its errors carry the table and the key as their field
    (``"[features.age] range"``) and the origin as their file."""

    origin: str
    table: str = ""

    def __str__(self) -> str:
        return f"{self.origin}: {self.table or 'the top level'}"

    def sub(self, suffix: str) -> _Where:
        """A part of this table (``[label] classes``, ``[label] class 'covid'``)."""
        return _Where(self.origin, f"{self.table} {suffix}")

    def refuse(self, message: str, key: str | None = None, **attributes: Any) -> SchemaError:
        field = " ".join(part for part in (self.table, key) if part) or None
        return SchemaError(message, field=field, file=self.origin, **attributes)

    def place(self, err: ValueError) -> SchemaError:
        """``err``, raised about this table without saying where it is (a feature or the
        label refusing its declaration), said in the file's terms."""
        return _placed(err, f"{self}: {err}", self.origin)


def _placed(err: ValueError, message: str, origin: str) -> SchemaError:
    field = getattr(err, "field", None)
    attributes = {"value": err.value, "accepted": err.accepted} if isinstance(err, SchemaError) else {}
    return SchemaError(message, field=field, file=origin, **attributes)


def _check_keys(spec: Mapping[str, Any], allowed: set[str], where: _Where) -> None:
    """A misspelt key would silently be a default: refuse it, listing the allowed ones."""
    extra = sorted(set(spec) - allowed)
    if extra:
        raise where.refuse(
            f"{where} has unknown key(s) {short_list(extra)}; allowed: {sorted(allowed)}",
            value=extra,
            accepted=f"the keys {sorted(allowed)}",
        )


_TYPE_NAMES = {str: "a string", list: "a list", dict: "a table", int: "an integer", float: "a number"}


def _get(
    spec: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    where: _Where,
    default: Any = None,
    *,
    required: bool = False,
) -> Any:
    """``spec[key]`` checked to be of ``kind``; a wrong type is refused naming the table
    and the key (a number where a column name belongs, say), never passed on."""
    if key not in spec:
        if required:
            raise where.refuse(f"{where} needs the key {key!r}", key)
        return default
    value = spec[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise where.refuse(
            f"{where}: {key!r} must be {expected}; got {_short(value)}", key, value=value, accepted=expected
        )
    if isinstance(value, str) and kinds == (str,) and not value.strip():
        raise where.refuse(f"{where}: {key!r} must not be empty", key, value=value, accepted="a non-empty string")
    return value


def _true_or_false(spec: Mapping[str, Any], key: str, where: _Where) -> bool:
    """An optional TOML boolean (default false); ``1`` or ``"yes"`` are refused, not read as true."""
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise where.refuse(
            f"{where}: {key!r} must be true or false; got {_short(value)}", key, value=value, accepted="true or false"
        )
    return value


def _table(doc: Mapping[str, Any], key: str, where: _Where, *, required: bool = False) -> dict:
    return _get(doc, key, dict, where, {}, required=required)


def _str_list(spec: Mapping[str, Any], key: str, where: _Where) -> tuple:
    values = _get(spec, key, list, where, [])
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise where.refuse(
                f"{where}: every entry of {key!r} must be a string or number; got {_short(v)}",
                key,
                value=v,
                accepted="a string or number",
            )
    return tuple(values)


def _tokens(spec: Mapping[str, Any], key: str, where: _Where) -> tuple[str, ...]:
    """A list of missing tokens: strings (a number is taken as its text, ``0`` as ``"0"``)."""
    return tuple(_raw_str(t) if not isinstance(t, str) else t for t in _str_list(spec, key, where))


def _feature_from_toml(name: str, spec: Any, origin: str) -> Feature:
    where = _Where(origin, f"[features.{name}]")
    if not isinstance(spec, Mapping):
        raise where.refuse(f"{where} must be a table (type, unit, range, ...); got {_short(spec)}", value=spec)
    _check_keys(
        spec,
        {"type", "unit", "range", "categories", "missing", "missing_tokens", "out_of_range", "bands", "description"},
        where,
    )
    if "type" not in spec:
        raise where.refuse(
            f"{where} needs a 'type', one of {FEATURE_TYPES}", "type", accepted=f"one of {FEATURE_TYPES}"
        )
    rng = _get(spec, "range", list, where)
    if rng is not None:
        if len(rng) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng):
            accepted = "[low, high] numbers"
            raise where.refuse(
                f"{where}: 'range' must be {accepted}; got {_short(rng)}", "range", value=rng, accepted=accepted
            )
        rng = (float(rng[0]), float(rng[1]))
    bands = _get(spec, "bands", list, where, [])
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bands):
        accepted = "a list of numbers"
        raise where.refuse(
            f"{where}: 'bands' must be {accepted}; got {_short(bands)}", "bands", value=bands, accepted=accepted
        )
    try:
        return make_feature(
            name,
            _get(spec, "type", str, where),
            unit=_get(spec, "unit", str, where),
            range=rng,
            categories=tuple(_raw_str(c) for c in _str_list(spec, "categories", where)),
            missing=_get(spec, "missing", str, where, "indicator"),
            missing_tokens=_tokens(spec, "missing_tokens", where),
            out_of_range=_get(spec, "out_of_range", str, where, "error"),
            bands=tuple(float(v) for v in bands),
            description=_get(spec, "description", str, where, ""),
        )
    except SchemaError as err:
        if err.file is not None:  # refused above, already naming the file and the table
            raise
        raise where.place(err) from None


def _label_from_toml(spec: Mapping[str, Any], origin: str) -> LabelSpec:
    where = _Where(origin, "[label]")
    _check_keys(spec, {"column", "classes", "default"}, where)
    column = _get(spec, "column", str, where, required=True)
    classes = _get(spec, "classes", dict, where, required=True)
    values: dict[str, tuple[str, ...]] = {}
    prefixes: dict[str, tuple[str, ...]] = {}
    for cls, mapping in classes.items():
        if isinstance(mapping, list):
            values[cls] = tuple(_raw_str(v) for v in _str_list(classes, cls, where.sub("classes")))
        elif isinstance(mapping, Mapping):
            at = where.sub(f"class {cls!r}")
            _check_keys(mapping, {"values", "prefixes"}, at)
            values[cls] = tuple(_raw_str(v) for v in _str_list(mapping, "values", at))
            prefixes[cls] = tuple(str(p) for p in _str_list(mapping, "prefixes", at))
        else:
            raise where.refuse(
                f"{where}: class {cls!r} must map to a list of raw values or "
                f"{{values = [...], prefixes = [...]}}; got {_short(mapping)}",
                f"classes.{cls}",
                value=mapping,
                accepted="a list of raw values or {values = [...], prefixes = [...]}",
            )
    try:
        return LabelSpec(column=column, values=values, prefixes=prefixes, default=_get(spec, "default", str, where))
    except SchemaError as err:
        if err.file is not None:
            raise
        raise where.place(err) from None


def _excluded_from_toml(spec: Mapping[str, Any], origin: str) -> dict[str, str]:
    where = _Where(origin, "[excluded]")
    excluded = {}
    for column, entry in spec.items():
        if isinstance(entry, Mapping):
            _check_keys(entry, {"reason"}, where.sub(repr(column)))
            entry = entry.get("reason")
        if isinstance(entry, str) and entry.strip():
            reason = entry
        else:
            raise where.refuse(
                f'{where}: {column!r} needs a reason: a string or {{ reason = "..." }}; got {_short(entry)}',
                column,
                value=entry,
                accepted='a string or { reason = "..." }',
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
    SchemaError
        A ``ValueError``: invalid TOML, an unknown table or key, a wrong type or value,
        or a missing required key; ``field`` names the table and the key
        (``"[features.age] range"``), ``file`` the origin.
    """
    if not isinstance(text, str):
        raise TypeError(f"schema text must be a string; got {type(text).__name__}")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SchemaError(f"{origin}: not valid TOML: {err}", file=origin) from None
    top = _Where(origin)
    _check_keys(doc, {"name", "description", "label", "group", "image", "features", "excluded", "missing"}, top)
    if "label" not in doc:
        raise SchemaError(
            f"{origin}: a schema needs a [label] table (column and classes)", field="[label]", file=origin
        )
    label = _table(doc, "label", top)
    group = _table(doc, "group", top)
    group_at, image_at = _Where(origin, "[group]"), _Where(origin, "[image]")
    _check_keys(group, {"column"}, group_at)
    image = _table(doc, "image", top)
    _check_keys(image, {"column", "folder", "allow_outside", "channels", "flip_rotate", "detail"}, image_at)
    features = _table(doc, "features", top)
    missing, missing_at = _table(doc, "missing", top), _Where(origin, "[missing]")
    _check_keys(missing, {"tokens"}, missing_at)
    try:
        return Schema(
            name=_get(doc, "name", str, top, Path(origin).stem),
            description=_get(doc, "description", str, top, ""),
            label=_label_from_toml(label, origin),
            group=_get(group, "column", str, group_at, required=bool(group)),
            # channels, flip_rotate and detail alone may describe the images of an .npz, which has no image column
            image_column=_get(
                image, "column", str, image_at, required=bool(image.keys() - {"channels", "flip_rotate", "detail"})
            ),
            image_folder=_get(image, "folder", str, image_at),
            image_allow_outside=_true_or_false(image, "allow_outside", image_at),
            image_channels=_get(image, "channels", int, image_at),
            image_flip_rotate=_true_or_false(image, "flip_rotate", image_at),
            image_detail=image.get("detail"),  # checked by Schema, which names [image] detail
            features=tuple(_feature_from_toml(n, s, origin) for n, s in features.items()),
            excluded=_excluded_from_toml(_table(doc, "excluded", top), origin),
            missing_tokens=_tokens(missing, "tokens", missing_at),
            text=text,
        )
    except ValueError as err:
        if isinstance(err, SchemaError) and err.file is not None:  # already naming the file
            raise
        raise _placed(err, f"{origin}: {err}", origin) from None


def _schema_dir():
    """The folder of built-in schemas: ``data/schema`` of a source checkout (editable
    installs, running from the repository), else the copy installed as ``fusion.schemas``."""
    checkout = Path(__file__).resolve().parents[2] / "data" / "schema"
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
