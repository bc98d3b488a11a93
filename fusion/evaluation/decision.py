"""Decision curves: is the model worth acting on, and at which thresholds?

A decision curve (Vickers & Elkin, "Decision curve analysis: a novel method for
evaluating prediction models", *Med Decis Making* 2006) plots a model's *net benefit*
against the threshold probability ``t`` at which a clinician would treat (or work the
patient up): the rate of true positives, less the rate of false positives weighted by
the harm of an unnecessary treatment relative to the benefit of a necessary one,
``t / (1 - t)``::

    net benefit(t) = TP / n - FP / n * t / (1 - t)

It is compared with treating everyone (``prevalence - (1 - prevalence) t / (1 - t)``)
and no one (0). A model is of use at a threshold only where its curve is above both;
TRIPOD+AI asks for this figure of any prediction model meant for clinical use.

Each disease class is read one against the rest. The fused model is drawn beside its
own answers from each single modality on the same patients (the model was trained with
modality dropout, so it answers from one input), so that what the second modality adds
shows at the thresholds a clinician would use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)
"""Threshold probabilities from 1 % to 99 %, every 1 %."""


def net_benefit(positive: np.ndarray, score: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """Net benefit of acting on ``score >= t`` for each threshold ``t``, against the true
    ``positive`` rows (Vickers & Elkin 2006, eq. 1)."""
    positive = np.asarray(positive, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    n = len(positive)
    if n == 0:
        return np.zeros(len(thresholds))
    acted = score[None, :] >= np.asarray(thresholds)[:, None]
    tp = (acted & positive[None, :]).sum(axis=1) / n
    fp = (acted & ~positive[None, :]).sum(axis=1) / n
    return tp - fp * thresholds / (1.0 - thresholds)


def treat_all(positive: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """Net benefit of acting on every patient."""
    prevalence = float(np.mean(positive)) if len(positive) else 0.0
    return prevalence - (1.0 - prevalence) * thresholds / (1.0 - thresholds)


def useful_ranges(curve: np.ndarray, all_: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> list[list[float]]:
    """The threshold intervals (inclusive ends, on the grid) where ``curve`` is above both
    treating everyone and no one: where acting on the model beats both defaults."""
    better = (curve > np.maximum(all_, 0.0) + 1e-12) & (curve > 0)
    ranges, start = [], None
    for i, good in enumerate(better):
        if good and start is None:
            start = i
        if start is not None and (not good or i == len(better) - 1):
            end = i if good else i - 1
            ranges.append([float(thresholds[start]), float(thresholds[end])])
            start = None
    return ranges


def decision_curves(
    y: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    classes: Sequence[str],
    disease: Sequence[str],
    thresholds: np.ndarray = THRESHOLDS,
) -> dict:
    """Net benefit of each model (``{name: (n, k) probabilities}`` on the same rows) for
    each disease class, with treating everyone, and the thresholds where each model beats
    both defaults.

    Returns
    -------
    dict
        ``thresholds``; ``classes``: per disease class, ``prevalence``, ``treat_all`` and
        per model ``net_benefit`` and ``useful`` (list of [low, high] ranges).
    """
    y = np.asarray(y)
    out = {"thresholds": [float(t) for t in thresholds], "n": len(y), "classes": {}}
    for c, name in enumerate(classes):
        if name not in disease:
            continue
        positive = y == c
        all_ = treat_all(positive, thresholds)
        entry = {"prevalence": float(positive.mean()) if len(y) else 0.0, "treat_all": _rounded(all_), "models": {}}
        for model, proba in probabilities.items():
            curve = net_benefit(positive, np.asarray(proba)[:, c], thresholds)
            entry["models"][model] = {"net_benefit": _rounded(curve), "useful": useful_ranges(curve, all_, thresholds)}
        out["classes"][name] = entry
    return out


def decision_report(clf, part, proba: np.ndarray, healthy: Sequence[str], answers: dict | None = None) -> dict:
    """Decision curves of each disease class on ``part``: the model, and for a fused
    model its own answers from each single modality on the same patients
    (:func:`fusion.evaluation.modalities.modality_answers`, or ``answers`` when they are
    at hand). ``clf`` is a fitted :class:`~fusion.classifier.FusionClassifier`, ``part``
    a loaded dataset and ``proba`` the model's calibrated probabilities of it;
    ``healthy`` the classes that are no disease (no curve is drawn for them)."""
    from fusion.evaluation.modalities import modality_answers

    answers = answers if answers is not None else modality_answers(clf, part, proba)
    disease = [c for c in clf.classes_ if c not in healthy]
    return decision_curves(part.labels, answers, clf.classes_, disease)


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in values]


def describe_ranges(ranges: list[list[float]]) -> str:
    """``"0.05-0.40, 0.55-0.60"``, or ``"none"``."""
    if not ranges:
        return "none"
    return ", ".join(f"{low:.2f}-{high:.2f}" if low != high else f"{low:.2f}" for low, high in ranges)
