"""Figures of a training run: confusion matrix, ROC curves, training curves.

Built on ``matplotlib.figure.Figure`` directly, so no pyplot state or backend is set
as a side effect (a server or notebook using matplotlib is not disturbed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve


def plot_confusion(matrix, classes, path: str | Path, title: str = "Confusion matrix") -> None:
    matrix = np.asarray(matrix)
    fig = Figure(figsize=(1.4 * len(classes) + 2, 1.2 * len(classes) + 1.6))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j, i, str(matrix[i, j]), ha="center", va="center", color="white" if matrix[i, j] > top / 2 else "black"
            )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_roc(y_true, proba, classes, path: str | Path, title: str = "ROC (one vs rest)") -> None:
    y_true = np.asarray(y_true)
    fig = Figure(figsize=(5, 4.5))
    ax = fig.subplots()
    for i, name in enumerate(classes):
        positive = y_true == i
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, proba[:, i])
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_history(history: list[dict], path: str | Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(8, 3.4))
    left, right = fig.subplots(1, 2)
    left.plot(epochs, [h["train_loss"] for h in history], label="train")
    if history and "val_loss" in history[0]:
        left.plot(epochs, [h["val_loss"] for h in history], label="validation")
        right.plot(epochs, [h["val_macro_f1"] for h in history], color="C2")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    right.set_xlabel("epoch")
    right.set_ylabel("validation macro-F1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_reliability(y, raw, calibrated, path: str | Path, title: str = "Reliability", n_bins: int = 10) -> None:
    """Reliability diagram of the top-class confidence, before and after calibration:
    how often a prediction made with confidence c was right, against c; under it, how
    many predictions (after calibration) fell in each bin, so that a point resting on 2
    films is not read like one resting on 200 (as scikit-learn's ``CalibrationDisplay``
    users expect)."""
    from fusion.evaluation.calibration import reliability_bins

    fig = Figure(figsize=(5.2, 6.2))
    ax, counts = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", label="perfect calibration")
    for proba, label, colour in ((raw, "before", "C3"), (calibrated, "after", "C0")):
        bins = reliability_bins(y, proba, n_bins)
        ax.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            marker="o",
            color=colour,
            label=f"{label} calibration",
        )
    after = reliability_bins(y, calibrated, n_bins)
    counts.bar(
        [b["low"] for b in after],
        [b["n"] for b in after],
        width=1.0 / n_bins,
        align="edge",
        color="C0",
        edgecolor="white",
    )
    for b in after:
        counts.annotate(str(b["n"]), (b["low"] + 0.5 / n_bins, b["n"]), ha="center", va="bottom", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction correct")
    ax.set_title(title)
    ax.legend(loc="upper left")
    counts.set_xlabel("confidence of the predicted class")
    counts.set_ylabel("predictions")
    counts.set_ylim(0, max([b["n"] for b in after], default=1) * 1.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_decision_curves(report: dict, path: str | Path, title: str = "Decision curves") -> None:
    """Net benefit against threshold probability, one panel per disease class: each
    model's curve, treating everyone and treating no one (see
    :mod:`fusion.evaluation.decision`)."""
    classes = list(report["classes"])
    if not classes:
        return
    thresholds = np.asarray(report["thresholds"])
    columns = min(4, len(classes))  # seven classes (ham10000) in two rows, not one strip
    rows = -(-len(classes) // columns)
    fig = Figure(figsize=(4.6 * columns, 4.2 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes[len(classes) :]:
        ax.set_visible(False)
    for ax, name in zip(axes, classes, strict=False):
        entry = report["classes"][name]
        for i, (model, curve) in enumerate(entry["models"].items()):
            ax.plot(thresholds, curve["net_benefit"], color=f"C{i}", label=model)
        ax.plot(thresholds, entry["treat_all"], color="0.5", linestyle="--", label="treat all")
        ax.axhline(0.0, color="0.2", linewidth=0.8, label="treat none")
        top = max(entry["prevalence"], 0.01)
        ax.set_ylim(-0.05 * max(top, 0.2), top * 1.15)
        ax.set_xlim(0, 1)
        ax.set_xlabel("threshold probability")
        ax.set_ylabel("net benefit")
        ax.set_title(f"{name} (prevalence {entry['prevalence']:.2f}, n {report['n']})")
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
