"""One configuration, built from the CLI or in Python, saved as JSON beside the weights.

A saved ``config.json`` is enough (with the weights and preprocessing state) to
rebuild the model, the way nanoGPT checkpoints carry their model config.

Example
-------
>>> cfg = Config(modalities=("tabular",))
>>> Config.from_dict(cfg.to_dict()) == cfg
True
"""

from __future__ import annotations

import math
import numbers
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields

from fusion import checks
from fusion.checks import Where
from fusion.data.synthetic import DEFAULT_N as SYNTHETIC_N
from fusion.nets.registry import DEFAULT_BACKBONE, PRETRAINED, backbone_spec
from fusion.schema import short_repr

MODALITIES = ("image", "tabular")
MODELS = ("fusion", "xgboost")
FUSIONS = ("joint", "stacked", "gbm", "auto")
# Strategies whose image model is a frozen pretrained backbone (auto: its candidates).
FROZEN_IMAGE = ("stacked", "gbm", "auto")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
# The largest image side: four times the largest input of any registered backbone
# (224), and already 1 MB per film in the cache and ~4 MB per film in a float batch.
# A film is never larger on the model's side than that for a chest X-ray classifier;
# 100,000 (a typo or a hand-edited config.json) would cost 10 GB per film.
MAX_IMAGE_SIZE = 1024
# The widest layer and the deepest record MLP: bounds checked before any network is
# allocated (a hand-edited width of 10**9 would ask for 80 GB).
MAX_WIDTH = 4096
MAX_LAYERS = 8
MAX_SEED = 2**32 - 1  # numpy's legacy seeding takes no more


def parse_modalities(value) -> tuple[str, ...]:
    """Validate a modality set ("image,tabular", a list, ...) into canonical order.

    Raises
    ------
    TypeError
        Neither a string nor a list of strings.
    ValueError
        Empty, unknown or repeated modalities; the message lists the accepted ones.
    """
    if isinstance(value, str):
        items = [m.strip() for m in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(m, str) for m in value):
        items = list(value)
    else:
        raise TypeError(
            f"modalities must be a string or a list of strings of {list(MODALITIES)}; got {short_repr(value)}"
        )
    unknown = [m for m in items if m not in MODALITIES]
    if unknown or not items or len(set(items)) != len(items):
        raise ValueError(
            f"modalities must be a non-empty set of {list(MODALITIES)} without repeats; got {short_repr(value)}"
        )
    return tuple(m for m in MODALITIES if m in items)


@dataclass
class DataConfig:
    """Where the data comes from.

    ``path`` None means the embedded synthetic cohort of ``synthetic_n`` images.
    """

    path: str | None = None
    schema: str | None = None
    synthetic_n: int = SYNTHETIC_N
    val_fraction: float = 0.15
    test_fraction: float = 0.15


@dataclass
class ImageConfig:
    """The image branch.

    ``freeze``: how many blocks of the backbone (from the input side) stay fixed.
    ``weights``: a local state-dict file for the backbone; ``pretrained``: "imagenet"
    (torchvision's weights, only if already on this machine); ``init_from``: the run
    folder of an earlier fusion model whose image branch starts this one.
    """

    backbone: str = DEFAULT_BACKBONE
    image_size: int | None = None  # None: the backbone's default_size
    freeze: int = 0
    pretrained: str | None = None
    weights: str | None = None
    init_from: str | None = None
    augment: bool = True


@dataclass
class TabularConfig:
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1


@dataclass
class CalibrationConfig:
    """Calibration and operating points, fitted on the validation split after training.

    ``healthy``: class names that are not a disease (no operating point is set for
    them); every other class gets a threshold reaching ``target_sensitivity`` on the
    validation split.
    """

    enabled: bool = True
    target_sensitivity: float = 0.95
    healthy: tuple[str, ...] = ("normal", "no_finding")


@dataclass
class HeadConfig:
    """The late-fusion head; ``aux_weight`` weighs each branch's auxiliary loss."""

    hidden: int = 64
    dropout: float = 0.2
    modality_dropout: float = 0.25
    aux_weight: float = 0.5


@dataclass
class TrainConfig:
    """How the networks train.

    ``epochs`` None (the default) follows the data: enough epochs for about ``steps``
    optimisation steps, and at least ``min_epochs``, so that 340 films train as long
    (in steps) as 2,000 do, rather than for the same number of passes.
    """

    epochs: int | None = None
    steps: int = 800
    min_epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 6
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    # XGBoost baseline: tuned by patient-grouped inner CV of the training part, or (with
    # xgb_tune off) these fixed settings with early stopping on the validation split
    xgb_tune: bool = True
    xgb_trees: int = 400
    xgb_depth: int = 4
    xgb_lr: float = 0.05


@dataclass
class Config:
    """Everything that defines a training run."""

    modalities: tuple[str, ...] = ("image", "tabular")
    model: str = "fusion"
    fusion: str = "joint"
    data: DataConfig = field(default_factory=DataConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    tabular: TabularConfig = field(default_factory=TabularConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> Config:
        """Check every value, and fill the defaults that depend on others (the image
        size of the chosen backbone).

        Every message starts with the field it names (``train.epochs must be ...``),
        so :meth:`from_dict` can say where in a file the field is.

        Raises
        ------
        TypeError
            A value of the wrong type (``train.lr = "0.1"``), naming the field.
        ValueError
            Naming the field at fault (``train.epochs``, ``image.backbone``...) and what
            it accepts.
        """
        self._check_types()
        self.modalities = parse_modalities(self.modalities)
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}; got {short_repr(self.model)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}; got {short_repr(self.fusion)}")
        if self.model == "xgboost" and self.modalities != ("tabular",):
            raise ValueError(f"model 'xgboost' is tabular only: modalities must be ('tabular',); got {self.modalities}")
        try:
            spec = backbone_spec(self.image.backbone)
        except ValueError as err:
            raise ValueError(f"image.backbone: {err}") from None
        if self.fusion in FROZEN_IMAGE and "image" in self.modalities and not self.starting_weights:
            # These strategies read the film through a frozen pretrained backbone: the
            # shipped chest X-ray weights unless others are given.
            if "cxr" not in spec.shipped:
                raise ValueError(
                    f"fusion {self.fusion!r} reads films through a frozen pretrained backbone; backbone "
                    f"{spec.name!r} has no shipped weights: set image.pretrained, image.weights or image.init_from"
                )
            self.image.pretrained = "cxr"
        if self.image.pretrained not in (None, *PRETRAINED):
            raise ValueError(
                f"image.pretrained must be one of {list(PRETRAINED)} or unset; got {short_repr(self.image.pretrained)}"
            )
        if self.image.image_size is None:
            self.image.image_size = spec.input_size(self.image.pretrained)
        sources = [f"image.{s}" for s in ("pretrained", "weights", "init_from") if getattr(self.image, s)]
        if len(sources) > 1:
            raise ValueError(
                f"image.pretrained, image.weights, image.init_from: set at most one of them; got {sources}"
            )
        if self.train.device not in DEVICES:
            raise ValueError(f"train.device must be one of {DEVICES}; got {short_repr(self.train.device)}")
        if self.train.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}; got {short_repr(self.train.precision)}")
        self._check_ranges()
        return self

    def _check_types(self) -> None:
        """Each field's value against its declared type (the dataclass annotations say
        it once); lists are accepted for tuples and made tuples."""
        for name in ("model", "fusion"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string; got {short_repr(getattr(self, name))}")
        for name, cls in SECTIONS.items():
            section = getattr(self, name)
            if not isinstance(section, cls):
                raise TypeError(f"{name} must be a {cls.__name__}; got {short_repr(section)}")
            for key, hint in typing.get_type_hints(cls).items():
                value = getattr(section, key)
                if not _fits(value, hint):
                    raise TypeError(f"{name}.{key} must be {_describe(hint)}; got {short_repr(value)}")
        self.tabular.hidden = tuple(self.tabular.hidden)
        self.calibration.healthy = tuple(self.calibration.healthy)

    def _check_ranges(self) -> None:
        """Each number within what training and loading can honour."""
        d, img, tab, head, t = self.data, self.image, self.tabular, self.head, self.train
        checks.integer(d.synthetic_n, Where("", "data.synthetic_n"), low=1)
        for name in ("val_fraction", "test_fraction"):
            checks.number(getattr(d, name), Where("", f"data.{name}"), low=0, high=1, high_open=True)
        if d.val_fraction + d.test_fraction >= 1:
            raise ValueError(
                f"data.val_fraction + data.test_fraction must be < 1; got {d.val_fraction + d.test_fraction}"
            )
        checks.integer(img.image_size, Where("", "image.image_size"), low=16, high=MAX_IMAGE_SIZE)
        checks.integer(img.freeze, Where("", "image.freeze"), low=0)
        if not 1 <= len(tab.hidden) <= MAX_LAYERS:
            raise ValueError(
                f"tabular.hidden must list 1 to {MAX_LAYERS} layer widths; got {short_repr(list(tab.hidden))}"
            )
        for i, width in enumerate(tab.hidden):
            checks.integer(width, Where("", f"tabular.hidden[{i}]"), low=1, high=MAX_WIDTH)
        checks.integer(head.hidden, Where("", "head.hidden"), low=1, high=MAX_WIDTH)
        for name, value in (("tabular.dropout", tab.dropout), ("head.dropout", head.dropout)):
            checks.number(value, Where("", name), low=0, high=1, high_open=True)
        checks.number(head.modality_dropout, Where("", "head.modality_dropout"), low=0, high=1, high_open=True)
        checks.number(head.aux_weight, Where("", "head.aux_weight"), low=0)
        for name in ("steps", "min_epochs", "batch_size", "patience", "xgb_trees"):
            checks.integer(getattr(t, name), Where("", f"train.{name}"), low=1)
        if t.epochs is not None:
            checks.integer(t.epochs, Where("", "train.epochs"), low=1)
        checks.number(t.lr, Where("", "train.lr"), low=0, low_open=True)
        checks.number(t.xgb_lr, Where("", "train.xgb_lr"), low=0, low_open=True)
        checks.number(t.weight_decay, Where("", "train.weight_decay"), low=0)
        checks.integer(t.seed, Where("", "train.seed"), low=0, high=MAX_SEED)
        checks.integer(t.xgb_depth, Where("", "train.xgb_depth"), low=1, high=64)
        checks.number(
            self.calibration.target_sensitivity,
            Where("", "calibration.target_sensitivity"),
            low=0,
            high=1,
            low_open=True,
            high_open=True,
        )

    def epochs_for(self, n_train: int) -> int:
        """The number of epochs a network trains on ``n_train`` rows: ``train.epochs``
        when set, else enough for ``train.steps`` steps (at least ``train.min_epochs``)."""
        t = self.train
        if t.epochs is not None:
            return t.epochs
        per_epoch = max(1, math.ceil(n_train / t.batch_size))
        return max(t.min_epochs, math.ceil(t.steps / per_epoch))

    @property
    def starting_weights(self) -> str | None:
        """Where the image backbone starts from, in the form
        :func:`fusion.nets.backbones.create_backbone` takes: a published weights name, a
        weights file, or an earlier run's folder; None from scratch."""
        return self.image.pretrained or self.image.weights or self.image.init_from

    def to_dict(self) -> dict:
        out = asdict(self)
        out["modalities"] = list(self.modalities)
        out["tabular"]["hidden"] = list(self.tabular.hidden)
        out["calibration"]["healthy"] = list(self.calibration.healthy)
        return out

    @classmethod
    def from_dict(cls, data: dict, *, where: Where | None = None) -> Config:
        """Rebuild from :meth:`to_dict` output, every field checked (type and range).

        ``where``: the place the dict was read from, for messages (default ``config``;
        a model folder's loader gives ``.../config.json: config``).

        Raises
        ------
        ValueError
            An unknown key (it would be a silently ignored setting), a value of the
            wrong type or out of range, naming the key (``config.train.lr must be
            ...``).
        """
        where = where or Where("", "config")
        data = checks.keys(data, where, required=(), optional=[f.name for f in fields(cls)])
        kwargs = {}
        for key, value in data.items():
            if key in SECTIONS:
                known = [f.name for f in fields(SECTIONS[key])]
                kwargs[key] = SECTIONS[key](**checks.keys(value, where / key, required=(), optional=known))
            else:
                kwargs[key] = value
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}.{err}") from None


SECTIONS = {
    "data": DataConfig,
    "image": ImageConfig,
    "tabular": TabularConfig,
    "head": HeadConfig,
    "train": TrainConfig,
    "calibration": CalibrationConfig,
}
_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", type(None): "null"}


def _fits(value, hint) -> bool:
    """Whether ``value`` is of the annotated type ``hint`` (a bool is no number)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, (list, tuple)) and all(_fits(v, item) for v in value)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:  # a path may be given as a Path
        return isinstance(value, (str, os.PathLike))
    return value is None if hint is type(None) else isinstance(value, hint)


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    return _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))
