"""Calibrated probabilities and operating points, fitted on the validation split.

A network trained with class weights, or a booster stopped by a score, gives
probabilities whose *ranking* is right but whose *values* may not be: "0.9" may be
right 70 % of the time. Temperature scaling (Guo et al., ICML 2017) fixes this with one
number fitted after training: ``p = softmax(log p_raw / T)``, which changes no ranking
and no predicted class. Per-class vector scaling (``softmax(a * log p_raw + b)``, every
``a`` positive) is taken instead only when every class has at least
``VECTOR_MIN_PER_CLASS`` validation rows and it gives both a lower ECE and a lower NLL in
a cross-validation *within* the validation split: with a few dozen validation films (two
normals in covid-chestxray's) its extra parameters fit noise, and an unconstrained fit
there once turned a class's scale negative, inverting its ranking.

An operating point is, per class, the lowest probability threshold that still reaches a
target sensitivity on the validation split (0.95 for disease classes by default): above
it, the class should not be ruled out. Both are plain numbers saved in the model
folder's ``calibration.json``.

The decision rule (``calibration.decision``) reads a label off the calibrated
probabilities: ``argmax``, the most probable class, which with a 58:1 imbalance lets the
frequent classes outvote the rare ones; or ``balanced``, the class whose probability
most exceeds its prior, ``argmax_c p(c|x) / prior(c)``. For calibrated probabilities
that is the rule that maximises the expected balanced accuracy (mean per-class
recall): balanced accuracy is ``(1/k) sum_c P(label c | class c)`` and ``P(x | c)`` is
proportional to ``p(c|x) / prior(c)``. The prior to divide by is the one the
probabilities embody, which is not always the data's: a network trained with class
weights already gives about ``p(c|x) / prior(c)`` (dividing again would favour the
rare classes twice), one trained without them gives ``p(c|x)``. So the priors are
estimated on the validation split (:func:`embodied_priors`) as the adjustment that makes
the probabilities match the split's class frequencies on average (Saerens et al.,
Neural Computation 2002): the divisor is the class frequency for calibrated
probabilities and about uniform for a class-weighted network.

Example
-------
>>> import numpy as np
>>> y = np.array([0, 1] * 50); raw = np.where(np.arange(100)[:, None] % 2 == np.arange(2), 0.99, 0.01)
>>> cal = Calibration.fit(y, raw)
>>> bool(np.all(cal.apply(raw).argmax(1) == raw.argmax(1)))
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fusion import checks
from fusion.checks import Where
from fusion.evaluation.conformal import ConformalSets
from fusion.evaluation.metrics import expected_calibration_error
from fusion.schema import short_repr

if TYPE_CHECKING:
    from fusion.config import CalibrationConfig

FLOOR = 1e-12
METHODS = ("none", "temperature", "vector")
DECISIONS = ("argmax", "balanced")
MIN_CASES = 10  # validation rows of a class below which no figure of that class is fitted
VECTOR_MIN_PER_CLASS = MIN_CASES  # validation rows of every class before vector scaling is tried


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], FLOOR, 1.0))))


def brier(y: np.ndarray, proba: np.ndarray) -> float:
    """Multi-class Brier score: mean squared distance to the one-hot truth."""
    onehot = np.eye(proba.shape[1])[y]
    return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))


def _fit_temperature(logp: np.ndarray, y: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(
        lambda t: nll(y, _softmax(logp / np.exp(t))), bounds=(np.log(0.05), np.log(20.0)), method="bounded"
    )
    return float(np.exp(result.x))


def _fit_vector(logp: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import minimize

    k = logp.shape[1]

    def loss(theta):
        # a = exp(theta[:k]) stays positive: a scale can sharpen or soften a class, never
        # invert its ranking. L2 towards the identity (a = 1, b = 0) keeps rare classes sane.
        log_a, b = theta[:k], theta[k:]
        return nll(y, _softmax(logp * np.exp(log_a) + b)) + 1e-2 * (np.sum(log_a**2) + np.sum(b**2))

    result = minimize(loss, np.zeros(2 * k), method="L-BFGS-B")
    return np.exp(result.x[:k]), result.x[k:]


@dataclass
class Calibration:
    """How a model's raw probabilities become calibrated ones.

    Attributes
    ----------
    method : {"temperature", "vector", "none"}
    temperature : float
    scale, shift : list of float
        Vector scaling's per-class ``a`` and ``b``.
    thresholds : dict of str -> float
        Operating point of each class it was set for.
    target_sensitivity : float
    report : dict
        NLL, ECE and Brier score on the validation split before and after.
    decision : {"argmax", "balanced"}
        How a label is read off the calibrated probabilities (:meth:`decide`).
    priors : list of float
        The balanced decision's divisors, one per class (empty for argmax).
    conformal : ConformalSets or None
        The prediction sets' thresholds, fitted on the validation split's calibrated
        probabilities (:mod:`fusion.evaluation.conformal`); None without a validation
        split, and in folders saved before they existed.
    withheld : list of str
        The figures that were not fitted because a class had fewer than
        :data:`MIN_CASES` validation rows, each with its reason (the model card lists
        them): a threshold fitted on 2 films would be printed as if it meant something.
    """

    method: str = "none"
    temperature: float = 1.0
    scale: list[float] = field(default_factory=list)
    shift: list[float] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    target_sensitivity: float = 0.95
    report: dict = field(default_factory=dict)
    decision: str = "argmax"
    priors: list[float] = field(default_factory=list)
    conformal: ConformalSets | None = None
    withheld: list[str] = field(default_factory=list)

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """The class index of each row of calibrated probabilities (n, k): the most
        probable, or with the balanced decision the one whose probability most
        exceeds its prior."""
        from fusion.prediction import decide

        return decide(proba, self.priors or None)

    def apply(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, shape and class order of ``proba``."""
        proba = np.asarray(proba, dtype=np.float64)
        if self.method == "none" or len(proba) == 0:
            return proba
        logp = np.log(np.clip(proba, FLOOR, 1.0))
        if self.method == "temperature":
            return _softmax(logp / self.temperature)
        return _softmax(logp * np.asarray(self.scale) + np.asarray(self.shift))

    @classmethod
    def fit(
        cls, y: np.ndarray, proba: np.ndarray, *, folds: int = 5, seed: int = 0, classes: Sequence[str] | None = None
    ) -> Calibration:
        """Temperature scaling on the validation split ``(y, proba)``, or vector scaling
        when every class has ``VECTOR_MIN_PER_CLASS`` rows and vector scaling has both the
        lower ECE and the lower NLL in a ``folds``-fold cross-validation within it."""
        y = np.asarray(y, dtype=np.int64)
        logp = np.log(np.clip(np.asarray(proba, dtype=np.float64), FLOOR, 1.0))
        temperature = _fit_temperature(logp, y)
        method, scale, shift = "temperature", [], []
        counts = np.bincount(y, minlength=logp.shape[1])
        withheld = []
        if counts.min() < VECTOR_MIN_PER_CLASS:
            rare = int(counts.argmin())
            name = classes[rare] if classes is not None else f"class {rare}"
            withheld.append(
                f"vector scaling (one scale per class) not tried: {name} has {counts.min()} validation rows, fewer "
                f"than {VECTOR_MIN_PER_CLASS}; one temperature for all classes is fitted instead, and {name}'s "
                "probabilities are calibrated mostly on the other classes"
            )
        else:
            rng = np.random.default_rng(seed)
            order = rng.permutation(len(y))
            cv = {"temperature": np.zeros_like(logp), "vector": np.zeros_like(logp)}
            for part in np.array_split(order, folds):
                rest = np.setdiff1d(order, part)
                cv["temperature"][part] = _softmax(logp[part] / _fit_temperature(logp[rest], y[rest]))
                a, b = _fit_vector(logp[rest], y[rest])
                cv["vector"][part] = _softmax(logp[part] * a + b)
            ece = {name: expected_calibration_error(y, p) for name, p in cv.items()}
            loss = {name: nll(y, p) for name, p in cv.items()}
            if ece["vector"] < ece["temperature"] and loss["vector"] < loss["temperature"]:
                method = "vector"
                a, b = _fit_vector(logp, y)
                scale, shift = a.tolist(), b.tolist()
        return cls(method=method, temperature=temperature, scale=scale, shift=shift, withheld=withheld)

    def set_decision(self, decision: str, y: np.ndarray, proba: np.ndarray) -> None:
        """Read labels by ``decision`` from now on; for the balanced one, estimate the
        priors on rows ``(y, proba)`` (raw probabilities of the validation split,
        calibrated here first)."""
        self.decision = decision
        self.priors = embodied_priors(y, self.apply(proba)).tolist() if decision == "balanced" else []

    def set_operating_points(
        self, y: np.ndarray, proba: np.ndarray, classes, disease: list[str], target: float
    ) -> None:
        """Per disease class, the highest threshold on calibrated probability that keeps
        validation sensitivity >= ``target``. A class with fewer than :data:`MIN_CASES`
        validation rows gets none, and :attr:`withheld` says why."""
        calibrated = self.apply(proba)
        self.target_sensitivity = target
        self.thresholds = {}
        for i, c in enumerate(classes):
            scores = calibrated[y == i, i]
            if c not in disease:
                continue
            if len(scores) < MIN_CASES:
                self.withheld.append(
                    f"operating point of {c}: {len(scores)} validation rows of {c}, fewer than {MIN_CASES}; "
                    "no threshold is set (none would mean anything)"
                )
                continue
            # The k-th smallest positive score, k = allowed misses: >= it keeps enough positives.
            allowed = int(np.floor((1.0 - target) * len(scores)))
            self.thresholds[c] = float(np.sort(scores)[allowed])

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "temperature": self.temperature,
            "scale": self.scale,
            "shift": self.shift,
            "thresholds": self.thresholds,
            "target_sensitivity": self.target_sensitivity,
            "report": self.report,
            # Written only when the balanced decision is asked for: a file without them
            # (every one written before they existed) means argmax.
            **({"decision": self.decision, "priors": self.priors} if self.decision != "argmax" else {}),
            **({"conformal": self.conformal.to_dict()} if self.conformal is not None else {}),
            **({"withheld": self.withheld} if self.withheld else {}),
        }

    @classmethod
    def from_dict(cls, d: dict, classes=None, *, where: Where | None = None) -> Calibration:
        """Rebuild from :meth:`to_dict`, every value checked: a known method, a finite
        positive temperature, one finite positive scale and one finite shift per class
        for vector scaling, thresholds in [0, 1] of known classes (``classes``, when
        given), a target sensitivity in (0, 1).

        ``where``: the place the dict was read from, for messages (a model folder's
        loader gives ``.../calibration.json``).

        Raises
        ------
        ValueError
            Naming the key at fault (``thresholds.covid must be ...``): a negative
            temperature or scale would invert every prediction.
        """
        where = where or Where("calibration")
        known = (
            "temperature",
            "scale",
            "shift",
            "thresholds",
            "target_sensitivity",
            "report",
            "decision",
            "priors",
            "conformal",
            "withheld",
        )
        d = checks.keys(d, where, required=("method",), optional=known)
        method = checks.text(d["method"], where / "method", choices=METHODS)
        k = None if classes is None else len(classes)
        temperature = checks.number(d.get("temperature", 1.0), where / "temperature", low=0, low_open=True)
        scale = checks.numbers_list(d.get("scale", []), where / "scale", low=0, low_open=True)
        shift = checks.numbers_list(d.get("shift", []), where / "shift")
        for key, values in (("scale", scale), ("shift", shift)):
            if (method == "vector" or values) and k is not None and len(values) != k:
                raise (where / key).refuse(
                    f"{where / key} must hold {k} numbers (one per class); got {len(values)}",
                    value=values,
                    accepted=f"{k} numbers",
                )
            if method == "vector" and not values:
                raise (where / key).refuse(
                    f"{where / key} must hold one number per class for vector scaling",
                    value=values,
                    accepted="one number per class",
                )
        thresholds = checks.mapping(d.get("thresholds", {}), where / "thresholds")
        unknown = [c for c in thresholds if classes is not None and c not in classes]
        if unknown:
            raise (where / "thresholds").refuse(
                f"{where / 'thresholds'} names {short_repr(unknown[0])}, which is not a class of {list(classes)}",
                value=unknown[0],
                accepted=f"classes of {list(classes)}",
            )
        return cls(
            method=method,
            temperature=temperature,
            scale=scale,
            shift=shift,
            thresholds={c: checks.number(v, where / "thresholds" / c, low=0, high=1) for c, v in thresholds.items()},
            target_sensitivity=checks.number(
                d.get("target_sensitivity", 0.95),
                where / "target_sensitivity",
                low=0,
                high=1,
                low_open=True,
                high_open=True,
            ),
            report=checks.mapping(d.get("report", {}), where / "report"),
            **_read_decision(d, where, k),
            conformal=ConformalSets.from_dict(d["conformal"], k, where=where / "conformal")
            if "conformal" in d
            else None,
            withheld=list(checks.texts(d.get("withheld", []), where / "withheld")) if d.get("withheld") else [],
        )


def _read_decision(d: dict, where: Where, k: int | None) -> dict:
    """``decision`` and ``priors``, checked: the balanced decision needs one positive
    finite prior per class; argmax none."""
    decision = checks.text(d.get("decision", "argmax"), where / "decision", choices=DECISIONS)
    priors = checks.numbers_list(d.get("priors", []), where / "priors", low=0, low_open=True)
    expected = 0 if decision == "argmax" else k
    if (expected is not None and len(priors) != expected) or (decision == "balanced" and not priors):
        accepted = "none for argmax" if decision == "argmax" else f"{k} positive numbers (one per class)"
        raise (where / "priors").refuse(
            f"{where / 'priors'} must hold {accepted}; got {short_repr(priors)}", value=priors, accepted=accepted
        )
    return {"decision": decision, "priors": priors}


def embodied_priors(y: np.ndarray, proba: np.ndarray, *, iterations: int = 1000, tol: float = 1e-10) -> np.ndarray:
    """The class prior that probabilities ``proba`` (n, k) embody on rows of classes
    ``y``: the divisor of the balanced decision (see the module's docstring).

    Per-class factors ``v`` are found such that the probabilities reweighted by them,
    ``normalise(proba * v)``, average to the class frequencies ``f`` of ``y`` (add-one
    smoothed, so that a class absent from a small split keeps a prior); the prior is
    ``f / v``, normalised. The factors minimise a convex function of ``log v`` (mean
    log-sum-exp minus ``f . log v``), found by the fixed point ``v <- v * f / mean``
    (iterative proportional fitting; Saerens, Latinne & Decaestecker 2002).

    Example
    -------
    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> embodied_priors(np.array([0, 0, 1, 0]), p).round(2)  # calibrated: about the frequencies
    array([0.64, 0.36])
    """
    y = np.asarray(y, dtype=np.int64)
    proba = np.clip(np.asarray(proba, dtype=np.float64), FLOOR, 1.0)
    k = proba.shape[1]
    freq = (np.bincount(y, minlength=k) + 1.0) / (len(y) + k)
    v = np.ones(k)
    for _ in range(iterations):
        adjusted = proba * v
        mean = (adjusted / adjusted.sum(axis=1, keepdims=True)).mean(axis=0)
        step = freq / mean
        v = v * step
        v /= v.sum()
        if np.max(np.abs(step - 1.0)) < tol:
            break
    prior = freq / v
    return prior / prior.sum()


def fit_calibration(
    y: np.ndarray, raw: np.ndarray, classes: Sequence[str], config: CalibrationConfig, *, seed: int = 0
) -> Calibration:
    """A model's calibration fitted on the validation split ``(y, raw)``: the scaling,
    the operating point of every disease class (each class not in ``config.healthy``)
    and the report of what the scaling changed, as ``calibration.json`` keeps them."""
    calibration = Calibration.fit(y, raw, seed=seed, classes=classes)
    disease = [c for c in classes if c not in config.healthy]
    calibration.set_operating_points(y, raw, classes, disease, config.target_sensitivity)
    calibration.report = {"val": calibration_report(y, raw, calibration.apply(raw))}
    return calibration


def reliability_bins(y: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> list[dict]:
    """The reliability diagram's points with their weight: for each non-empty bin of the
    top-class confidence, its edges, how many predictions fell in it, their mean
    confidence and the fraction that were right. A bin of 2 films is not as weighty as
    one of 200, and the count says so."""
    proba = np.asarray(proba, dtype=np.float64)
    confidence, correct = proba.max(axis=1), proba.argmax(axis=1) == np.asarray(y)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1]), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            out.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "n": int(inside.sum()),
                    "confidence": float(confidence[inside].mean()),
                    "accuracy": float(correct[inside].mean()),
                }
            )
    return out


def calibration_report(y: np.ndarray, raw: np.ndarray, calibrated: np.ndarray) -> dict:
    """NLL, ECE and Brier score before and after calibration."""
    return {
        "before": {"nll": nll(y, raw), "ece": expected_calibration_error(y, raw), "brier": brier(y, raw)},
        "after": {
            "nll": nll(y, calibrated),
            "ece": expected_calibration_error(y, calibrated),
            "brier": brier(y, calibrated),
        },
    }


def operating_point_report(y: np.ndarray, calibrated: np.ndarray, classes, thresholds: dict[str, float]) -> dict:
    """Sensitivity and specificity each class's operating point gives on ``y``."""
    out = {}
    for i, c in enumerate(classes):
        if c not in thresholds:
            continue
        above = calibrated[:, i] >= thresholds[c]
        positive = y == i
        out[c] = {
            "threshold": thresholds[c],
            "sensitivity": float(above[positive].mean()) if positive.any() else None,
            "specificity": float((~above[~positive]).mean()) if (~positive).any() else None,
            "n_positive": int(positive.sum()),
            "n_negative": int((~positive).sum()),
        }
    return out
