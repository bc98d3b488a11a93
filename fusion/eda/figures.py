"""The figures of the exploratory analysis, each written to a PNG file.

The functions draw on :class:`matplotlib.figure.Figure` directly, never through pyplot,
so no global figure state or backend is touched. matplotlib is imported when a figure
is drawn, not when the package is imported, so the analysis functions do not pay for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fusion.eda.analysis import _missing_mask
from fusion.schema import Schema

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_class_balance",
    "plot_feature_distributions",
    "plot_images_per_patient",
    "plot_intensity",
    "plot_missingness",
    "plot_sample_grid",
]

DPI = 110

_MISSING = "(missing)"


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A detached figure; the import is here so that matplotlib loads only when drawing."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def plot_class_balance(
    balance: pd.DataFrame, path: str | Path, *, columns: Sequence[str] | None = None, title: str = "Class balance"
) -> None:
    """Grouped bars of counts per class (images and patients, or one bar per split),
    each bar labelled with its count, so rare classes stay readable."""
    columns = list(columns or [c for c in ("images", "patients") if c in balance.columns])
    classes = list(balance.index)
    fig = _new_figure((max(4.5, 1.3 * len(classes) * max(len(columns), 1) / 1.5 + 2), 3.6))
    ax = fig.subplots()
    width = 0.8 / max(len(columns), 1)
    x = np.arange(len(classes))
    for i, column in enumerate(columns):
        bars = ax.bar(x + (i - (len(columns) - 1) / 2) * width, balance[column].to_numpy(), width, label=column)
        ax.bar_label(bars, fontsize=8, padding=1)
    ax.set_xticks(x, [str(c) for c in classes])
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.margins(y=0.12)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def plot_missingness(missing: pd.DataFrame, path: str | Path, *, title: str = "Missing values by class (%)") -> None:
    """Heatmap of :func:`~fusion.eda.analysis.missingness_by_class` (rows: columns,
    columns: classes + all), each cell annotated with its percentage."""
    values = 100 * missing.to_numpy(dtype=float)
    fig = _new_figure((1.2 * missing.shape[1] + 2.6, 0.38 * missing.shape[0] + 1.6))
    ax = fig.subplots()
    image = ax.imshow(np.nan_to_num(values, nan=0.0), cmap="Reds", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(missing.shape[1]), [str(c) for c in missing.columns], rotation=30, ha="right")
    ax.set_yticks(range(missing.shape[0]), [str(c) for c in missing.index])
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            # White text on the dark end of the colour map keeps the number legible.
            color = "white" if v > 60 else "black"
            ax.text(j, i, "" if math.isnan(v) else f"{v:.0f}", ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02, label="% missing")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def plot_feature_distributions(
    records: pd.DataFrame, labels, schema: Schema, path: str | Path, *, seed: int = 0
) -> None:
    """One panel per schema feature: numeric values as box plots with every value
    drawn as a jittered point (small classes stay visible); categories as stacked
    proportions per class, missing values included as their own grey category."""
    labels = np.asarray(labels)
    classes = list(schema.classes)
    features = [f for f in schema.features if f.name in records.columns]
    ncols = min(3, max(len(features), 1))
    nrows = max(1, math.ceil(len(features) / ncols))
    fig = _new_figure((4.3 * ncols, 3.4 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    # One generator for all panels, drawn in feature order, so the jitter depends on the seed only.
    rng = np.random.default_rng(seed)
    for ax, feature in zip(axes, features, strict=False):  # spare axes are hidden below
        column = records[feature.name]
        missing = _missing_mask(column)
        if feature.continuous:
            _numeric_panel(ax, column, missing, labels, classes, rng)
            ax.set_title(f"{feature.name}" + (f" ({feature.unit})" if feature.unit else ""), fontsize=10)
        else:
            _categorical_panel(ax, column, missing, labels, classes, list(feature.categories))
            ax.set_title(feature.name, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    for ax in axes[len(features) :]:
        ax.set_axis_off()
    fig.suptitle("Feature values by class (filled values; n = filled count)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def _numeric_panel(
    ax: Axes, column: pd.Series, missing: np.ndarray, labels: np.ndarray, classes: list[str], rng: np.random.Generator
) -> None:
    """Box plot per class of a numeric feature's filled values, every value overlaid as a
    jittered point, since a box alone hides how few values a small class has."""
    values = column.to_numpy(dtype=float)
    data = [values[(labels == k) & ~missing] for k in range(len(classes))]
    nonempty = [k for k, d in enumerate(data) if d.size]
    if nonempty:
        ax.boxplot(
            [data[k] for k in nonempty],
            positions=nonempty,
            widths=0.5,
            showfliers=False,
            medianprops={"color": "black"},
        )
    for k in nonempty:
        jitter = rng.uniform(-0.18, 0.18, data[k].size)
        ax.scatter(k + jitter, data[k], s=10, alpha=0.6, color=f"C{k}", linewidths=0, zorder=3)
    ax.set_xticks(range(len(classes)), [f"{c}\nn={d.size}" for c, d in zip(classes, data, strict=True)], fontsize=8)
    ax.set_xlim(-0.6, len(classes) - 0.4)


def _categorical_panel(
    ax: Axes, column: pd.Series, missing: np.ndarray, labels: np.ndarray, classes: list[str], categories: list[str]
) -> None:
    """Stacked share of each category per class, with missing values as a grey category
    of their own, because whether a value is recorded can differ by class too."""
    categories = [*categories, _MISSING]
    text = np.array([_MISSING if m else str(v) for v, m in zip(column, missing, strict=True)], dtype=object)
    bottom = np.zeros(len(classes))
    for i, cat in enumerate(categories):
        share = np.array(
            [(text[labels == k] == cat).mean() if (labels == k).any() else 0.0 for k in range(len(classes))]
        )
        color = "lightgrey" if cat == _MISSING else f"C{i}"
        ax.bar(range(len(classes)), share, bottom=bottom, color=color, label=cat, width=0.6)
        bottom += share
    counts = np.bincount(labels, minlength=len(classes))
    ax.set_xticks(range(len(classes)), [f"{c}\nn={n}" for c, n in zip(classes, counts, strict=False)], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of images", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def plot_images_per_patient(counts: pd.Series, path: str | Path) -> None:
    """Histogram of images per patient (integer bins), so a few heavily imaged
    patients, who dominate a per-image metric, are seen."""
    counts = np.asarray(counts)
    fig = _new_figure((5, 3.4))
    ax = fig.subplots()
    top = int(counts.max()) if counts.size else 1
    bars = ax.bar(np.arange(1, top + 1), np.bincount(counts, minlength=top + 1)[1:], width=0.8)
    ax.bar_label(bars, fontsize=7, padding=1, labels=[str(int(v)) if v else "" for v in bars.datavalues])
    ax.set_xlabel("images of the patient")
    ax.set_ylabel("patients")
    ax.set_title(f"Images per patient ({counts.size} patients, {int(counts.sum())} images)", fontsize=10)
    ax.margins(y=0.12)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def plot_sample_grid(
    images: np.ndarray, labels, classes: Sequence[str], path: str | Path, *, per_class: int = 6, seed: int = 0
) -> None:
    """A random sample of ``per_class`` images of each class (one row per class),
    drawn with a fixed seed, to see what a model will see (text, arrows, borders)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fig = _new_figure((1.35 * per_class + 0.6, 1.45 * len(classes) + 0.4))
    axes = np.atleast_2d(fig.subplots(len(classes), per_class, squeeze=False))
    for k, cls in enumerate(classes):
        index = np.flatnonzero(labels == k)
        chosen = np.sort(rng.choice(index, size=min(per_class, index.size), replace=False)) if index.size else []
        for j in range(per_class):
            ax = axes[k, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(chosen):
                ax.imshow(images[chosen[j]], cmap="gray", vmin=0, vmax=255)
        axes[k, 0].set_ylabel(f"{cls}\n(n={index.size})", fontsize=9)
    fig.suptitle("Sample images per class", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def plot_intensity(
    images: np.ndarray,
    labels,
    classes: Sequence[str],
    path: str | Path,
    *,
    max_images: int = 400,
    seed: int = 0,
) -> None:
    """Pixel-value histogram per class and per-image mean brightness per class.

    Exposure, windowing or screenshot borders that differ between sources show here,
    and a model can learn them instead of the disease.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fig = _new_figure((9, 3.5))
    left, right = fig.subplots(1, 2)
    bins = np.arange(0, 257, 8)
    means = []
    for k, cls in enumerate(classes):
        index = np.flatnonzero(labels == k)
        total = index.size
        # A sample bounds the memory of the pixel histogram on large datasets.
        if index.size > max_images:
            index = rng.choice(index, size=max_images, replace=False)
        pixels = images[index].reshape(-1)
        if pixels.size:
            hist, _ = np.histogram(pixels, bins=bins, density=True)
            shown = f"{index.size} of {total} images" if index.size < total else f"{total} images"
            left.step(bins[:-1], hist, where="post", label=f"{cls} ({shown})", color=f"C{k}")
        means.append(images[index].reshape(len(index), -1).mean(axis=1) if index.size else np.array([]))
    left.set_xlabel("pixel value")
    left.set_ylabel("density")
    left.set_title("Pixel values by class", fontsize=10)
    left.legend(fontsize=7)
    nonempty = [k for k, m in enumerate(means) if m.size]
    if nonempty:
        right.boxplot(
            [means[k] for k in nonempty],
            positions=nonempty,
            widths=0.5,
            showfliers=True,
            flierprops={"markersize": 2},
            medianprops={"color": "black"},
        )
    right.set_xticks(range(len(classes)), [str(c) for c in classes])
    right.set_xlim(-0.6, len(classes) - 0.4)
    right.set_ylabel("mean pixel value of an image")
    right.set_title("Image brightness by class", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
