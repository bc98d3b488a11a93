"""Classification metrics, the same for every model and split.

Macro metrics come first because clinical classes are imbalanced (normal films are
rare in COVID-19 collections): accuracy alone rewards ignoring the small class.
Balanced accuracy (the mean of the per-class recalls, the ISIC challenges' metric)
weighs every class alike, so a model that buys accuracy with a rare class loses it.

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

ECE_BINS = 15


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS) -> float:
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


def balanced_accuracy(y_true: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall (sensitivity) over the classes present in ``y_true``: accuracy with
    every class weighted alike (scikit-learn's ``balanced_accuracy_score``; chance is
    1 / number of classes). A class absent from ``y_true`` is left out, as
    :func:`macro_f1` leaves it out."""
    y_true, pred = np.asarray(y_true), np.asarray(pred)
    present = np.unique(y_true)
    return float(np.mean([(pred[y_true == c] == c).mean() for c in present]))


def _auroc(y_binary: np.ndarray, score: np.ndarray) -> float | None:
    if y_binary.min() == y_binary.max():
        return None  # undefined with one class present
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y_binary, score))


def classification_metrics(y_true, proba, classes, *, pred=None) -> dict:
    """Accuracy, balanced accuracy, macro-F1, macro one-vs-rest AUROC, ECE, per-class
    figures and the confusion matrix.

    Parameters
    ----------
    y_true : array of int, shape (n,)
    proba : array of float, shape (n, n_classes)
    classes : sequence of str
    pred : array of int, shape (n,), optional
        The predicted labels the counts are of (a model's decision rule, see
        :meth:`~fusion.evaluation.calibration.Calibration.decide`); default the most
        probable class. ECE stays about the top probability.

    Returns
    -------
    dict
        JSON-ready: ``accuracy``, ``balanced_accuracy`` (mean per-class recall over
        the classes present), ``macro_f1``, ``auroc_macro`` (None when undefined),
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
    pred = proba.argmax(axis=1) if pred is None else np.asarray(pred, dtype=np.int64)
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
        "balanced_accuracy": balanced_accuracy(y_true, pred),
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
    balanced = metrics.get("balanced_accuracy")  # absent from metrics written before it existed
    lines.append(
        f"accuracy {with_ci(metrics['accuracy'], ci.get('accuracy'))}   "
        + (f"balanced accuracy {with_ci(balanced, ci.get('balanced_accuracy'))}\n" if balanced is not None else "")
        + f"macro-F1 {with_ci(metrics['macro_f1'], ci.get('macro_f1'))}   "
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
