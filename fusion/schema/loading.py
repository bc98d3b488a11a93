"""Schemas from TOML text, files and the built-in folder, every key checked."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from fusion.schema.core import LabelSpec, Schema
from fusion.schema.kinds import FEATURE_TYPES, Feature, make_feature
from fusion.schema.values import raw_str as _raw_str
from fusion.schema.values import short_list
from fusion.schema.values import short_repr as _short

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib


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
        return make_feature(
            name,
            _get(spec, "type", str, where),
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
