"""Columns that give the label away: provenance, identifiers, outcomes.

A leak is judged per column, by how much of the label its values or its presence
explain; the statistics it needs (entropy, Theil's U, a rank-sum AUROC) are small
enough to compute here rather than pull in another dependency.

The rules of :func:`leak_candidates`, each applied to the rows where the column is
filled (at least ``min_filled``):

- categorical values: Theil's uncertainty coefficient U(label | value) >=
  ``uncertainty``, i.e. the value removes at least half of the label's entropy. A
  column with many distinct values each seen with a single class (an identifier or
  free text) reaches 1; ``across_patients`` recomputes U with the values seen in a
  single patient pooled, which separates *source* columns (values shared by many
  patients that carry the label, high) from *identifier* columns (values unique to a
  patient, low: a model memorises them, and free text or a URL can still name the
  diagnosis).
- numeric values (columns in ``numeric``, or whose filled values all parse as numbers
  and take at least 10 distinct values): one class (at least ``min_class_size`` filled
  rows) is separated from the rest by the value alone, one-vs-rest AUROC >= ``auroc``
  in either direction.
- with ``presence``: the missing/present indicator, by the rule of
  :func:`~fusion.eda.analysis.predictive_missingness` (a column filled only for some
  classes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fusion.eda.analysis import (
    LEAK_AUROC,
    LEAK_UNCERTAINTY,
    MIN_CLASS_SIZE,
    MIN_FILLED,
    _check_labels,
    _missing_mask,
    predictive_missingness,
)

__all__ = ["leak_candidates"]


@dataclass(frozen=True)
class _LeakRule:
    """The thresholds of :func:`leak_candidates`, passed as one to its per-column helpers."""

    uncertainty: float
    auroc: float
    min_filled: int
    min_class_size: int


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _uncertainty_coefficient(values: np.ndarray, labels: np.ndarray) -> float:
    """Theil's U(label | value): the fraction of the label's entropy that knowing the
    value removes. 1 when every value belongs to one class, 0 when values say nothing.
    NaN when the rows hold a single class (nothing to explain)."""
    h_label = _entropy(np.bincount(labels))
    if h_label == 0:
        return math.nan
    table = pd.crosstab(values, labels).to_numpy()
    n = table.sum()
    h_cond = sum(row.sum() / n * _entropy(row) for row in table)
    return float((h_label - h_cond) / h_label)


def _as_numbers(values: pd.Series) -> np.ndarray | None:
    """The filled values as floats, or None if any does not parse (then the column is
    treated as categorical)."""
    try:
        numbers = np.array([float(str(v).strip()) for v in values], dtype=float)
    except ValueError:
        return None
    return numbers if np.isfinite(numbers).all() else None


def _binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """AUROC of ``score`` for ``positive`` by the rank-sum formula (ties count half)."""
    ranks = pd.Series(score).rank(method="average").to_numpy()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def leak_candidates(
    table: pd.DataFrame,
    labels,
    classes: Sequence[str],
    *,
    groups=None,
    columns: Sequence[str] | None = None,
    numeric: Sequence[str] = (),
    presence: bool = True,
    uncertainty: float = LEAK_UNCERTAINTY,
    auroc: float = LEAK_AUROC,
    min_filled: int = MIN_FILLED,
    min_class_size: int = MIN_CLASS_SIZE,
) -> pd.DataFrame:
    """Columns whose values (or presence) nearly determine the label.

    In pooled collections the label often hides in provenance (url, doi, hospital,
    date: each source brought mostly one diagnosis) or in what is known only later
    (outcomes). Such a column must never be a feature, and a feature that behaves like
    one deserves a second look.

    The rules are in the module docstring.

    Parameters
    ----------
    table : pandas.DataFrame
        Raw or parsed values, row-aligned with ``labels``.
    labels : array-like of int, shape (len(table),)
        Rows with -1 are left out.
    classes : sequence of str
    groups : array-like, optional
        Patient ids, for ``across_patients``; default: every row its own patient.
    columns : sequence of str, optional
        Default: every column of ``table``.
    numeric : sequence of str
        Columns known to be numeric (schema features).
    presence : bool
        Also flag a column whose presence predicts the label.
    uncertainty, auroc, min_filled, min_class_size
        Thresholds of the rules above.

    Returns
    -------
    pandas.DataFrame
        Index: columns. ``filled`` (fraction), ``distinct``, ``kind`` (numeric,
        categorical, constant, empty), ``label_U``, ``across_patients``, ``value_auroc``
        (with the class it separates in ``why``), ``presence_flagged``, ``flagged`` and
        ``why``; sorted with flagged columns first.

    Example
    -------
    >>> t = pd.DataFrame({"url": [f"https://site-{k}.org/{i}" for i, k in enumerate([0, 1] * 10)]})
    >>> bool(leak_candidates(t, [0, 1] * 10, ["a", "b"]).loc["url", "flagged"])
    True
    """
    classes = list(classes)
    labels = _check_labels(labels, len(table), classes, "leak_candidates")
    columns = list(table.columns) if columns is None else list(columns)
    keep = labels >= 0
    lab = labels[keep]
    groups = np.arange(len(table)) if groups is None else np.asarray(groups)
    if groups.shape != (len(table),):
        raise ValueError(f"leak_candidates: groups must have shape ({len(table)},); got {groups.shape}")
    groups = groups[keep]
    presence_table = None
    if presence:
        presence_table = predictive_missingness(
            table.loc[keep], lab, classes, columns=columns, min_class_size=min_class_size, min_count=min_filled
        )
    rule = _LeakRule(uncertainty, auroc, min_filled, min_class_size)
    rows = {}
    for column in columns:
        row, reasons = _value_leak(table[column].to_numpy()[keep], lab, groups, classes, column in numeric, rule)
        row["presence_flagged"] = bool(presence_table is not None and presence_table.loc[column, "flagged"])
        if row["presence_flagged"]:
            reasons.append("its presence predicts the label: " + presence_table.loc[column, "why"])
        row["flagged"] = bool(reasons)
        row["why"] = "; ".join(reasons)
        rows[column] = row
    frame = pd.DataFrame.from_dict(rows, orient="index").rename_axis("column")
    if frame.empty:
        return frame
    return frame.sort_values(
        ["flagged", "label_U", "value_auroc"], ascending=[False, False, False], na_position="last", kind="stable"
    )


def _value_leak(
    raw: np.ndarray, lab: np.ndarray, groups: np.ndarray, classes: list[str], known_numeric: bool, rule: _LeakRule
) -> tuple[dict, list[str]]:
    """The value statistics of one column (the row of :func:`leak_candidates` without
    the presence columns) and the reasons, if any, to flag it by its values."""
    filled = ~_missing_mask(raw)
    values = pd.Series(raw[filled], dtype=object)
    y, g = lab[filled], groups[filled]
    n_filled = int(filled.sum())
    distinct = values.map(lambda v: str(v).strip()).nunique()
    row = {
        "filled": filled.mean() if filled.size else math.nan,
        "distinct": distinct,
        "kind": "categorical",
        "label_U": math.nan,
        "across_patients": math.nan,
        "value_auroc": math.nan,
    }
    reasons: list[str] = []
    # Few distinct numbers (a 0/1 flag, a score) are judged as categories, unless the schema says numeric.
    numbers = _as_numbers(values) if (known_numeric or distinct >= 10) and distinct else None
    if not filled.any():
        row["kind"] = "empty"
    elif distinct == 1:
        row["kind"] = "constant"
    elif numbers is not None:
        row["kind"] = "numeric"
        row["value_auroc"], reason = _numeric_leak(numbers, y, classes, n_filled, rule)
        reasons += [reason] if reason else []
    else:
        text = values.map(lambda v: str(v).strip()).to_numpy()
        row["label_U"], row["across_patients"], reason = _categorical_leak(text, y, g, distinct, n_filled, rule)
        reasons += [reason] if reason else []
    return row, reasons


def _numeric_leak(
    numbers: np.ndarray, y: np.ndarray, classes: list[str], n_filled: int, rule: _LeakRule
) -> tuple[float, str | None]:
    """Best one-vs-rest AUROC (either direction) of a numeric column over the classes
    large enough to judge, and the reason to flag it, or None."""
    best, best_class = math.nan, None
    for k, cls in enumerate(classes):
        positive = y == k
        if positive.sum() >= rule.min_class_size and (~positive).sum() >= rule.min_class_size:
            a = _binary_auroc(positive, numbers)
            a = max(a, 1 - a)
            if math.isnan(best) or a > best:
                best, best_class = a, cls
    if n_filled >= rule.min_filled and not math.isnan(best) and best >= rule.auroc:
        return best, f"its value alone separates {best_class} from the rest (AUROC {best:.2f})"
    return best, None


def _categorical_leak(
    text: np.ndarray, y: np.ndarray, g: np.ndarray, distinct: int, n_filled: int, rule: _LeakRule
) -> tuple[float, float, str | None]:
    """U(label | value), the same with values seen in a single patient pooled, and the
    reason to flag the column, or None.

    Pooling single-patient values tells a source column (its values recur across
    patients and still carry the label) from an identifier (unique per patient).
    """
    label_u = _uncertainty_coefficient(text, y)
    patients = pd.Series(g).groupby(text).nunique()
    pooled = np.where(patients.reindex(text).to_numpy() >= 2, text, "\x00one patient")
    across = _uncertainty_coefficient(pooled, y)
    if not (n_filled >= rule.min_filled and label_u >= rule.uncertainty):
        return label_u, across, None
    if across >= rule.uncertainty:
        shared = "values shared across patients carry it"
    else:
        shared = "values mostly unique to a patient"
    reason = (
        f"its {distinct} distinct values explain {label_u:.0%} of the label's entropy "
        f"on its {n_filled} filled rows ({shared}; across patients {across:.0%})"
    )
    return label_u, across, reason
