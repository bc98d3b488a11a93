"""Intervals that resample patients, not films: a metric's sampling noise with a
few hundred correlated films is large, and a point estimate alone misleads."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from fusion.evaluation.metrics import ECE_BINS

_ECE_EDGES = np.linspace(0.0, 1.0, ECE_BINS + 1)


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


def _weighted_auroc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One-vs-rest AUROC of each replicate, a replicate being row weights (how often
    each row was drawn): the Mann-Whitney statistic with ties counting one half, as
    :func:`rank_auroc` gives on the resampled rows, without building them."""
    order = np.argsort(score, kind="stable")
    score, positive, weights = score[order], positive[order], weights[:, order]
    first = np.r_[True, score[1:] != score[:-1]]  # start of each run of tied scores
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(score)] - 1
    negative = weights * ~positive
    below = np.cumsum(negative, axis=1)  # negatives at or below each row
    before = below[:, starts] - negative[:, starts]  # negatives strictly below each tie group
    tied = below[:, ends] - before  # negatives tied with each group
    credit = before + 0.5 * tied  # (replicates, groups)
    w_pos = weights * positive
    numerator = (w_pos * credit[:, group]).sum(axis=1)
    n_pos, n_neg = w_pos.sum(axis=1), negative.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), numerator / (n_pos * n_neg), np.nan)


def _headline(y: np.ndarray, proba: np.ndarray, k: int, weights: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """The headline figures of many resamples at once, each resample given as row
    weights (shape (replicates, n)): accuracy, balanced accuracy, macro-F1 and macro
    AUROC over the classes present, ECE, and each class's sensitivity, specificity and AUROC. NaN
    where a figure is undefined in a replicate. A thousand replicates cost a few
    matrix products instead of a thousand Python loops. ``pred``: the labels counted
    (a decision rule's); ECE stays about the most probable class."""
    total = weights.sum(axis=1)
    correct = (pred == y).astype(np.float64)
    out: dict[str, np.ndarray] = {"accuracy": weights @ correct / total}
    cells = np.zeros((len(y), k * k))
    cells[np.arange(len(y)), y * k + pred] = 1.0
    cm = (weights @ cells).reshape(-1, k, k)
    support = cm.sum(axis=2)
    present = support > 0
    f1 = np.zeros_like(support)
    recall = np.zeros_like(support)
    aurocs = np.full_like(support, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(k):
            tp = cm[:, i, i]
            fn, fp = support[:, i] - tp, cm[:, :, i].sum(axis=1) - tp
            tn = total - tp - fn - fp
            out[f"sensitivity.{i}"] = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
            recall[:, i] = np.where(present[:, i], out[f"sensitivity.{i}"], 0.0)
            out[f"specificity.{i}"] = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
            aurocs[:, i] = out[f"auroc.{i}"] = _weighted_auroc(y == i, proba[:, i], weights)
            f1[:, i] = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    n_present = present.sum(axis=1)
    out["balanced_accuracy"] = recall.sum(axis=1) / n_present
    out["macro_f1"] = (f1 * present).sum(axis=1) / n_present
    defined = (n_present > 1) & ~np.isnan(np.where(present, aurocs, 0.0)).any(axis=1)
    out["auroc_macro"] = np.where(defined, np.nansum(np.where(present, aurocs, 0.0), axis=1) / n_present, np.nan)
    confidence = proba.max(axis=1)
    bins = np.zeros((len(y), ECE_BINS))
    bins[np.arange(len(y)), np.clip(np.searchsorted(_ECE_EDGES, confidence, side="left") - 1, 0, ECE_BINS - 1)] = 1.0
    top_correct = (proba.argmax(axis=1) == y).astype(np.float64)
    gap = weights @ (bins * (top_correct - confidence)[:, None])
    out["ece"] = np.abs(gap).sum(axis=1) / total
    return out


def _row_owner(patients: list[np.ndarray], n: int) -> np.ndarray:
    """The patient index of each row."""
    owner = np.empty(n, dtype=np.int64)
    for p, rows in enumerate(patients):
        owner[rows] = p
    return owner


def _replicate_weights(owner: np.ndarray, n_patients: int, picks: np.ndarray) -> np.ndarray:
    """Row weights of replicates drawn as patient indices (shape (replicates, patients)):
    each row counts as often as its patient was drawn."""
    counts = np.stack([np.bincount(row, minlength=n_patients) for row in picks])
    return counts[:, owner].astype(np.float64)


def _replicates(n: int, groups, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The row weights of ``n_boot`` patient-bootstrap replicates of ``n`` rows, in
    blocks (shape (replicates, n)) of bounded memory on large splits. Each replicate
    draws patients (``groups``) with replacement; the draws depend on ``seed`` and the
    patients only, so two models scored on the same rows meet the same replicates."""
    patients = _patient_rows(groups, n)
    rng = np.random.default_rng(seed)
    picks = np.stack([rng.integers(0, len(patients), len(patients)) for _ in range(n_boot)])
    block = max(1, 2_000_000 // max(1, n))
    owner = _row_owner(patients, n)
    for b in range(0, n_boot, block):
        yield _replicate_weights(owner, len(patients), picks[b : b + block])


def metric_intervals(
    y_true,
    proba,
    classes,
    groups=None,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    pred=None,
    unit: str = "patient",
) -> dict:
    """95 % intervals of every headline metric, from one patient bootstrap.

    Replicates resample patients (``groups``) with replacement, keeping all their films
    (see :func:`bootstrap_interval`); seeded, so the intervals are reproducible.
    ``pred``: the predicted labels the counts are of (default the most probable
    class), as :func:`~fusion.evaluation.metrics.classification_metrics` takes them.

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``auroc_macro``, ``ece``:
        each ``{"low", "high"}``
        (percentile intervals; for ECE, whose resamples are biased upwards, the basic
        bootstrap interval around the point estimate);
        ``per_class``: class -> ``{"sensitivity", "specificity", "auroc"}`` intervals;
        ``n_boot``, ``level``, ``unit`` (what was resampled: ``unit``, the word for
        a group, "patient" unless the schema's group is another, e.g. "lesion"; "row"
        without groups). An interval is None where
        the metric is undefined in most replicates (a class too rare to resample).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    pred = proba.argmax(axis=1) if pred is None else np.asarray(pred, dtype=np.int64)
    k = len(classes)
    samples: dict[str, list[np.ndarray]] = {}
    for weights in _replicates(len(y_true), groups, n_boot, seed):
        for key, values in _headline(y_true, proba, k, weights, pred).items():
            samples.setdefault(key, []).append(values)
    tail = (1.0 - level) / 2 * 100
    ones = np.ones((1, len(y_true)))
    point = {key: float(v[0]) for key, v in _headline(y_true, proba, k, ones, pred).items()}

    def interval(key: str) -> dict | None:
        values = np.concatenate(samples[key])
        values = values[~np.isnan(values)]
        if len(values) < n_boot / 2:
            return None
        low, high = np.percentile(values, [tail, 100 - tail])
        if key == "ece" and not np.isnan(point["ece"]):
            # ECE of a resample is biased upwards (binning noise only adds): the basic
            # bootstrap interval reflects the percentiles around the point estimate.
            low, high = max(0.0, 2 * point["ece"] - high), 2 * point["ece"] - low
        return {"low": float(low), "high": float(high)}

    out = {name: interval(name) for name in ("accuracy", "balanced_accuracy", "macro_f1", "auroc_macro", "ece")}
    out["per_class"] = {
        c: {m: interval(f"{m}.{i}") for m in ("sensitivity", "specificity", "auroc")} for i, c in enumerate(classes)
    }
    out.update(n_boot=n_boot, level=level, unit=unit if groups is not None else "row")
    return out


HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "auroc_macro", "ece")


def paired_differences(
    y_true,
    proba,
    baseline,
    classes,
    groups=None,
    *,
    pred=None,
    baseline_pred=None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Differences of every headline metric between two models scored on the same rows
    (``proba`` minus ``baseline``), each with a 95 % interval from one *paired* patient
    bootstrap: every replicate resamples patients once and scores both models on that
    resample, so what the two share (the same hard patients) cancels, and the interval
    is of the difference, not two intervals side by side (which overlap even when one
    model is better on nearly every resample).

    The replicates are those of :func:`metric_intervals` with the same ``seed`` and
    ``groups``; a model compared with itself differs by exactly 0 in every replicate.

    Parameters
    ----------
    y_true : array of int, shape (n,)
    proba, baseline : arrays, shape (n, n_classes)
        The two models' probabilities for the same rows, in the same order.
    classes : sequence of str
    groups : array, shape (n,), optional
        Patient ids; without them each row is its own patient.
    pred, baseline_pred : arrays of int, shape (n,), optional
        The labels each model gives (its decision rule's; default the most probable
        class), as :func:`metric_intervals` takes them.

    Returns
    -------
    dict
        For each of ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``auroc_macro``
        and ``ece``: ``{"point", "low", "high"}`` (``low`` and ``high`` None where the
        difference is undefined in most replicates; ``point`` None where it is
        undefined on all rows); ``n_boot``, ``level``.

    Example
    -------
    >>> y = np.array([0, 1] * 20); p = np.c_[1 - y * 0.8, y * 0.8 + 0.1]
    >>> d = paired_differences(y, p, p, ("a", "b"), n_boot=50)
    >>> d["macro_f1"]
    {'point': 0.0, 'low': 0.0, 'high': 0.0}
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    a, b = np.asarray(proba, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    pred_a = a.argmax(axis=1) if pred is None else np.asarray(pred, dtype=np.int64)
    pred_b = b.argmax(axis=1) if baseline_pred is None else np.asarray(baseline_pred, dtype=np.int64)
    k = len(classes)
    samples: dict[str, list[np.ndarray]] = {name: [] for name in HEADLINE}
    for weights in _replicates(len(y_true), groups, n_boot, seed):
        first, second = _headline(y_true, a, k, weights, pred_a), _headline(y_true, b, k, weights, pred_b)
        for name in HEADLINE:
            samples[name].append(first[name] - second[name])
    ones = np.ones((1, len(y_true)))
    first, second = _headline(y_true, a, k, ones, pred_a), _headline(y_true, b, k, ones, pred_b)
    tail = (1.0 - level) / 2 * 100
    out: dict = {}
    for name in HEADLINE:
        point = float(first[name][0] - second[name][0])
        values = np.concatenate(samples[name])
        values = values[~np.isnan(values)]
        low = high = None
        if len(values) >= n_boot / 2:
            low, high = (float(v) for v in np.percentile(values, [tail, 100 - tail]))
        out[name] = {"point": None if np.isnan(point) else point, "low": low, "high": high}
    out.update(n_boot=n_boot, level=level)
    return out
