"""Prediction sets with a coverage guarantee: split conformal prediction on the
validation split, with patients as the exchangeable units.

A probability for each class says little a clinician can act on when the model is
unsure. A *prediction set* says which classes cannot be ruled out: at coverage
``1 - alpha`` (0.9 by default) the set holds the true class of a new patient at least
that often, whatever the model, provided the new patient is exchangeable with the
validation patients (Vovk et al., *Algorithmic Learning in a Random World*, 2005;
Angelopoulos & Bates, "A gentle introduction to conformal prediction", 2021).

The score of a row is ``1 - p_true`` (the "least ambiguous" sets of Sadinle, Lei &
Wasserman, JASA 2019: the smallest sets on average at their coverage). A class joins
the set when its calibrated probability is at least ``1 - q``, ``q`` being the
``ceil((1 - alpha)(n + 1))``-th smallest validation score. With fewer validation
patients than that needs (n < 1/alpha - 1), no class can be ruled out: every set is
every class, which is what the guarantee allows and what the model card says.

Films of one patient are not exchangeable with each other, patients are. Each
patient therefore weighs one in the quantile, shared equally among its films (the
pooled-CDF rule of Dunn, Wasserman & Ramdas, "Distribution-free prediction sets for
two-layer hierarchical models", JASA 2022); with one film per patient it is the
classical rule exactly.

*Class-conditional* (Mondrian) sets calibrate one threshold per true class on that
class's patients (Vovk 2005, ch. 4; Löfström et al. 2015), so that a rare class is
covered at ``1 - alpha`` too, not only the patients on average; they are larger where
a class has few validation patients.

A set is fitted for each combination of inputs the model answers from (a fused model:
image and record, image alone, record alone), each on the validation split with the
other input withheld, so that a patient with a missing modality gets a set calibrated
for what it gave: wider, and still covered. An empty set (every class improbable) is
given the most probable class, which can only raise coverage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fusion import checks
from fusion.checks import Where
from fusion.config import CONFORMAL_METHODS

METHODS = CONFORMAL_METHODS
"""``marginal``: one threshold, coverage over patients on average; ``class``: one
threshold per true class (Mondrian), coverage within every class."""


def pattern(modalities: Sequence[str]) -> str:
    """The key of a combination of inputs: ``"image+tabular"``, ``"image"``, ``"tabular"``."""
    return "+".join(sorted(modalities))


def answerable(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """The combinations of inputs a model of ``modalities`` answers from: all of them,
    and for a fused model each one alone (it was trained with modality dropout)."""
    modalities = tuple(modalities)
    return [modalities, *((m,) for m in modalities)] if len(modalities) > 1 else [modalities]


def threshold(scores: np.ndarray, groups: np.ndarray | None, alpha: float) -> float:
    """The conformal quantile ``q`` of nonconformity ``scores``: the smallest score whose
    patient-weighted count reaches ``ceil((1 - alpha)(G + 1))`` of the ``G`` patients
    (each patient weighs one, shared among its films); ``inf`` when that exceeds ``G``
    (too few patients to rule any class out at this coverage).

    Examples
    --------
    >>> threshold(np.arange(1, 20) / 20, None, 0.1)  # 19 patients: the 18th smallest
    0.9
    >>> threshold(np.array([0.1, 0.2]), None, 0.1)
    inf
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return math.inf
    if groups is None:
        weights = np.ones(len(scores))
    else:
        _, codes, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
        weights = 1.0 / counts[codes]
    n_patients = weights.sum()
    rank = math.ceil((1.0 - alpha) * (round(n_patients) + 1) - 1e-9)
    if rank > round(n_patients):
        return math.inf
    order = np.argsort(scores, kind="stable")
    reached = np.cumsum(weights[order]) >= rank - 1e-9
    return float(scores[order][np.argmax(reached)])


@dataclass
class ConformalSets:
    """Fitted prediction sets: for each combination of inputs, the lowest calibrated
    probability a class needs to stay in the set (one per class).

    Attributes
    ----------
    coverage : float
        The coverage asked for, ``1 - alpha``.
    method : {"marginal", "class"}
        One threshold for all classes, or one per class (Mondrian).
    minimum : dict of str -> list of float
        Per input combination (:func:`pattern`), per class: the class is in the set
        when its probability is at least this (0: never ruled out).
    patients : dict of str -> list of int
        Validation patients each threshold was fitted on (per class for ``class``; the
        same number repeated for ``marginal``).
    """

    coverage: float
    method: str = "marginal"
    minimum: dict[str, list[float]] = field(default_factory=dict)
    patients: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        y: np.ndarray,
        probabilities: dict[str, np.ndarray],
        groups: np.ndarray | None,
        *,
        coverage: float = 0.9,
        method: str = "marginal",
    ) -> ConformalSets:
        """Thresholds from the validation rows' classes ``y`` and their calibrated
        probabilities under each input combination (``{pattern: (n, k) array}``)."""
        y = np.asarray(y, dtype=np.int64)
        alpha = 1.0 - coverage
        sets = cls(coverage=coverage, method=method)
        for key, proba in probabilities.items():
            proba = np.asarray(proba, dtype=np.float64)
            k = proba.shape[1]
            scores = 1.0 - proba[np.arange(len(y)), y]
            # Mondrian: each class's threshold from its own patients; else one from all.
            parts = [y == c for c in range(k)] if method == "class" else [np.ones(len(y), dtype=bool)] * k
            qs, counts = [], []
            for rows in parts:
                sub = None if groups is None else np.asarray(groups)[rows]
                qs.append(threshold(scores[rows], sub, alpha))
                counts.append(int(len(np.unique(sub)) if sub is not None else rows.sum()))
            sets.minimum[key] = [0.0 if math.isinf(q) else float(max(0.0, 1.0 - q)) for q in qs]
            sets.patients[key] = counts
        return sets

    def patterns(self) -> tuple[str, ...]:
        return tuple(self.minimum)

    def contains(self, proba: np.ndarray, key: str | Sequence[str]) -> np.ndarray:
        """Which classes each row's set holds, boolean (n, k), for rows answered from the
        input combination ``key`` (a :func:`pattern` or the modalities used).

        Raises
        ------
        KeyError
            No set was fitted for that combination.
        """
        key = key if isinstance(key, str) else pattern(key)
        if key not in self.minimum:
            raise KeyError(f"no prediction set was fitted for inputs {key!r}; fitted: {list(self.minimum)}")
        proba = np.atleast_2d(np.asarray(proba, dtype=np.float64))
        inside = proba >= np.asarray(self.minimum[key])[None, :] - 1e-12
        empty = ~inside.any(axis=1)
        inside[empty, proba[empty].argmax(axis=1)] = True
        return inside

    def to_dict(self) -> dict:
        return {"coverage": self.coverage, "method": self.method, "minimum": self.minimum, "patients": self.patients}

    @classmethod
    def from_dict(cls, d: dict, k: int | None, *, where: Where) -> ConformalSets:
        """Rebuild from :meth:`to_dict`, every value checked (a coverage in (0, 1), a
        known method, one probability in [0, 1] and one count per class for each input
        combination of ``image`` and ``tabular``).

        Raises
        ------
        ValueError
            Naming the key at fault.
        """
        d = checks.keys(d, where, required=("coverage", "method", "minimum"), optional=("patients",))
        coverage = checks.number(d["coverage"], where / "coverage", low=0, high=1, low_open=True, high_open=True)
        method = checks.text(d["method"], where / "method", choices=METHODS)
        minimum, patients = {}, {}
        allowed = {"image", "tabular", "image+tabular"}
        for key, values in checks.mapping(d["minimum"], where / "minimum").items():
            if key not in allowed:
                raise (where / "minimum").refuse(
                    f"{where / 'minimum'} names inputs {key!r}; accepted: {sorted(allowed)}",
                    value=key,
                    accepted=str(sorted(allowed)),
                )
            minimum[key] = _per_class(values, where / "minimum" / key, k, high=1)
        for key, values in checks.mapping(d.get("patients", {}), where / "patients").items():
            at = where / "patients" / key
            _per_class(values, at, k)  # a list of k numbers
            patients[key] = [checks.integer(v, at.item(i), low=0) for i, v in enumerate(values)]
        return cls(coverage=coverage, method=method, minimum=minimum, patients=patients)


def _per_class(values, where: Where, k: int | None, *, high: float | None = None) -> list[float]:
    """One non-negative number per class (``k`` of them when known), at most ``high``."""
    numbers = checks.numbers_list(values, where, length=k, low=0)
    if high is not None:
        numbers = [checks.number(v, where.item(i), low=0, high=high) for i, v in enumerate(numbers)]
    return numbers


def coverage_report(
    y: np.ndarray, inside: np.ndarray, classes: Sequence[str], groups=None, *, seed: int = 0, n_boot: int = 1000
) -> dict:
    """Empirical coverage (how often the set held the true class) and mean set size on
    held-out rows, overall and per true class, each with a patient-bootstrap interval
    (:func:`fusion.evaluation.intervals.bootstrap_interval`)."""
    from fusion.evaluation.intervals import bootstrap_interval

    y = np.asarray(y, dtype=np.int64)
    inside = np.asarray(inside, dtype=bool)
    groups = None if groups is None else np.asarray(groups)

    def covered(yy, mm):
        return float(mm[np.arange(len(yy)), yy].mean()) if len(yy) else None

    def size(yy, mm):
        return float(mm.sum(axis=1).mean()) if len(yy) else None

    def interval(rows, metric):
        r = bootstrap_interval(
            y[rows],
            inside[rows].astype(np.float64),
            None if groups is None else groups[rows],
            metric=lambda yy, mm: metric(yy, mm.astype(bool)),
            n_boot=n_boot,
            seed=seed,
        )
        return {"value": r["point"], "low": r["low"], "high": r["high"]}

    everyone = np.ones(len(y), dtype=bool)
    report = {
        "n": len(y),
        "coverage": interval(everyone, covered),
        "set_size": interval(everyone, size),
        "sizes": {str(s): int((inside.sum(axis=1) == s).sum()) for s in range(1, inside.shape[1] + 1)},
        "per_class": {},
    }
    for c, name in enumerate(classes):
        rows = y == c
        if rows.any():
            report["per_class"][name] = {
                "n": int(rows.sum()),
                "coverage": interval(rows, covered),
                "set_size": interval(rows, size),
            }
    return report


def set_report(sets: ConformalSets, y, proba, used: Sequence[str], classes, groups=None, *, seed: int = 0) -> dict:
    """:func:`coverage_report` of ``sets`` on held-out rows answered from inputs
    ``used``, with the coverage asked for and the method: what the model card shows."""
    inside = sets.contains(proba, used)
    report = coverage_report(y, inside, classes, groups, seed=seed)
    return {"target": sets.coverage, "method": sets.method, "inputs": pattern(used), **report}
