"""What a model folder holds, assembled for saving and read back, checked, for loading.

:mod:`fusion.persistence` writes a folder of bytes whole and verifies every file's
SHA-256 before anything is read; this module knows which files a model's folder has
and what each one says:

- ``config.json``: the library version, the backend, the classes, the modalities the
  model uses and the :class:`~fusion.config.Config` it was asked for (the same
  modalities, but for an ``auto`` model that found one of them added nothing);
- ``preprocessing.json``: the record's preprocessing state (null without the tabular
  modality) and the image state (size, normalisation) consumers outside Python follow;
- ``calibration.json``: the calibration of the probabilities and the operating points;
- ``schema.toml``: the schema the model was trained with, as written;
- the backend's own files (``model.safetensors``, ``xgboost.json``, ...).

Every file the model needs must be listed in the manifest, no file of another model may
lie in the folder, and every value is checked (types, ranges, unique classes, known
modalities, a positive temperature) before anything is built from it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fusion import checks
from fusion.backends import backend_class, backend_name
from fusion.checks import Where
from fusion.config import MAX_IMAGE_SIZE, Config, parse_modalities
from fusion.errors import ModelFolderError
from fusion.evaluation.calibration import Calibration
from fusion.persistence import MANIFEST, ModelFiles, json_bytes, verify_folder
from fusion.preprocessing import TabularPreprocessor
from fusion.schema import parse_schema
from fusion.version import __version__

if TYPE_CHECKING:
    from fusion.backends.base import Backend
    from fusion.schema import Schema

CONFIG = "config.json"
PREPROCESSING = "preprocessing.json"
CALIBRATION = "calibration.json"
SCHEMA = "schema.toml"

# Settings added after model folders were first saved, with the value every folder saved
# before them was trained with. A folder without them loads as it was trained even when
# the default changes later (a new default head must not rebuild an old folder's
# network with another head).
BEFORE_SETTING = {"head": {"kind": "concat"}, "train": {"balance": "weights"}}


@dataclass
class SavedModel:
    """Everything a model folder holds besides the backend's own files.

    Attributes
    ----------
    config : Config
        Validated.
    classes : tuple of str
    modalities : tuple of str
    schema : Schema or None
        None for image-only data without one.
    preprocessor : TabularPreprocessor or None
        None without the tabular modality.
    calibration : Calibration
    """

    config: Config
    classes: tuple[str, ...]
    modalities: tuple[str, ...]
    schema: Schema | None
    preprocessor: TabularPreprocessor | None
    calibration: Calibration


def folder_files(model: SavedModel, backend: Backend) -> dict[str, bytes]:
    """The model folder's files, name -> content (no pickle), less the manifest (which
    :func:`~fusion.persistence.write_folder` makes from these bytes)."""
    meta = {
        "fusion_version": __version__,
        "backend": backend.name,
        "classes": list(model.classes),
        "modalities": list(model.modalities),
        "config": model.config.to_dict(),
    }
    tabular = model.preprocessor.to_dict() if model.preprocessor else None
    files = {
        CONFIG: json_bytes(meta),
        PREPROCESSING: json_bytes({"tabular": tabular, "image": backend.image_state}),
        CALIBRATION: json_bytes(model.calibration.to_dict()),
    }
    if model.schema is not None:
        files[SCHEMA] = model.schema.text.encode("utf-8")
    return {**files, **backend.save()}


def read_folder(folder: str | Path) -> tuple[SavedModel, str, ModelFiles]:
    """A model folder, verified and checked: what it holds, the name of its backend and
    the verified files the backend loads its own state from.

    Warns (``UserWarning``, pointing at the caller of ``FusionClassifier.load``) when
    another version of fusion saved the folder.

    Raises
    ------
    FileNotFoundError
        No folder, or no manifest.
    ValueError
        Not a folder (a file, a FIFO, a symlink loop); a file missing, unlisted,
        changed or malformed; a value out of range: naming the file and the key.
    """
    files = verify_folder(folder)
    _warn_if_other_version(files)
    config, classes, modalities, name = _read_config(files)
    _check_listing(files, backend_class(name).files(modalities), modalities, name)
    schema = parse_schema(files.text(SCHEMA), origin=files.origin(SCHEMA)) if SCHEMA in files else None
    preprocessor = _read_preprocessing(files, config, modalities, schema)
    calibration = Calibration.from_dict(files.json(CALIBRATION), classes, where=Where(files.origin(CALIBRATION)))
    return SavedModel(config, classes, modalities, schema, preprocessor, calibration), name, files


def _warn_if_other_version(files: ModelFiles) -> None:
    saved = files.manifest["fusion_version"]
    if saved != __version__:
        warnings.warn(
            f"{files.folder} was saved by fusion {saved}; this is fusion {__version__} "
            f"(same model format {files.manifest['format_version']}): predictions may differ slightly",
            stacklevel=4,  # here, read_folder, FusionClassifier.load, its caller
        )


def _read_config(files: ModelFiles) -> tuple[Config, tuple[str, ...], tuple[str, ...], str]:
    """``config.json``, checked: the configuration, classes, modalities and backend.

    ``config`` is what the model was asked to be; ``backend`` and ``modalities`` what it
    is. They agree but for ``fusion`` "auto", whose outcome is one of its candidates
    (:func:`fusion.backends.auto.candidates`): a fusion strategy on the modalities
    asked for or, when inner CV found that a modality added nothing, a model of the
    other one alone.
    """
    from fusion.backends import ALIASES, BACKENDS
    from fusion.backends.auto import candidates

    where = Where(files.origin(CONFIG))
    meta = checks.keys(
        files.json(CONFIG), where, required=("fusion_version", "backend", "classes", "modalities", "config")
    )
    checks.text(meta["fusion_version"], where / "fusion_version")
    classes = checks.texts(meta["classes"], where / "classes", unique=True, min_length=2)
    config = Config.from_dict(with_earlier_settings(meta["config"]), where=where / "config").resolved()
    try:
        modalities = parse_modalities(list(checks.texts(meta["modalities"], where / "modalities")))
    except ValueError as err:
        accepted = getattr(err, "accepted", None)
        raise (where / "modalities").refuse(f"{where}: {err}", value=meta["modalities"], accepted=accepted) from None
    saved = meta["backend"]
    saved = ALIASES.get(saved, saved) if isinstance(saved, str) else saved  # names before they matched the user's
    name = checks.text(saved, where / "backend", choices=sorted(BACKENDS))
    if config.fusion == "auto" and config.model == "fusion":
        outcomes = [(c.backend, c.modalities) for c in candidates(config.modalities, config.tuning.auto_candidates)]
        if (name, modalities) not in outcomes:
            accepted = " or ".join(f"{b!r} on {list(m)}" for b, m in outcomes)
            raise (where / "backend").refuse(
                f"{where / 'backend'} {name!r} on {where / 'modalities'} {list(modalities)} is not a model that "
                f"config.fusion 'auto' on {list(config.modalities)} chooses among: {accepted}",
                value=[name, list(modalities)],
                accepted=accepted,
            )
        return config, classes, modalities, name
    if modalities != config.modalities:
        raise (where / "modalities").refuse(
            f"{where / 'modalities'} {list(modalities)} differ from config.modalities {list(config.modalities)}",
            value=list(modalities),
            accepted=f"{list(config.modalities)}",
        )
    expected = backend_name(config)
    if name != expected:
        raise (where / "backend").refuse(
            f"{where / 'backend'} is {name!r}, but config.model {config.model!r} with config.fusion "
            f"{config.fusion!r} is trained by {expected!r}",
            value=name,
            accepted=repr(expected),
        )
    return config, classes, modalities, name


def with_earlier_settings(config):
    """A saved configuration with the settings it predates (:data:`BEFORE_SETTING`)
    filled in with the values it was trained with; anything else, a malformed section
    included, is left for :meth:`Config.from_dict` to check."""
    if not isinstance(config, dict):
        return config
    out = dict(config)
    for section, values in BEFORE_SETTING.items():
        saved = out.get(section, {})
        if isinstance(saved, dict):
            out[section] = {**values, **saved}
    return out


def _model_file_names() -> frozenset[str]:
    """Every name a file of a model folder can have, whatever the model."""
    from fusion.backends import BACKENDS

    names = {CONFIG, PREPROCESSING, CALIBRATION, SCHEMA}
    for name in BACKENDS:
        backend = backend_class(name)
        if hasattr(backend, "files"):  # auto saves the backend it chose, never itself
            for modalities in (("image",), ("tabular",), ("image", "tabular")):
                names.update(backend.files(modalities))
    return frozenset(names)


def _check_listing(files: ModelFiles, backend_files: tuple[str, ...], modalities: tuple[str, ...], name: str) -> None:
    """Every file the model needs is listed; no file of a model lies in the folder
    unlisted (an unlisted calibration.json would be silently skipped, a stale file of
    another model would describe a model the folder does not hold)."""
    needed = {CONFIG, PREPROCESSING, CALIBRATION, *backend_files, *([SCHEMA] if "tabular" in modalities else [])}
    every = _model_file_names()
    stray = sorted((files.present & every) - files.listed)
    if stray:
        raise ModelFolderError(
            f"{files.folder}: holds {stray[0]}, which {MANIFEST} does not list (a file of another model, or one "
            "added after saving): refusing to load the folder",
            file=files.origin(stray[0]),
        )
    missing = sorted(needed - files.listed)
    if missing:
        raise ModelFolderError(
            f"{files.folder}: {MANIFEST} does not list {missing[0]}, which this {name} model needs",
            file=files.origin(MANIFEST),
            value=missing[0],
        )
    unused = sorted((files.listed & every) - needed - {SCHEMA})
    if unused:
        raise ModelFolderError(
            f"{files.folder}: {MANIFEST} lists {unused[0]}, which a {name} model does not use",
            file=files.origin(MANIFEST),
            value=unused[0],
        )


def _read_preprocessing(
    files: ModelFiles, config: Config, modalities: tuple[str, ...], schema: Schema | None
) -> TabularPreprocessor | None:
    """``preprocessing.json``, checked: the record's preprocessing (None without the
    tabular modality) and the image state (size, normalisation) of an image model;
    ``modalities`` are the model's (an auto model's may be fewer than it was asked for)."""
    where = Where(files.origin(PREPROCESSING))
    state = checks.keys(files.json(PREPROCESSING), where, required=("tabular", "image"))
    for modality in ("tabular", "image"):
        if modality not in modalities and state[modality] is not None:
            raise (where / modality).refuse(
                f"{where / modality} must be null: the model has no {modality} modality", accepted="null"
            )
    if "image" in modalities:
        # A config.json from before channels existed has none: its model reads gray films.
        _check_image_state(state["image"], where / "image", config.image.image_size, config.image.channels or 1)
    if "tabular" not in modalities:
        return None
    return TabularPreprocessor.from_dict(state["tabular"], schema, where=where / "tabular")


def _check_image_state(state, where: Where, size: int, channels: int = 1) -> None:
    """The image preprocessing consumers outside Python follow: the model's size and
    channels (1, or 3 for colour), a finite mean and a positive std (one number for a
    gray model, one per channel for a colour one)."""
    state = checks.keys(state, where, required=("size", "mean", "std", "channels"), optional=("resize",))
    saved = checks.integer(state["size"], where / "size", low=16, high=MAX_IMAGE_SIZE)
    if saved != size:
        raise (where / "size").refuse(
            f"{where / 'size'} {saved} differs from config.json's config.image.image_size {size}",
            value=saved,
            accepted=str(size),
        )
    saved = checks.integer(state["channels"], where / "channels", low=1, high=3)
    if saved != channels:
        raise (where / "channels").refuse(
            f"{where / 'channels'} {saved} differs from config.json's config.image.channels {channels}",
            value=saved,
            accepted=str(channels),
        )
    if channels == 1:
        checks.number(state["mean"], where / "mean")
        checks.number(state["std"], where / "std", low=0, low_open=True)
    else:
        checks.numbers_list(state["mean"], where / "mean", length=channels)
        checks.numbers_list(state["std"], where / "std", length=channels, low=0, low_open=True)
    if "resize" in state:
        checks.text(state["resize"], where / "resize")
