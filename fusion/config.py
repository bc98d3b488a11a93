"""One configuration, built from the CLI or in Python, saved as JSON beside the weights.

A saved ``config.json`` is enough (with the weights and preprocessing state) to
rebuild the model, the way nanoGPT checkpoints carry their model config.

Each setting is declared once, as a dataclass field made by :func:`setting`: its
default, what it does, the values it accepts and, when the train command sets it, its
flag. The train command's options, the map from a field to its flag that command-line
errors use and the documentation's option table are derived from these declarations
(:func:`settings`; :mod:`fusion.cli`), so a new setting is one field.

What the user set is kept apart from what is derived from it: ``None`` in
``image.image_size``, ``image.pretrained``, ``image.channels``, ``image.flip_rotate``,
``image.detail`` and ``train.epochs`` means "follow the other settings" (or the data), and stays so
however often the configuration is changed and validated. :meth:`Config.resolved`
returns a copy with the derived values filled in (the input size of the backbone or of
its starting weights; the shipped chest X-ray weights of the frozen-backbone
strategies; given the data's, the image channels, whether its images may be
mirrored and turned and the finest detail read of them): what a model is trained with
and what its folder saves.
``train.epochs`` follows the data and is derived when training starts
(:meth:`Config.epochs_for`).

Example
-------
>>> cfg = Config(modalities=("tabular",))
>>> Config.from_dict(cfg.to_dict()) == cfg
True
>>> cfg = Config()
>>> cfg.image.backbone = "densenet169"
>>> cfg.validate().image.image_size is None, cfg.resolved().image.image_size
(True, 224)
"""

from __future__ import annotations

import copy
import functools
import math
import numbers
import os
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from fusion import checks
from fusion.checks import Where
from fusion.data.synthetic import DEFAULT_N as SYNTHETIC_N
from fusion.errors import MISSING, ConfigError
from fusion.nets.heads import DEFAULT_HEAD, HEADS
from fusion.nets.registry import BACKBONES, DEFAULT_BACKBONE, PRETRAINED, backbone_spec
from fusion.schema import short_repr
from fusion.schema.core import MIN_DETAIL

MODALITIES = ("image", "tabular")
# How many times the epochs a network trains for when its images are mirrored and turned
# (image.flip_rotate): eight views of each image take longer to learn.
FLIP_ROTATE_EPOCHS = 3

# What the image branch reads: one gray channel (films) or three colour channels.
CHANNELS = (1, 3)
MODELS = ("fusion", "xgboost")
FUSIONS = ("joint", "stacked", "gbm", "auto")
# Strategies whose image model is a frozen pretrained backbone (auto: its candidates).
FROZEN_IMAGE = ("stacked", "gbm", "auto")
DEVICES = ("auto", "cpu", "cuda")
BALANCES = ("weights", "sampling", "none")
DECISIONS = ("argmax", "balanced")
CONFORMAL_METHODS = ("marginal", "class")  # fusion.evaluation.conformal.METHODS, without its numpy import
PRECISIONS = ("auto", "fp32", "bf16")
# Where a run is tracked besides its folder (fusion.tracking; the "track" extra).
TRACKERS = ("none", "mlflow", "tensorboard")
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
# The models the auto strategy can choose among (fusion.backends.auto.candidates).
AUTO_CANDIDATES = ("joint", "stacked", "gbm", "image_joint", "image_stacked", "image_gbm", "tabular_xgboost")


def setting(
    default: Any,
    *,
    help: str,
    flag: str | None = None,
    choices: tuple | None = None,
    metavar: str | None = None,
    shown: str | None = None,
    parse: Callable[[str], Any] | None = None,
):
    """A configuration field declared once: its default, and how it is described and set.

    Parameters
    ----------
    default : object
        The default value (immutable: a tuple for a list).
    help : str
        What the setting does, in a phrase (the train command's help and the docs).
    flag : str, optional
        The train command's option that sets it; none: set in Python or in a file.
        A boolean's flag switches it from its default (``--no-augment``).
    choices : tuple, optional
        The values it accepts, checked by :meth:`Config.validate` (``None`` stays
        accepted where it is the default) and offered by the command line.
    metavar : str, optional
        How the command line names the value (``N``, ``PATH``).
    shown : str, optional
        The default in words, where the field's ``None`` is derived from other
        settings; ``{default.train.steps}`` names another default.
    parse : callable, optional
        How the command line reads the value, where the field's type does not say
        (a whole number, a decimal number or a string).
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "metavar": metavar, "shown": shown, "parse": parse}
    return field(default=default, metadata=metadata)


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
        accepted = f"a non-empty set of {list(MODALITIES)} without repeats"
        raise ConfigError(
            f"modalities must be {accepted}; got {short_repr(value)}",
            field="modalities",
            value=value,
            accepted=accepted,
        )
    return tuple(m for m in MODALITIES if m in items)


@dataclass
class DataConfig:
    """Where the data come from."""

    path: str | None = setting(
        None,
        flag="--data",
        metavar="PATH",
        help="dataset folder (metadata.csv + images), CSV file or MedMNIST .npz",
        shown="the embedded synthetic cohort",
    )
    schema: str | None = setting(
        None,
        flag="--schema",
        metavar="FILE",
        help="schema TOML file or built-in name",
        shown="the folder's schema.toml",
    )
    synthetic_n: int = setting(
        SYNTHETIC_N, flag="--synthetic-n", metavar="N", help="images in the synthetic cohort (without --data)"
    )
    val_fraction: float = setting(0.15, help="share of the patients in the validation split")
    test_fraction: float = setting(0.15, help="share of the patients in the test split")


@dataclass
class ImageConfig:
    """The image branch and where its backbone starts from."""

    backbone: str = setting(
        DEFAULT_BACKBONE, flag="--backbone", choices=tuple(sorted(BACKBONES)), help="image backbone"
    )
    image_size: int | None = setting(
        None,
        flag="--image-size",
        metavar="N",
        help="side of the square input in pixels, 16 to 1,024",
        shown="the backbone's (custom 64, densenet169 224), or its starting weights' (cxr 128)",
    )
    freeze: int = setting(0, flag="--freeze", metavar="N", help="freeze the first N blocks of the backbone")
    pretrained: str | None = setting(
        None,
        flag="--pretrained",
        choices=PRETRAINED,
        help="named starting weights: cxr (chest X-ray weights shipped with fusion, custom backbone, offline), "
        "imagenet (torchvision's, only if already on this machine: never downloaded)",
        shown="none; cxr for the stacked, gbm and auto strategies",
    )
    weights: str | None = setting(
        None,
        flag="--weights",
        metavar="FILE",
        help="local state-dict file to initialise the backbone (its stem adapted to the channels: RGB summed to "
        "gray, gray spread over RGB)",
    )
    init_from: str | None = setting(
        None,
        flag="--init-from",
        metavar="RUN_DIR",
        help="run folder of an earlier fusion model whose image branch starts this one (transfer learning)",
    )
    channels: int | None = setting(
        None,
        flag="--channels",
        choices=CHANNELS,
        help="image channels the branch reads: 1 (gray films) or 3 (colour: dermatoscopy, fundus, pathology)",
        shown="the data's: the schema's [image] channels, an .npz's own arrays, else 1",
    )
    augment: bool = setting(True, flag="--no-augment", help="train without image augmentation")
    flip_rotate: bool | None = setting(
        None,
        flag="--flip-rotate",
        help="augment with random mirror images and quarter turns as well: for images without an up or a side "
        "(skin lesions, pathology), never for chest films (a mirrored chest puts the heart on the wrong side)",
        shown="the schema's [image] flip_rotate, else off",
    )
    # A low-pass in the network itself (fusion.nets.backbones.ImageBranch), so that
    # training, prediction, explanations and the ONNX export read the same image.
    detail: int | None = setting(
        None,
        flag="--detail",
        metavar="N",
        help="the finest detail the image branch reads, as a side in pixels: each image is averaged down to N x N "
        "and brought back to the input size, in training, prediction, explanations and export alike (against "
        "shortcuts in fine texture that differ between classes for reasons of acquisition); N divides the input "
        "size (equal to it: no limit); 0: none, whatever the schema says",
        shown="the schema's [image] detail, else the shipped starting weights' (cxr: none), else none",
    )


@dataclass
class TabularConfig:
    """The record branch: an MLP."""

    hidden: tuple[int, ...] = setting((64, 32), help="widths of the record MLP's hidden layers")
    dropout: float = setting(0.1, help="dropout of the record MLP")


@dataclass
class CalibrationConfig:
    """Calibration and operating points, fitted on the validation split after training."""

    enabled: bool = setting(True, help="fit temperature scaling and operating points on the validation split")
    target_sensitivity: float = setting(
        0.95, help="each disease's threshold reaches this sensitivity on the validation split"
    )
    healthy: tuple[str, ...] = setting(
        ("normal", "no_finding"), help="class names that are not a disease (no operating point is set for them)"
    )
    decision: str = setting(
        "argmax",
        flag="--decision",
        choices=DECISIONS,
        help="how a label is read off the probabilities: argmax (the most probable class) or balanced (the class "
        "whose probability most exceeds its prior, estimated on the validation split: the rule that maximises "
        "balanced accuracy, so rare classes are not outvoted by frequent ones)",
    )
    coverage: float = setting(
        0.9,
        flag="--coverage",
        help="prediction sets (the classes that cannot be ruled out) hold the true class this often; split "
        "conformal on the validation patients",
    )
    conformal: str = setting(
        "marginal",
        flag="--conformal",
        choices=CONFORMAL_METHODS,
        help="prediction sets covered over all patients (marginal) or within each class (class: one threshold "
        "per class, larger sets for rare classes)",
    )


@dataclass
class HeadConfig:
    """The late-fusion head: how the joint network joins its branches, and the
    classifier after it."""

    kind: str = setting(
        DEFAULT_HEAD,
        flag="--head",
        choices=tuple(HEADS),
        help="how the joint network joins its branches: concat (side by side, with presence flags), film (the "
        "record scales and shifts the image features), attention (a small transformer over one token per modality)",
    )
    hidden: int = setting(
        64, help="width of the fusion head: the classifier's hidden layer, the attention head's tokens"
    )
    dropout: float = setting(0.2, help="dropout of the fusion head")
    modality_dropout: float = setting(0.25, help="probability of hiding one modality of a training row")
    aux_weight: float = setting(0.5, help="weight of each branch's auxiliary loss")


@dataclass
class TrainConfig:
    """How the networks train, and the XGBoost baseline's fixed settings."""

    epochs: int | None = setting(
        None,
        flag="--epochs",
        metavar="N",
        help="training epochs",
        shown="follows the data: enough for about {default.train.steps} optimisation steps, at least "
        "{default.train.min_epochs} epochs, so small datasets train as long as large ones; three times as many with "
        "--flip-rotate",
    )
    steps: int = setting(800, help="optimisation steps the epochs are chosen for, when train.epochs is unset")
    min_epochs: int = setting(10, help="the fewest epochs, when train.epochs is unset")
    batch_size: int = setting(32, flag="--batch-size", metavar="N", help="rows per optimisation step (global)")
    lr: float = setting(2e-3, flag="--lr", metavar="LR", help="peak learning rate (AdamW, one-cycle schedule)")
    weight_decay: float = setting(1e-4, flag="--weight-decay", metavar="WD", help="AdamW weight decay")
    patience: int = setting(
        6, flag="--patience", metavar="N", help="early-stopping patience in epochs (validation macro-F1)"
    )
    seed: int = setting(0, flag="--seed", metavar="N", help="seed of data generation, split and training")
    device: str = setting("auto", flag="--device", choices=DEVICES, help="where to train (auto: a GPU if there is one)")
    precision: str = setting(
        "auto", flag="--precision", choices=PRECISIONS, help="auto: bf16 autocast where the hardware has it"
    )
    # "none" since issue 23: on the validation splits of all three real cohorts the plain
    # loss gave the higher macro AUROC (HAM10000 0.953 against 0.936 weighted; covid
    # 0.64/0.63 against 0.58/0.57; NIH 0.898 against 0.891), and on HAM10000 it beat the
    # weighted loss on accuracy and balanced accuracy at once under the balanced decision
    # (experiments/select_defaults.py). Imbalance is the decision rule's business
    # (calibration.decision), not the probabilities'.
    balance: str = setting(
        "none",
        flag="--balance",
        choices=BALANCES,
        help="how the network meets imbalanced classes: none (plain loss and order: probabilities as the data "
        "give them; --decision balanced then favours no class), weights (class-weighted loss, n / (k * count)) or "
        "sampling (class-balanced batches drawn with replacement, plain loss); the boosters and logistic models "
        "keep their class weights",
    )
    # XGBoost baseline: tuned by patient-grouped inner CV of the training part, or (with
    # xgb_tune off) these fixed settings with early stopping on the validation split
    xgb_tune: bool = setting(True, help="tune the XGBoost baseline by inner CV (tuning.*) rather than fix it")
    xgb_trees: int = setting(400, help="the untuned XGBoost baseline's most trees (early stopping on validation)")
    xgb_depth: int = setting(4, help="the untuned XGBoost baseline's tree depth")
    xgb_lr: float = setting(0.05, help="the untuned XGBoost baseline's learning rate")


@dataclass
class TuningConfig:
    """What patient-grouped inner cross-validation of the training part chooses from:
    the members of the stacked and gbm strategies, the tuned XGBoost baseline and the
    auto strategy. Saved with the model like every setting; smaller grids train faster
    (tests use them) and larger ones search further."""

    inner_folds: int = setting(4, help="folds of the inner CV that tunes and stacks the members")
    auto_folds: int = setting(3, help="folds of the inner CV that the auto strategy chooses by")
    auto_candidates: tuple[str, ...] = setting(
        AUTO_CANDIDATES,
        help="the models auto chooses among: joint, stacked, gbm (on the modalities asked for) and, when both are "
        "asked for, image_joint, image_stacked, image_gbm (the image alone) and tabular_xgboost (the record alone)",
    )
    auto_margin_se: float = setting(
        1.0,
        help="standard errors (patient bootstrap of the paired inner-CV gain in macro AUROC) by which auto's best "
        "fused model must beat the best single-modality one to be shipped; 0: the higher score wins",
    )
    linear_c: tuple[float, ...] = setting(
        (0.01, 0.03, 0.1, 0.3, 1.0), help="regularisation strengths C of the logistic models (image member, combiner)"
    )
    xgb_max_depth: tuple[int, ...] = setting((2, 4), help="XGBoost tree depths tried")
    xgb_learning_rate: tuple[float, ...] = setting((0.05, 0.15), help="XGBoost learning rates tried")
    xgb_min_child_weight: tuple[float, ...] = setting((1.0, 4.0), help="XGBoost minimum child weights tried")
    xgb_subsample: tuple[float, ...] = setting((0.8,), help="XGBoost row subsampling ratios tried")
    xgb_colsample_bytree: tuple[float, ...] = setting((0.8,), help="XGBoost column subsampling ratios tried")
    xgb_rounds: tuple[int, ...] = setting((25, 50, 100, 200), help="XGBoost numbers of boosting rounds tried")

    @property
    def xgb_grid(self) -> dict[str, tuple]:
        """The XGBoost parameters tried, by XGBoost's names (every combination is a
        candidate, each at every number of rounds)."""
        names = ("max_depth", "learning_rate", "min_child_weight", "subsample", "colsample_bytree")
        return {name: getattr(self, f"xgb_{name}") for name in names}


@dataclass
class TrackingConfig:
    """Where a run is tracked besides its folder (:mod:`fusion.tracking`): its settings,
    per-epoch losses and scores, final metrics with their intervals, plots and model card.
    Nothing the model is made of: a model folder trains and predicts alike whatever
    these say."""

    backend: str = setting(
        "none",
        flag="--track",
        choices=TRACKERS,
        help="track the run in MLflow or TensorBoard as well as its folder (needs the track extra: "
        'pip install "fusion[track]")',
    )
    uri: str | None = setting(
        None,
        flag="--track-uri",
        metavar="URI",
        help="mlflow: a tracking URI (sqlite:///..., http://...) or a folder that receives mlflow.db and "
        "mlartifacts/; tensorboard: a folder that receives one log folder per run, named as the run folder",
        shown="mlflow: the run folder's parent (runs/mlflow.db); tensorboard: the run folder's tensorboard/",
    )
    experiment: str | None = setting(
        None,
        flag="--track-experiment",
        metavar="NAME",
        help="the MLflow experiment the run is filed under",
        shown="the data's name",
    )


@dataclass
class Config:
    """Everything that defines a training run."""

    modalities: tuple[str, ...] = setting(
        MODALITIES,
        flag="--modalities",
        metavar="LIST",
        parse=str,
        help="the modalities the model reads: image,tabular, image or tabular (ablations take the same code path)",
    )
    model: str = setting(
        "fusion",
        flag="--model",
        choices=MODELS,
        help="fusion model, or XGBoost baseline (tabular only, tuned by inner CV)",
    )
    fusion: str = setting(
        "joint",
        flag="--fusion",
        choices=FUSIONS,
        help="joint (one network trained end to end), stacked (per-modality models joined by a combiner learned on "
        "out-of-fold predictions), gbm (XGBoost over a frozen image embedding and the record), auto (chosen by "
        "patient-grouped inner CV of the training part)",
    )
    data: DataConfig = field(default_factory=DataConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    tabular: TabularConfig = field(default_factory=TabularConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> Config:
        """Check every value; nothing derived is written back (see :meth:`resolved`).

        Lists are made tuples and ``modalities`` its canonical tuple: the same values
        in one form. Every message starts with the field it names (``train.epochs must
        be ...``), so :meth:`from_dict` can say where in a file the field is.

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
        try:
            backbone_spec(self.image.backbone)
        except ValueError as err:
            raise ConfigError(
                f"image.backbone: {err}",
                field="image.backbone",
                value=self.image.backbone,
                accepted=f"one of {sorted(BACKBONES)}",
            ) from None
        self._check_choices()
        if self.model == "xgboost" and self.modalities != ("tabular",):
            raise ConfigError(
                f"model 'xgboost' is tabular only: modalities must be ('tabular',); got {self.modalities}",
                field="model",
                related=("modalities",),
                value=self.modalities,
                accepted="('tabular',)",
            )
        self._derived_image()  # refuses a frozen-backbone strategy with nothing to start from
        sources = [f"image.{s}" for s in ("pretrained", "weights", "init_from") if getattr(self.image, s)]
        if len(sources) > 1:
            raise ConfigError(
                f"image.pretrained, image.weights, image.init_from: set at most one of them; got {sources}",
                field="image.pretrained",
                related=("image.weights", "image.init_from"),
                value=sources,
                accepted="at most one of them",
            )
        self._check_ranges()
        return self

    def resolved(
        self, channels: int | None = None, flip_rotate: bool | None = None, detail: int | None = None
    ) -> Config:
        """A validated copy with every derived default filled in; this one is left alone.

        ``image.pretrained``: the shipped chest X-ray weights (``"cxr"``) for the
        strategies that read films through a frozen backbone (stacked, gbm, auto) when
        no other starting weights are set. ``image.image_size``: the input size of
        those weights, else the backbone's. ``image.channels``: the data's, given as
        ``channels`` (the training images' 1 or 3), when unset; without ``channels`` it
        stays as set (the data are not known yet). ``image.flip_rotate``: the data's
        (``flip_rotate``, the schema's ``[image] flip_rotate``) when unset, off when
        neither says (a model trained without it saved ``false``). ``image.detail``
        likewise: the data's (``detail``, the schema's ``[image] detail``) when unset, 0
        (none) when the data are known and say nothing. What a model trains with and what
        its folder saves, so that a folder rebuilds the same network; resolving again
        changes nothing. ``train.epochs`` stays as set: it follows the data
        (:meth:`epochs_for`).

        Raises
        ------
        TypeError, ValueError
            As :meth:`validate`; ``image.channels`` set to other than the data's
            ``channels``; starting weights for gray films (the shipped ``cxr``) on a
            colour model; an ``image.detail`` (set, or the data's) that does not divide
            the image size.
        """
        out = copy.deepcopy(self).validate()
        if channels is not None and "image" in out.modalities:
            out._follow_channels(channels)
        if out.image.flip_rotate is None and (flip_rotate is not None or channels is not None):
            out.image.flip_rotate = bool(flip_rotate)
        out.image.pretrained, out.image.image_size = out._derived_image()
        source = ""
        if out.image.detail is None and detail is not None:
            out.image.detail, source = detail, "the schema's [image] detail"
        elif out.image.detail is None and channels is not None:
            shipped = backbone_spec(out.image.backbone).shipped.get(out.image.pretrained)
            weights_detail = shipped.detail if shipped is not None and "image" in out.modalities else None
            out.image.detail = weights_detail or 0
            source = "the shipped weights' detail" if weights_detail else ""
        out._check_detail(out.image.image_size, source)
        return out

    def _follow_channels(self, channels: int) -> None:
        """``image.channels`` set to the data's ``channels`` when unset; refused when set
        to another count (a gray model cannot read colour images, nor the reverse)."""
        if self.image.channels is None:
            self.image.channels = channels
        elif self.image.channels != channels:
            raise ConfigError(
                f"image.channels is {self.image.channels} but the training images have {channels} channel(s); "
                f"unset it to follow the data, or load the data with {self.image.channels} channel(s)",
                field="image.channels",
                value=self.image.channels,
                accepted=f"the training images' channels, {channels}, or unset",
            )

    def _derived_image(self) -> tuple[str | None, int]:
        """(pretrained, image_size) as :meth:`resolved` fills them, computed afresh
        from the settings as they are now."""
        spec = backbone_spec(self.image.backbone)
        pretrained = self.image.pretrained
        frozen = self.fusion in FROZEN_IMAGE and "image" in self.modalities
        colour = self.image.channels == 3
        if frozen and not self.starting_weights and colour and self.fusion == "auto":
            # No shipped weights read colour: auto leaves out its frozen-backbone
            # candidates (fusion.backends.auto.candidates) and weighs the networks.
            frozen = False
        elif frozen and not self.starting_weights:
            # These strategies read the film through a frozen pretrained backbone: the
            # shipped chest X-ray weights unless others are given.
            if "cxr" not in spec.shipped or colour:
                lacks = (
                    "the shipped weights (cxr) read gray films and this model reads colour images (image.channels = 3)"
                    if colour and "cxr" in spec.shipped
                    else f"backbone {spec.name!r} has no shipped weights"
                )
                raise ConfigError(
                    f"fusion {self.fusion!r} reads images through a frozen pretrained backbone; {lacks}: set "
                    "image.pretrained, image.weights or image.init_from",
                    field="fusion",
                    related=("image.pretrained", "image.weights", "image.init_from"),
                    value=self.fusion,
                )
            pretrained = "cxr"
        if colour and pretrained in spec.shipped and spec.shipped[pretrained].channels != 3:
            default = f" (the {self.fusion} strategy's default)" if frozen else ""
            # A frozen-backbone strategy cannot start from scratch: it never trains the backbone.
            scratch = (
                f"; fusion {self.fusion!r} cannot start from scratch (or use fusion 'joint')"
                if frozen
                else (" or from scratch")
            )
            raise ConfigError(
                f"image.pretrained is {pretrained!r}{default}: the shipped chest X-ray weights read gray films (one "
                "channel) and this model reads colour images (image.channels = 3); start it from image.weights (a "
                "file, its stem adapted), image.init_from (a colour run), image.pretrained = 'imagenet' (densenet169, "
                f"if on this machine){scratch}",
                field="image.pretrained",
                related=("image.channels",),
                value=pretrained,
                accepted="'imagenet' or unset, on a colour model",
            )
        size = self.image.image_size
        return pretrained, spec.input_size(pretrained) if size is None else size

    def _check_detail(self, size: int | None, source: str = "") -> None:
        """``image.detail``: unset, 0 (none) or a side of at least :data:`MIN_DETAIL`
        pixels that divides the image side ``size`` where it is known (on an image
        model). The branch averages blocks of ``size // detail`` pixels, so a remainder
        would blur a fraction of a block into each of its neighbours; a detail equal to
        the side is accepted and removes nothing (the images hold no finer detail), so a
        schema's value still fits a model trained at that size. ``source``: where an
        unset value came from, for the message."""
        detail, at = self.image.detail, Where.setting("image.detail")
        if detail is None:
            return
        checks.integer(detail, at, low=0)
        source = f" ({source})" if source else ""
        if 0 < detail < MIN_DETAIL:
            accepted = f"0 (none) or a whole number of at least {MIN_DETAIL}"
            raise at.refuse(f"image.detail{source} must be {accepted}; got {detail}", value=detail, accepted=accepted)
        if detail and size is not None and "image" in self.modalities and size % detail:
            sides = ", ".join(str(d) for d in range(MIN_DETAIL, size) if size % d == 0)
            accepted = f"{sides + ' or ' if sides else ''}{size} ({size}: no limit), or 0 (none)"
            raise ConfigError(
                f"image.detail{source} must divide image.image_size {size}: {accepted}; got {detail}",
                field="image.detail",
                related=("image.image_size",),
                value=detail,
                accepted=accepted,
            )

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
                if typing.get_origin(hint) is tuple:
                    setattr(section, key, tuple(value))

    def _check_choices(self) -> None:
        """Each setting that declares its choices holds one of them (or is unset, where
        unset is its default)."""
        for s in settings():
            value = self.get(s.name)
            if s.choices is None or value in s.choices or (value is None and s.default is None):
                continue
            unset = " or unset" if s.default is None else ""
            accepted = f"one of {s.choices}{unset}"
            raise ConfigError(
                f"{s.name} must be {accepted}; got {short_repr(value)}", field=s.name, value=value, accepted=accepted
            )

    def _check_ranges(self) -> None:
        """Each number within what training and loading can honour."""
        d, img, tab, head, t = self.data, self.image, self.tabular, self.head, self.train
        checks.integer(d.synthetic_n, Where.setting("data.synthetic_n"), low=1)
        for name in ("val_fraction", "test_fraction"):
            checks.number(getattr(d, name), Where.setting(f"data.{name}"), low=0, high=1, high_open=True)
        if d.val_fraction + d.test_fraction >= 1:
            total = d.val_fraction + d.test_fraction
            raise ConfigError(
                f"data.val_fraction + data.test_fraction must be < 1; got {total}",
                field="data.val_fraction",
                related=("data.test_fraction",),
                value=total,
                accepted="< 1",
            )
        if img.image_size is not None:
            checks.integer(img.image_size, Where.setting("image.image_size"), low=16, high=MAX_IMAGE_SIZE)
        self._check_detail(img.image_size)
        checks.integer(img.freeze, Where.setting("image.freeze"), low=0)
        if not 1 <= len(tab.hidden) <= MAX_LAYERS:
            accepted = f"1 to {MAX_LAYERS} layer widths"
            raise ConfigError(
                f"tabular.hidden must list {accepted}; got {short_repr(list(tab.hidden))}",
                field="tabular.hidden",
                value=list(tab.hidden),
                accepted=accepted,
            )
        for i, width in enumerate(tab.hidden):
            checks.integer(width, Where.setting(f"tabular.hidden[{i}]"), low=1, high=MAX_WIDTH)
        checks.integer(head.hidden, Where.setting("head.hidden"), low=1, high=MAX_WIDTH)
        for name, value in (("tabular.dropout", tab.dropout), ("head.dropout", head.dropout)):
            checks.number(value, Where.setting(name), low=0, high=1, high_open=True)
        checks.number(head.modality_dropout, Where.setting("head.modality_dropout"), low=0, high=1, high_open=True)
        checks.number(head.aux_weight, Where.setting("head.aux_weight"), low=0)
        for name in ("steps", "min_epochs", "batch_size", "patience", "xgb_trees"):
            checks.integer(getattr(t, name), Where.setting(f"train.{name}"), low=1)
        if t.epochs is not None:
            checks.integer(t.epochs, Where.setting("train.epochs"), low=1)
        checks.number(t.lr, Where.setting("train.lr"), low=0, low_open=True)
        checks.number(t.xgb_lr, Where.setting("train.xgb_lr"), low=0, low_open=True)
        checks.number(t.weight_decay, Where.setting("train.weight_decay"), low=0)
        checks.integer(t.seed, Where.setting("train.seed"), low=0, high=MAX_SEED)
        checks.integer(t.xgb_depth, Where.setting("train.xgb_depth"), low=1, high=64)
        checks.number(
            self.calibration.target_sensitivity,
            Where.setting("calibration.target_sensitivity"),
            low=0,
            high=1,
            low_open=True,
            high_open=True,
        )
        checks.number(
            self.calibration.coverage,
            Where.setting("calibration.coverage"),
            low=0,
            high=1,
            low_open=True,
            high_open=True,
        )
        self._check_tuning()
        self._check_tracking()

    def _check_tracking(self) -> None:
        """Where a run is tracked, if said, is said in words (an empty experiment or URI
        would be MLflow's default in disguise)."""
        for name in ("uri", "experiment"):
            value = getattr(self.tracking, name)
            if value is not None and not str(value).strip():
                raise ConfigError(
                    f"tracking.{name} must be a non-empty string or unset; got {value!r}",
                    field=f"tracking.{name}",
                    value=value,
                    accepted="a non-empty string or unset",
                )

    def _check_tuning(self) -> None:
        """Inner CV needs two folds; every grid lists at least one value, each in
        XGBoost's or scikit-learn's range."""
        tune = self.tuning
        for name in ("inner_folds", "auto_folds"):
            checks.integer(getattr(tune, name), Where.setting(f"tuning.{name}"), low=2)
        checks.number(tune.auto_margin_se, Where.setting("tuning.auto_margin_se"), low=0, high=5)
        unknown = [c for c in tune.auto_candidates if c not in AUTO_CANDIDATES]
        if unknown or not tune.auto_candidates or len(set(tune.auto_candidates)) != len(tune.auto_candidates):
            accepted = f"a non-empty list of {list(AUTO_CANDIDATES)} without repeats"
            raise ConfigError(
                f"tuning.auto_candidates must be {accepted}; got {short_repr(list(tune.auto_candidates))}",
                field="tuning.auto_candidates",
                value=list(tune.auto_candidates),
                accepted=accepted,
            )
        grids = {
            "linear_c": lambda v, w: checks.number(v, w, low=0, low_open=True),
            "xgb_max_depth": lambda v, w: checks.integer(v, w, low=1, high=64),
            "xgb_learning_rate": lambda v, w: checks.number(v, w, low=0, high=1, low_open=True),
            "xgb_min_child_weight": lambda v, w: checks.number(v, w, low=0),
            "xgb_subsample": lambda v, w: checks.number(v, w, low=0, high=1, low_open=True),
            "xgb_colsample_bytree": lambda v, w: checks.number(v, w, low=0, high=1, low_open=True),
            "xgb_rounds": lambda v, w: checks.integer(v, w, low=1),
        }
        for name, check in grids.items():
            values = getattr(tune, name)
            if not values:
                raise ConfigError(
                    f"tuning.{name} must list at least one value; got []",
                    field=f"tuning.{name}",
                    value=[],
                    accepted="at least one value",
                )
            for i, value in enumerate(values):
                check(value, Where.setting(f"tuning.{name}[{i}]"))

    def epochs_for(self, n_train: int) -> int:
        """The number of epochs a network trains on ``n_train`` rows: ``train.epochs``
        when set, else enough for ``train.steps`` steps (at least ``train.min_epochs``),
        three times as many when the images are mirrored and turned
        (``image.flip_rotate``): each image then has eight views to learn, and on
        HAM10000's validation split 30 epochs reached macro AUROC 0.953 where 10
        reached 0.940 (``experiments/select_defaults.py``)."""
        t = self.train
        if t.epochs is not None:
            return t.epochs
        per_epoch = max(1, math.ceil(n_train / t.batch_size))
        epochs = max(t.min_epochs, math.ceil(t.steps / per_epoch))
        return epochs * (FLIP_ROTATE_EPOCHS if self.image.flip_rotate and "image" in self.modalities else 1)

    @property
    def starting_weights(self) -> str | None:
        """Where the image backbone starts from, in the form
        :func:`fusion.nets.backbones.create_backbone` takes: a published weights name, a
        weights file, or an earlier run's folder; None from scratch (or, for a
        frozen-backbone strategy, the weights :meth:`resolved` fills in)."""
        return self.image.pretrained or self.image.weights or self.image.init_from

    # ------------------------------------------------------ settings by name
    def get(self, name: str) -> Any:
        """A setting by its dotted name (``"train.lr"``) or a section (``"train"``)."""
        value = self
        for part in name.split("."):
            value = getattr(value, part)
        return value

    def params(self) -> dict[str, Any]:
        """Every section and setting by scikit-learn's nested name: ``"model"``,
        ``"train"`` (the section object) and ``"train__lr"``; what
        :meth:`fusion.classifier.FusionClassifier.get_params` lists under ``config__``."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value
            if f.name in SECTIONS and is_dataclass(value):
                out.update({f"{f.name}__{g.name}": getattr(value, g.name) for g in fields(value)})
        return out

    def with_params(self, **params) -> Config:
        """A copy with the settings (or whole sections) of ``params`` set, by the names
        :meth:`params` gives (``train__lr=1e-3``); this configuration is left alone.
        Values are not checked here (scikit-learn's ``set_params`` convention):
        :meth:`validate`, ``fit`` and :meth:`resolved` check them.

        Raises
        ------
        ValueError
            A name that is neither a setting nor a section, listing the known ones.
        """
        known = self.params()
        for name in sorted(set(params) - set(known)):
            section = name.split("__")[0]
            nearby = [k for k in known if k.startswith(f"{section}__")] or [k for k in known if "__" not in k]
            raise ConfigError(
                f"the configuration has no setting {name!r}; known: {nearby}", value=name, accepted=f"one of {nearby}"
            )
        out = copy.deepcopy(self)
        for name in sorted(params, key=lambda n: n.count("__")):  # a section before its fields
            *section, key = name.split("__")
            setattr(out.get(".".join(section)) if section else out, key, params[name])
        return out

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return _lists(asdict(self))

    @classmethod
    def from_dict(cls, data: dict, *, where: Where | None = None) -> Config:
        """Rebuild from :meth:`to_dict` output, every field checked (type and range).

        A section or a setting the dict lacks takes its default, so a ``config.json``
        written before that setting existed loads as it was trained (nothing derived
        is filled in: see :meth:`resolved`). ``where``: the place the dict was read
        from, for messages (default ``config``; a model folder's loader gives
        ``.../config.json: config``).

        Raises
        ------
        ValueError
            An unknown key (it would be a silently ignored setting), a value of the
            wrong type or out of range, naming the key (``config.train.lr must be
            ...``).
        """
        where = where or Where.setting("config")
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
            # The field inside the document: config.train.lr (a TypeError names no field of its own).
            at = where / err.field if getattr(err, "field", None) else where
            raise at.refuse(
                f"{where}.{err}", value=getattr(err, "value", MISSING), accepted=getattr(err, "accepted", None)
            ) from None


SECTIONS = {
    "data": DataConfig,
    "image": ImageConfig,
    "tabular": TabularConfig,
    "head": HeadConfig,
    "train": TrainConfig,
    "calibration": CalibrationConfig,
    "tuning": TuningConfig,
    "tracking": TrackingConfig,
}


@dataclass(frozen=True)
class Setting:
    """One setting as its declaration (:func:`setting`) describes it.

    Attributes
    ----------
    name : str
        Dotted field name (``"train.lr"``), as errors name it.
    hint : object
        The field's type annotation.
    default : object
    help, flag, choices, metavar, shown, parse
        As :func:`setting` takes them.
    """

    name: str
    hint: Any
    default: Any
    help: str
    flag: str | None = None
    choices: tuple | None = None
    metavar: str | None = None
    shown: str | None = None
    parse: Callable[[str], Any] | None = None


@functools.cache
def settings() -> tuple[Setting, ...]:
    """Every setting of :class:`Config`, in declaration order (the top-level ones,
    then each section's)."""
    out = []
    for f in fields(Config):
        section = SECTIONS.get(f.name)
        owner, items = (section, fields(section)) if section else (Config, (f,))
        hints = typing.get_type_hints(owner)
        prefix = f"{f.name}." if section else ""
        out.extend(Setting(f"{prefix}{g.name}", hints[g.name], g.default, **g.metadata) for g in items)
    return tuple(out)


def _lists(value):
    """``value`` with every tuple a list, as JSON writes it."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


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
