"""The parts that late-fusion backends are built from: a frozen image embedder, a
linear model on it, a tuned XGBoost model on the record, and the patient-grouped inner
cross-validation that tunes and stacks them.

Every part keeps its fitted state as tensors (safetensors) or plain numbers (JSON), so
the model folders that hold them carry no pickle.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fusion import checks
from fusion.backends.base import class_weights
from fusion.checks import Where
from fusion.errors import ModelFolderError
from fusion.evaluation import macro_auroc

if TYPE_CHECKING:
    from fusion.config import TuningConfig
    from fusion.persistence import ModelFiles


def inner_folds(labels: np.ndarray, groups: np.ndarray | None, seed: int, k: int):
    """``k`` patient-grouped, stratified folds of a training part (fewer when it has
    fewer patients), for tuning and out-of-fold predictions (``k``: the configuration's
    ``tuning.inner_folds`` or ``tuning.auto_folds``)."""
    from fusion.data.splits import grouped_kfold

    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    n_groups = len(np.unique(groups))
    return grouped_kfold(labels, groups, k=max(2, min(k, n_groups)), seed=seed)


def log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0))))


def score(y: np.ndarray, proba: np.ndarray) -> tuple[float, float]:
    """How candidates are compared: macro AUROC (the judged figure), then lower log
    loss. Larger is better."""
    auroc = macro_auroc(y, proba)
    return (-math.inf if auroc is None else auroc, -log_loss(y, proba))


# ------------------------------------------------------------------- embedder
class FrozenEmbedder:
    """A pretrained image backbone, frozen, as a feature extractor: films in, one
    embedding vector per film out. Its weights are saved with the model, so a model
    folder does not depend on where the weights came from.

    Parameters
    ----------
    backbone : str
        Registry name.
    weights : str or Path
        Starting weights as :func:`~fusion.nets.backbones.create_backbone` takes them
        (``"cxr"``, a file, a run folder).
    image_size : int
    channels : {1, 3}
        The images' channels: gray films (n, S, S) or colour images (n, S, S, 3).
    detail : int, optional
        The finest detail the branch reads (``image.detail``; see
        :class:`~fusion.nets.backbones.ImageBranch`), as in the joint network.
    """

    file = "embedder.safetensors"

    def __init__(self, backbone: str, weights, image_size: int, channels: int = 1, detail: int | None = None):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.channels = channels
        self.detail = detail

    def fit(self, images: np.ndarray | None = None) -> FrozenEmbedder:
        from fusion.data.dataset import intensity_stats
        from fusion.nets.backbones import ImageBranch, create_backbone

        net = create_backbone(self.backbone, self.weights, in_chans=self.channels)
        mean, std = net.input_stats or intensity_stats(images)
        self.branch_ = ImageBranch(net, mean, std, self.detail).eval().requires_grad_(False)
        self.output_dim = net.output_dim
        return self

    @staticmethod
    def pixels(images: np.ndarray):
        """uint8 images (n, S, S) or (n, S, S, C) as the branch takes them: float in
        [0, 1], (n, C, S, S), channels-last in memory."""
        import torch

        from fusion.training.hardware import channels_first

        x = channels_first(torch.from_numpy(np.ascontiguousarray(images)))
        return x.float().div_(255.0).contiguous(memory_format=torch.channels_last)

    def transform(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Embeddings, float32 (n, output_dim), of uint8 films (n, S, S) or colour
        images (n, S, S, 3)."""
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                out.append(self.branch_(self.pixels(images[start : start + batch_size])).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.output_dim), np.float32)

    @property
    def image_state(self) -> dict:
        """The image preprocessing a consumer of the model folder must apply
        (``preprocessing.json``): size, channels and the branch's normalisation."""
        mean, std = self.branch_.stats()
        return {"size": self.image_size, "mean": mean, "std": std, "channels": self.channels}

    def save(self) -> dict[str, bytes]:
        from fusion.persistence import state_dict_bytes

        return {self.file: state_dict_bytes(self.branch_.state_dict())}

    @classmethod
    def load(
        cls, files: ModelFiles, backbone: str, image_size: int, channels: int = 1, detail: int | None = None
    ) -> FrozenEmbedder:
        """From a model folder's verified files; the weights must fit the backbone."""
        from fusion.backends.joint import check_fits
        from fusion.nets.backbones import ImageBranch, create_backbone

        state = files.tensors(cls.file)
        check_fits(lambda: ImageBranch(create_backbone(backbone, in_chans=channels)), state, files.origin(cls.file))
        embedder = cls(backbone, None, image_size, channels, detail)
        net = create_backbone(backbone, in_chans=channels)
        embedder.branch_ = ImageBranch(net, detail=detail).eval().requires_grad_(False)
        embedder.branch_.load_state_dict(state)
        embedder.output_dim = net.output_dim
        return embedder


# ------------------------------------------------------------- linear member
@dataclass
class LinearModel:
    """Standardised features -> multinomial logistic regression (scikit-learn), kept
    as plain numbers: scaler mean and scale, coefficients, intercepts."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (n_classes, n_features)
    intercept: np.ndarray  # (n_classes,)

    def logits(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.scale) @ self.coef.T + self.intercept

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = self.logits(X)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("mean", "scale", "coef", "intercept")}

    @classmethod
    def from_dict(cls, d: dict, where: Where | None = None, *, n_classes: int, n_features: int) -> LinearModel:
        """Rebuild, checking every number: ``n_classes`` x ``n_features`` coefficients,
        finite numbers, positive scales."""
        where = where or Where("linear model")
        d = checks.keys(d, where, required=("mean", "scale", "coef", "intercept"))
        return cls(
            mean=np.asarray(checks.numbers_list(d["mean"], where / "mean", length=n_features)),
            scale=np.asarray(checks.numbers_list(d["scale"], where / "scale", length=n_features, low=0, low_open=True)),
            coef=np.asarray(checks.matrix(d["coef"], where / "coef", n_classes, n_features), dtype=np.float64),
            intercept=np.asarray(checks.numbers_list(d["intercept"], where / "intercept", length=n_classes)),
        )


def fit_linear(X: np.ndarray, y: np.ndarray, n_classes: int, C: float) -> LinearModel:
    """Class-weighted, L2-regularised multinomial logistic regression on standardised
    features; classes absent from ``y`` get a very low intercept."""
    from sklearn.linear_model import LogisticRegression

    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-8] = 1.0
    present = np.unique(y)
    weights = class_weights(y, n_classes)
    model = LogisticRegression(C=C, max_iter=2000)
    model.fit((X - mean) / scale, y, sample_weight=weights[y])
    coef = np.zeros((n_classes, X.shape[1]))
    intercept = np.full(n_classes, -30.0)
    if len(present) == 2:  # scikit-learn's binary form: one row for the second class
        coef[present[1]], intercept[present[1]] = model.coef_[0] / 2, model.intercept_[0] / 2
        coef[present[0]], intercept[present[0]] = -model.coef_[0] / 2, -model.intercept_[0] / 2
    else:
        coef[present], intercept[present] = model.coef_, model.intercept_
    return LinearModel(mean, scale, coef, intercept)


def tune_linear(X, y, groups, n_classes: int, seed: int, tuning: TuningConfig) -> tuple[float, dict]:
    """The regularisation of :func:`fit_linear` chosen from ``tuning.linear_c`` by
    inner CV; returns (C, scores)."""
    grid = tuning.linear_c
    folds = inner_folds(y, groups, seed, tuning.inner_folds)
    scores = {}
    for C in grid:
        oof = np.zeros((len(y), n_classes))
        for tr, te in folds:
            oof[te] = fit_linear(X[tr], y[tr], n_classes, C).predict_proba(X[te])
        scores[C] = score(y, oof)
    best = max(grid, key=lambda c: scores[c])
    return best, {str(c): round(s[0], 4) for c, s in scores.items()}


# ------------------------------------------------------------ boosted member
def xgb_candidates(grid: dict) -> list[dict]:
    """Every combination of the values of ``grid`` (XGBoost parameter -> values)."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def fit_xgb(X: np.ndarray, y: np.ndarray, n_classes: int, params: dict, seed: int, rounds: int, row_weights=None):
    """XGBoost with balanced class weights (times ``row_weights``) for a fixed number
    of rounds (no early stopping: the number of rounds is itself chosen by inner CV)."""
    import xgboost as xgb

    weights = class_weights(y, n_classes)[y] * (1.0 if row_weights is None else np.asarray(row_weights))
    full = {
        "objective": "multi:softprob",
        "num_class": n_classes,
        "eval_metric": "mlogloss",
        "seed": seed,
        "nthread": 1,
        "max_bin": 64,
        **params,
    }
    return xgb.train(full, xgb.DMatrix(X, label=y, weight=weights, missing=np.nan), num_boost_round=rounds)


def xgb_proba(booster, X: np.ndarray, n_classes: int) -> np.ndarray:
    out = booster.inplace_predict(X, missing=np.nan)
    return np.asarray(out, dtype=np.float64).reshape(len(X), n_classes)


def load_booster(data: bytes, origin: str, *, n_classes: int, n_features: int):
    """An XGBoost model from its JSON bytes, refused unless it predicts ``n_classes``
    classes from ``n_features`` columns (a booster of another model would otherwise
    load and answer nonsense, or fail at the first prediction)."""
    import json

    import xgboost as xgb

    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(data))
        params = json.loads(booster.save_config())["learner"]["learner_model_param"]
        classes, columns = int(params["num_class"]), booster.num_features()
    except (xgb.core.XGBoostError, ValueError, KeyError) as err:
        reason = str(err).strip().splitlines()[0][:200]
        raise ModelFolderError(f"{origin}: not a valid XGBoost model ({reason})", file=origin) from None
    if classes != n_classes:
        raise ModelFolderError(
            f"{origin}: the booster predicts {classes} classes; config.json lists {n_classes} classes",
            file=origin,
            value=classes,
            accepted=f"{n_classes} classes",
        )
    if columns != n_features:
        raise ModelFolderError(
            f"{origin}: the booster reads {columns} features; this model gives it {n_features} columns",
            file=origin,
            value=columns,
            accepted=f"{n_features} features",
        )
    return booster


def tune_xgb(X, y, groups, n_classes: int, seed: int, tuning: TuningConfig) -> tuple[dict, int, dict]:
    """Depth, learning rate, minimum child weight, subsampling (``tuning.xgb_grid``)
    and the number of rounds (``tuning.xgb_rounds``), chosen by patient-grouped inner
    CV on the training part only.

    Returns (params, rounds, scores by candidate).
    """
    import xgboost as xgb

    folds = inner_folds(y, groups, seed, tuning.inner_folds)
    checkpoints = list(tuning.xgb_rounds)
    results = {}
    for params in xgb_candidates(tuning.xgb_grid):
        oof = {r: np.zeros((len(y), n_classes)) for r in checkpoints}
        for tr, te in folds:
            booster = fit_xgb(X[tr], y[tr], n_classes, params, seed, max(checkpoints))
            dm = xgb.DMatrix(X[te], missing=np.nan)
            for r in checkpoints:
                oof[r][te] = booster.predict(dm, iteration_range=(0, r)).reshape(len(te), n_classes)
        for r in checkpoints:
            results[(tuple(params.items()), r)] = score(y, oof[r])
    (best_params, best_rounds) = max(results, key=results.get)
    scores = {f"{dict(p)} x{r}": round(s[0], 4) for (p, r), s in results.items()}
    return dict(best_params), best_rounds, scores
