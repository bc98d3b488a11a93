"""The errors fusion raises about a value, with what is at fault as data.

Every refusal names the field, the value and what is accepted in its message, for a
person; the error carries the same as attributes, for code: the service finds the form
field of a refused input and the command lines the flag of a refused setting by reading
them, never by parsing the message.

- ``field``: what is at fault, as the message names it: a record feature (``"spo2"``),
  ``"image"``, ``"record"`` (the record as a whole), a configuration field
  (``"train.lr"``), an environment variable (``"WORLD_SIZE"``), a schema's table and key
  (``"[features.age] range"``), a key inside a saved file (``"config.image.image_size"``);
  None when the error is about nothing narrower than the whole input;
- ``value``: the value refused (:data:`MISSING` when there is none to show: a value
  absent, a conflict between settings);
- ``accepted``: what would have been accepted, in words (None when the message says
  no more than that the value is refused);
- ``file``: the file the value was read from (a schema, a model folder's
  ``config.json``), or None;
- ``related``: other fields the message names as at fault together with ``field``
  (``model 'xgboost' is tabular only: modalities must be ...``); :attr:`FusionError.fields`
  lists them all.

The message stays the sentence it always was (``str(err)``), so code that only prints
errors needs nothing. Every class but :class:`MissingFileError` is a ``ValueError``
(the scikit-learn convention for a wrong value) through :class:`FusionError`:
``except ValueError`` keeps working everywhere.

===================  ==========================================================
``InputError``       a record's value, a record or an image (``predict``,
                     ``explain``, the service's form, ``--record``, ``--image``)
``ImageError``       an image (an ``InputError`` whose field is ``"image"``)
``SchemaError``      a schema (``--schema``, ``schema.toml``, ``parse_schema``)
``ConfigError``      a setting of the run: a configuration field (the command
                     lines add its flag), a loader's argument, an environment
                     variable
``ModelFolderError`` a saved model folder or state (a file's key out of range, a
                     file missing, changed or malformed)
``MissingFileError`` a file a setting supplies is absent: a ``FileNotFoundError``
                     with the same attributes, not a ``ValueError``
===================  ==========================================================

Example
-------
>>> err = InputError("'age' must be a number in [0, 120] years; got 'abc'", field="age", value="abc",
...                  accepted="a number in [0, 120] years")
>>> isinstance(err, ValueError), err.field, err.value
(True, 'age', 'abc')
>>> ImageError("image <3 bytes>: not a readable image").field
'image'
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "MISSING",
    "ConfigError",
    "FusionError",
    "ImageError",
    "InputError",
    "MissingFileError",
    "ModelFolderError",
    "SchemaError",
]


class _Missing:
    """No value to show (the error is about something absent, or several settings)."""

    _instance: ClassVar[_Missing | None] = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self):
        # One instance, in every process: ``err.value is MISSING`` holds after pickling.
        return (_Missing, ())


MISSING: Any = _Missing()


class _Carries:
    """What every error of the family holds beside its message (the attributes are
    described in the module docstring); mixed into a built-in exception class."""

    default_field: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        value: Any = MISSING,
        accepted: str | None = None,
        file: str | None = None,
        related: tuple[str, ...] | list[str] = (),
    ):
        super().__init__(message)
        self.field = field if field is not None else self.default_field
        self.value = value
        self.accepted = accepted
        self.file = None if file is None else str(file)
        self.related = tuple(related)

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field the error is about: :attr:`field`, then :attr:`related`."""
        return tuple(dict.fromkeys(f for f in (self.field, *self.related) if f is not None))

    def __reduce__(self):
        # Errors cross process boundaries (an error on rank 0 is raised on every rank of a
        # torchrun job): keep the attributes through the standard machinery.
        return (_rebuild, (type(self), str(self), self._attributes()))

    def _attributes(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "value": self.value,
            "accepted": self.accepted,
            "file": self.file,
            "related": self.related,
        }

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._attributes().items() if _shown(v))
        return f"{type(self).__name__}({str(self)!r}{extra})"


def _shown(value: Any) -> bool:
    """Whether ``repr`` shows an attribute: one that says something."""
    return not (value is None or value is MISSING or (isinstance(value, tuple) and not value))


def _rebuild(cls: type, message: str, attributes: dict[str, Any]) -> BaseException:
    return cls(message, **attributes)


class FusionError(_Carries, ValueError):
    """A value the library refuses; ``str(err)`` is the message a person reads.

    Parameters
    ----------
    message : str
        The whole sentence, naming the field, the value and what is accepted.
    field : str, optional
        What is at fault, as the message names it (the class's ``default_field``
        when not given).
    value : object, optional
        The value refused (:data:`MISSING`: none to show).
    accepted : str, optional
        What would have been accepted, in words.
    file : str, optional
        The file the value was read from.
    related : sequence of str
        Other fields at fault with ``field``, as the message names them, in its order.
    """


class InputError(FusionError):
    """A record's value, a record or an image given to a model: ``field`` is the
    feature's name, ``"record"`` (the record as a whole) or ``"image"``."""


class ImageError(InputError):
    """An image that cannot be read or used (missing, not a file, too large, corrupt):
    ``field`` is ``"image"``."""

    default_field: ClassVar[str | None] = "image"


class SchemaError(FusionError):
    """A schema: ``field`` names the table and the key (``"[features.age] range"``),
    ``file`` the schema file when it was read from one."""


class ConfigError(FusionError):
    """A setting of the run: a configuration field by its dotted name (``"train.lr"``),
    an argument of the dataset loaders (``"memory_map"``) or an environment variable
    the run reads (``"WORLD_SIZE"``). The command lines name the flag of a field that
    has one (:data:`fusion.cli.FIELD_FLAGS`)."""


class ModelFolderError(FusionError):
    """A saved model folder, or state saved as a model folder saves it: ``file`` names
    the file and ``field`` the key inside it (``"config.image.image_size"``)."""


class MissingFileError(_Carries, FileNotFoundError):
    """A file a setting supplies is not on this machine: a ``FileNotFoundError`` (the
    value is not wrong, the file is absent), carrying the attributes of the family;
    ``field`` names the setting that supplies the file (``"image.weights"``)."""
