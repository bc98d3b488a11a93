"""The answer for one patient, and the check every answer passes before it is given.

:class:`Prediction` is what :meth:`FusionClassifier.predict
<fusion.classifier.FusionClassifier.predict>` returns for one patient;
:func:`finite_probabilities` refuses probabilities that hold NaN or infinity (a model
whose weights diverged), so that no label is ever read off them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prediction:
    """The answer for one patient.

    Attributes
    ----------
    label : str
        The most probable class or, under the balanced decision (``priors`` given to
        :meth:`from_probabilities`), the class whose probability most exceeds its prior.
    probabilities : dict of str -> float
        Every class's probability; they sum to 1.
    modalities : tuple of str
        The inputs the answer rests on ("image", "tabular").
    above_threshold : tuple of str
        The disease classes whose probability reaches their operating point (the
        threshold that kept validation sensitivity at its target, see
        :mod:`fusion.evaluation.calibration`): classes not to rule out.
    ignored : tuple of str
        Inputs that were given but that the model has no modality for ("image" given
        to a tabular-only model, "tabular" to an image-only one): validated like any
        other input, then not used.
    prediction_set : tuple of str or None
        The classes that cannot be ruled out: a set that holds the true class with
        probability ``coverage`` over patients like the validation ones (split
        conformal, :mod:`fusion.evaluation.conformal`); one class when the model is
        sure, several when it is not. None for a model without prediction sets.
    coverage : float or None
        The coverage the set was calibrated for (0.9 unless the model says otherwise).
    """

    label: str
    probabilities: dict[str, float]
    modalities: tuple[str, ...] = field(default_factory=tuple)
    above_threshold: tuple[str, ...] = field(default_factory=tuple)
    ignored: tuple[str, ...] = field(default_factory=tuple)
    prediction_set: tuple[str, ...] | None = None
    coverage: float | None = None

    def __str__(self) -> str:
        probs = ", ".join(f"{c} {p:.3f}" for c, p in self.probabilities.items())
        flagged = f"; above operating point: {', '.join(self.above_threshold)}" if self.above_threshold else ""
        ignored = f"; {' and '.join(self.ignored)} ignored (not a modality of this model)" if self.ignored else ""
        sets = ""
        if self.prediction_set is not None:
            sets = f"; cannot rule out at {self.coverage:.0%} coverage: {', '.join(self.prediction_set)}"
        return f"{self.label} ({probs}; from {' + '.join(self.modalities)}{flagged}{sets}{ignored})"

    def to_dict(self) -> dict:
        """The answer as JSON-ready values: what ``fusion predict --json`` prints and the
        service returns. ``prediction_set`` is a list, or null for a model without sets."""
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "modalities": list(self.modalities),
            "above_threshold": list(self.above_threshold),
            "prediction_set": None if self.prediction_set is None else list(self.prediction_set),
            "coverage": self.coverage,
            "ignored": list(self.ignored),
        }

    @classmethod
    def from_probabilities(
        cls,
        classes: Sequence[str],
        proba: np.ndarray,
        thresholds: Mapping[str, float],
        *,
        modalities: tuple[str, ...],
        ignored: tuple[str, ...],
        priors: Sequence[float] | None = None,
        inside: Sequence[bool] | None = None,
        coverage: float | None = None,
    ) -> Prediction:
        """The answer read off one row of (finite, calibrated) probabilities.

        ``thresholds`` are the operating points (class -> probability); a class
        without one is never flagged. ``priors``: the balanced decision's, one per
        class (:func:`decide`); None: the label is the most probable class.
        ``inside``: which classes the prediction set holds, at ``coverage``.
        """
        probabilities = {c: float(p) for c, p in zip(classes, proba, strict=True)}
        above = tuple(c for c in classes if c in thresholds and probabilities[c] >= thresholds[c])
        label = classes[int(decide(np.asarray(proba)[None], priors)[0])]
        kept = None if inside is None else tuple(c for c, k in zip(classes, inside, strict=True) if k)
        return cls(
            label,
            probabilities,
            modalities=modalities,
            above_threshold=above,
            ignored=ignored,
            prediction_set=kept,
            coverage=None if kept is None else coverage,
        )


def decide(proba: np.ndarray, priors: Sequence[float] | None = None) -> np.ndarray:
    """The label index of each row of probabilities (n, k): the most probable class, or
    given ``priors`` (the balanced decision) the class whose probability most exceeds
    its prior, ``argmax p / prior``."""
    proba = np.asarray(proba, dtype=np.float64)
    return (proba if priors is None else proba / np.asarray(priors, dtype=np.float64)).argmax(axis=1)


def finite_probabilities(proba: np.ndarray) -> np.ndarray:
    """``proba`` when every value is finite; else no label is given from it.

    Raises
    ------
    ValueError
        Naming the first row at fault.
    """
    proba = np.asarray(proba)
    bad = np.flatnonzero(~np.isfinite(proba.reshape(len(proba), -1)).all(axis=1))
    if len(bad):
        more = f" and {len(bad) - 1} more of {len(proba)}" if len(bad) > 1 else ""
        raise ValueError(
            f"the model's probabilities are not finite (NaN or infinity) for row {int(bad[0])}{more}: its weights "
            "or calibration are broken (a training that diverged?) or an input drove it out of range; "
            "no label is given from them"
        )
    return proba
