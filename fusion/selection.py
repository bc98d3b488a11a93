"""Choosing a setting by validation, never by test.

How the network meets imbalanced classes (``train.balance``) and how a label is read
off the probabilities (``calibration.decision``) are settings whose best value depends
on the cohort. :func:`select_by_validation` fits one model per candidate configuration
on a training part, scores each on the validation part with the labels it would give
(its own decision rule) and returns the best: what a cross-validation script calls
inside each outer fold, so that the test rows never take part in the choice.

Example
-------
>>> from fusion import Config, load_dataset
>>> parts = load_dataset(None, image_size=32, synthetic_n=90).split(seed=0)
>>> base = Config(modalities=("tabular",)); base.train.epochs = 1
>>> candidates = {d: base.with_params(calibration__decision=d) for d in ("argmax", "balanced")}
>>> picked = select_by_validation(candidates, parts["train"], parts["val"])
>>> picked.chosen in candidates and len(picked.models) == 2
True
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fusion.errors import ConfigError

if TYPE_CHECKING:
    from fusion.classifier import FusionClassifier
    from fusion.config import Config
    from fusion.data.dataset import Dataset


def balanced_accuracy(y_true, pred) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (the ISIC
    challenges' metric): each class counts the same whatever its size, so a model that
    ignores a rare class is not rewarded for the frequent ones."""
    y_true, pred = np.asarray(y_true), np.asarray(pred)
    return float(np.mean([(pred[y_true == c] == c).mean() for c in np.unique(y_true)]))


@dataclass(frozen=True)
class Selection:
    """What :func:`select_by_validation` found.

    Attributes
    ----------
    chosen : str
        The name of the best candidate (ties: the first listed).
    scores : dict of str -> float
        Every candidate's validation score.
    models : dict of str -> FusionClassifier
        Every candidate's fitted model.
    """

    chosen: str
    scores: dict[str, float]
    models: dict[str, FusionClassifier]

    @property
    def model(self) -> FusionClassifier:
        """The chosen candidate's fitted model."""
        return self.models[self.chosen]


def select_by_validation(
    candidates: Mapping[str, Config],
    train: Dataset,
    val: Dataset,
    *,
    metric: Callable[[np.ndarray, np.ndarray], float] = balanced_accuracy,
) -> Selection:
    """Fit each candidate configuration on ``train`` (``val`` stops the network early
    and calibrates it, as in a run) and score it on ``val`` by ``metric(labels,
    predicted labels)``, the labels being those its own ``calibration.decision`` gives.

    Candidates that differ only in their ``calibration`` section (the decision rule,
    say) share one training: the model is trained once and calibrated once per
    candidate. The balanced decision's priors and the calibration are fitted on
    ``val`` too, so its score is slightly optimistic, the same way for every candidate;
    the test rows take no part.

    Parameters
    ----------
    candidates : mapping of str -> Config
        At least one.
    train, val : Dataset
    metric : callable
        Larger is better; default :func:`balanced_accuracy`.

    Returns
    -------
    Selection

    Raises
    ------
    ValueError
        No candidate, or an empty validation part.
    """
    from fusion.classifier import FusionClassifier

    if not candidates:
        raise ConfigError("select_by_validation needs at least one candidate configuration", accepted="one or more")
    if val is None or len(val) == 0:
        raise ValueError("select_by_validation needs a non-empty validation part to score the candidates on")
    trained: dict[str, FusionClassifier] = {}
    models, scores = {}, {}
    for name, config in candidates.items():
        key = _without_calibration(config)
        if key in trained:
            models[name] = trained[key].recalibrated(config.calibration, train, val)
        else:
            models[name] = trained[key] = FusionClassifier(config).fit(train, val)
        proba = models[name].predict_dataset(val)
        scores[name] = float(metric(val.labels, models[name].calibration_.decide(proba)))
    chosen = max(scores, key=lambda name: scores[name])  # max keeps the first of equals
    return Selection(chosen, scores, models)


def _without_calibration(config: Config) -> str:
    """A key equal for configurations that train the same model."""
    data = copy.deepcopy(config).to_dict()
    data.pop("calibration")
    return json.dumps(data, sort_keys=True)


__all__ = ["Selection", "balanced_accuracy", "select_by_validation"]
