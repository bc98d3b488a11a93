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
from dataclasses import asdict, dataclass, field, fields

from fusion.data.synthetic import DEFAULT_N as SYNTHETIC_N
from fusion.nets.registry import DEFAULT_BACKBONE, PRETRAINED, backbone_spec

MODALITIES = ("image", "tabular")
MODELS = ("fusion", "xgboost")
FUSIONS = ("joint", "stacked", "gbm", "auto")
# Strategies whose image model is a frozen pretrained backbone (auto: its candidates).
FROZEN_IMAGE = ("stacked", "gbm", "auto")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def parse_modalities(value) -> tuple[str, ...]:
    """Validate a modality set ("image,tabular", a list, ...) into canonical order.

    Raises
    ------
    ValueError
        Empty, unknown or repeated modalities; the message lists the accepted ones.
    """
    items = [m.strip() for m in value.split(",")] if isinstance(value, str) else list(value)
    unknown = [m for m in items if m not in MODALITIES]
    if unknown or not items or len(set(items)) != len(items):
        raise ValueError(f"modalities must be a non-empty set of {list(MODALITIES)} without repeats; got {value!r}")
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

        Raises
        ------
        ValueError
            Naming the field at fault (``train.epochs``, ``image.backbone``...) and what
            it accepts.
        """
        self.modalities = parse_modalities(self.modalities)
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}; got {self.model!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}; got {self.fusion!r}")
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
                f"image.pretrained must be one of {list(PRETRAINED)} or unset; got {self.image.pretrained!r}"
            )
        if self.image.image_size is None:
            self.image.image_size = spec.input_size(self.image.pretrained)
        if self.image.image_size < 16:
            raise ValueError(f"image.image_size must be >= 16; got {self.image.image_size}")
        sources = [f"image.{s}" for s in ("pretrained", "weights", "init_from") if getattr(self.image, s)]
        if len(sources) > 1:
            raise ValueError(f"set at most one of image.pretrained, image.weights, image.init_from; got {sources}")
        if self.train.device not in DEVICES:
            raise ValueError(f"train.device must be one of {DEVICES}; got {self.train.device!r}")
        if self.train.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}; got {self.train.precision!r}")
        for name in ("epochs", "steps", "min_epochs", "batch_size", "patience"):
            value = getattr(self.train, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"train.{name} must be an integer >= 1; got {value!r}")
        if not (self.train.lr > 0 and math.isfinite(self.train.lr)):
            raise ValueError(f"train.lr must be a finite number > 0; got {self.train.lr}")
        if not 0 < self.calibration.target_sensitivity < 1:
            raise ValueError(
                f"calibration.target_sensitivity must be in (0, 1); got {self.calibration.target_sensitivity}"
            )
        if not 0 <= self.head.modality_dropout < 1:
            raise ValueError(f"head.modality_dropout must be in [0, 1); got {self.head.modality_dropout}")
        return self

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
    def from_dict(cls, data: dict) -> Config:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error (they would be
        silently ignored settings otherwise)."""
        sections = {
            "data": DataConfig,
            "image": ImageConfig,
            "tabular": TabularConfig,
            "head": HeadConfig,
            "train": TrainConfig,
            "calibration": CalibrationConfig,
        }
        top = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - top)
        if unknown:
            raise ValueError(f"config has unknown key(s) {unknown}; known: {sorted(top)}")
        kwargs = {}
        for key, value in data.items():
            if key in sections:
                known = {f.name for f in fields(sections[key])}
                bad = sorted(set(value) - known)
                if bad:
                    raise ValueError(f"config section {key!r} has unknown key(s) {bad}; known: {sorted(known)}")
                if key == "tabular" and "hidden" in value:
                    value = {**value, "hidden": tuple(value["hidden"])}
                if key == "calibration" and "healthy" in value:
                    value = {**value, "healthy": tuple(value["healthy"])}
                kwargs[key] = sections[key](**value)
            elif key == "modalities":
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = value
        return cls(**kwargs)
