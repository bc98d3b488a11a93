"""Classification metrics, the same for every model and split.

Macro metrics come first because clinical classes are imbalanced (normal films are
rare in COVID-19 collections): accuracy alone rewards ignoring the small class.

Example
-------
>>> import numpy as np
>>> m = classification_metrics(np.array([0, 1, 1]), np.array([[.9, .1], [.2, .8], [.6, .4]]), ("a", "b"))
>>> round(m["accuracy"], 3), m["confusion_matrix"]
(0.667, [[1, 0], [1, 1]])
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> float:
    """ECE of the top-class confidence, equal-width bins (Guo et al., 2017)."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def macro_f1(y_true: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 over the classes present in ``y_true``, so a split without a rare class
    is not scored zero for it. Early stopping and the reported metrics both use this."""
    present = sorted(set(np.asarray(y_true).tolist()))
    from sklearn.metrics import f1_score  # here, not at import: predictions never need it

    return float(f1_score(y_true, pred, labels=present, average="macro", zero_division=0))


def _auroc(y_binary: np.ndarray, score: np.ndarray) -> float | None:
    if y_binary.min() == y_binary.max():
        return None  # undefined with one class present
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y_binary, score))


def classification_metrics(y_true, proba, classes) -> dict:
    """Accuracy, macro-F1, macro one-vs-rest AUROC, ECE, per-class figures and the
    confusion matrix.

    Parameters
    ----------
    y_true : array of int, shape (n,)
    proba : array of float, shape (n, n_classes)
    classes : sequence of str

    Returns
    -------
    dict
        JSON-ready: ``accuracy``, ``macro_f1``, ``auroc_macro`` (None when undefined),
        ``ece``, ``per_class`` (``precision``, ``recall``, ``sensitivity``,
        ``specificity``, ``f1``, ``auroc``, ``support`` per class) and
        ``confusion_matrix`` (rows: true class, columns: predicted).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(classes)
    if proba.ndim != 2 or proba.shape != (len(y_true), k):
        raise ValueError(f"proba must have shape ({len(y_true)}, {k}); got {proba.shape}")
    if len(y_true) == 0:
        raise ValueError("cannot score an empty set")
    pred = proba.argmax(axis=1)
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y_true, pred, labels=list(range(k)))
    per_class, aurocs = {}, []
    for i, name in enumerate(classes):
        tp = cm[i, i]
        fn = cm[i].sum() - tp
        fp = cm[:, i].sum() - tp
        tn = cm.sum() - tp - fn - fp
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        auroc = _auroc((y_true == i).astype(int), proba[:, i])
        if auroc is not None:
            aurocs.append(auroc)
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "sensitivity": float(recall),
            "specificity": float(tn / (tn + fp)) if tn + fp else 0.0,
            "f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
            "auroc": auroc,
            "support": int(cm[i].sum()),
        }
    present = sorted(set(y_true.tolist()))
    return {
        "accuracy": float((pred == y_true).mean()),
        "macro_f1": macro_f1(y_true, pred),
        "auroc_macro": float(np.mean(aurocs)) if len(aurocs) == len(present) and len(present) > 1 else None,
        "ece": expected_calibration_error(y_true, proba),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def format_metrics(metrics: dict, title: str = "") -> str:
    """A readable table of one metrics dict (as written to ``metrics.json``)."""

    def num(v):
        return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.3f}"

    ci = metrics.get("intervals") or {}

    def with_ci(value, interval) -> str:
        return num(value) + (f" [{interval['low']:.3f}, {interval['high']:.3f}]" if interval else "")

    lines = [title] if title else []
    lines.append(
        f"accuracy {with_ci(metrics['accuracy'], ci.get('accuracy'))}   "
        f"macro-F1 {with_ci(metrics['macro_f1'], ci.get('macro_f1'))}\n"
        f"macro AUROC {with_ci(metrics['auroc_macro'], ci.get('auroc_macro'))}   "
        f"ECE {with_ci(metrics['ece'], ci.get('ece'))}"
    )
    if ci:
        lines.append(f"(95% intervals: bootstrap over {ci['n_boot']} resamples of {ci['unit']}s)")
    lines.append(f"{'class':<14}{'precision':>10}{'recall':>10}{'specif.':>10}{'f1':>10}{'auroc':>10}{'n':>7}")
    for name, pc in metrics["per_class"].items():
        lines.append(
            f"{name:<14}{num(pc['precision']):>10}{num(pc['recall']):>10}{num(pc['specificity']):>10}"
            f"{num(pc['f1']):>10}{num(pc['auroc']):>10}{pc['support']:>7}"
        )
        if name in ci.get("per_class", {}):
            iv = ci["per_class"][name]
            parts = [
                f"{m} [{iv[m]['low']:.2f}, {iv[m]['high']:.2f}]"
                for m in ("sensitivity", "specificity", "auroc")
                if iv[m]
            ]
            if parts:
                lines.append(f"{'':<14}  95%: " + ", ".join(parts))
    return "\n".join(lines)


# ------------------------------------------------------------ intervals by patient
def rank_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """AUROC as the Mann-Whitney statistic (ties count one half), from ranks: the same
    number as scikit-learn's ``roc_auc_score``, fast enough for thousands of bootstrap
    replicates."""
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = average_rank[inverse]
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_auroc(y_true: np.ndarray, proba: np.ndarray) -> float | None:
    """Mean one-vs-rest AUROC over the classes present (None with fewer than two)."""
    y_true = np.asarray(y_true)
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    return float(np.mean([rank_auroc(y_true == k, proba[:, k]) for k in present]))


def _patient_rows(groups: np.ndarray | None, n: int) -> list[np.ndarray]:
    """Row indices of each patient (each row its own patient without groups)."""
    if groups is None:
        return [np.array([i]) for i in range(n)]
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    return np.split(order, bounds)


def bootstrap_interval(
    y_true,
    proba,
    groups=None,
    *,
    metric=macro_auroc,
    baseline=None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """A metric with a bootstrap interval that resamples *patients*, not films.

    Films of one patient are correlated: resampling them one by one pretends there is
    more independent evidence than there is and gives intervals that are too narrow.
    Each replicate draws patients with replacement and keeps all their films.

    Parameters
    ----------
    y_true : array of int, shape (n,)
    proba : array, shape (n, n_classes)
    groups : array, shape (n,), optional
        Patient ids; without them each row is its own patient.
    metric : callable
        ``metric(y_true, proba) -> float or None`` (None: undefined on that replicate,
        which is then skipped).
    baseline : array, shape (n, n_classes), optional
        A second model's probabilities for the same rows: the interval is then of the
        *paired* difference ``metric(proba) - metric(baseline)``, same patients in each
        replicate.
    n_boot, level, seed
        Replicates, coverage and the seed (the interval is reproducible).

    Returns
    -------
    dict
        ``point`` (on all rows), ``low``, ``high``, ``n_boot`` (replicates where the
        metric was defined), ``level``.

    Example
    -------
    >>> y = np.array([0, 1] * 20); p = np.c_[1 - y * 0.8, y * 0.8 + 0.1]
    >>> r = bootstrap_interval(y, p / p.sum(1, keepdims=True), n_boot=200)
    >>> r["low"] <= r["point"] <= r["high"]
    True
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)

    def value(index):
        a = metric(y_true[index], proba[index])
        if baseline is None or a is None:
            return a
        b = metric(y_true[index], np.asarray(baseline)[index])
        return None if b is None else a - b

    point = value(np.arange(len(y_true)))
    patients = _patient_rows(groups, len(y_true))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        picked = rng.integers(0, len(patients), len(patients))
        v = value(np.concatenate([patients[i] for i in picked]))
        if v is not None:
            values.append(v)
    if not values:
        return {"point": point, "low": None, "high": None, "n_boot": 0, "level": level}
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return {"point": point, "low": float(low), "high": float(high), "n_boot": len(values), "level": level}


def _headline(y: np.ndarray, proba: np.ndarray, k: int) -> dict[str, float | None]:
    """The headline figures of one (re)sample, in plain numpy (fast enough to repeat
    a thousand times): accuracy, macro-F1 and macro AUROC over the classes present,
    ECE, and each class's sensitivity, specificity and AUROC."""
    pred = proba.argmax(axis=1)
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    present = np.flatnonzero(cm.sum(axis=1) > 0)
    out: dict[str, float | None] = {"accuracy": float((pred == y).mean())}
    f1 = []
    for i in range(k):
        tp, fn, fp = cm[i, i], cm[i].sum() - cm[i, i], cm[:, i].sum() - cm[i, i]
        tn = cm.sum() - tp - fn - fp
        out[f"sensitivity.{i}"] = float(tp / (tp + fn)) if tp + fn else None
        out[f"specificity.{i}"] = float(tn / (tn + fp)) if tn + fp else None
        positive = y == i
        out[f"auroc.{i}"] = rank_auroc(positive, proba[:, i]) if 0 < positive.sum() < len(y) else None
        if i in present:
            f1.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    out["macro_f1"] = float(np.mean(f1))
    aurocs = [out[f"auroc.{i}"] for i in present]
    out["auroc_macro"] = float(np.mean(aurocs)) if len(present) > 1 and None not in aurocs else None
    out["ece"] = expected_calibration_error(y, proba)
    return out


def metric_intervals(
    y_true, proba, classes, groups=None, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict:
    """95 % intervals of every headline metric, from one patient bootstrap.

    Replicates resample patients (``groups``) with replacement, keeping all their films
    (see :func:`bootstrap_interval`); seeded, so the intervals are reproducible.

    Returns
    -------
    dict
        ``accuracy``, ``macro_f1``, ``auroc_macro``, ``ece``: each ``{"low", "high"}``;
        ``per_class``: class -> ``{"sensitivity", "specificity", "auroc"}`` intervals;
        ``n_boot``, ``level``, ``unit`` ("patient" or "row"). An interval is None where
        the metric is undefined in most replicates (a class too rare to resample).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(classes)
    patients = _patient_rows(groups, len(y_true))
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        index = np.concatenate([patients[i] for i in rng.integers(0, len(patients), len(patients))])
        for key, value in _headline(y_true[index], proba[index], k).items():
            if value is not None:
                samples.setdefault(key, []).append(value)
    tail = (1.0 - level) / 2 * 100

    def interval(key: str) -> dict | None:
        values = samples.get(key, [])
        if len(values) < n_boot / 2:
            return None
        low, high = np.percentile(values, [tail, 100 - tail])
        return {"low": float(low), "high": float(high)}

    out = {name: interval(name) for name in ("accuracy", "macro_f1", "auroc_macro", "ece")}
    out["per_class"] = {
        c: {m: interval(f"{m}.{i}") for m in ("sensitivity", "specificity", "auroc")} for i, c in enumerate(classes)
    }
    out.update(n_boot=n_boot, level=level, unit="patient" if groups is not None else "row")
    return out
