"""Exploratory analysis of a dataset before any model sees it: ``python -m fusion.eda``.

Real clinical collections fail in ways a metric never shows: a class that is a handful
of films, measurements that only some sources report (so that *whether* a value is
present tells the diagnosis), provenance columns that name the source and thus the
label, patients with films in several classes. This module measures those things for
any schema'd dataset (a folder with ``metadata.csv`` and images, or an image-only
``.npz`` in MedMNIST layout) and writes PNG figures with a ``report.md`` that links
them, plus ``summary.json`` with the warnings for scripts.

The analysis functions are plain and reusable: they take tables and label arrays and
return DataFrames; the plotting functions draw on ``matplotlib.figure.Figure``
directly, so no pyplot state or backend is touched.

Example
-------
>>> from fusion.eda import run_eda
>>> report = run_eda("../shared/data/covid-chestxray", "covid_chestxray", "eda_covid")  # doctest: +SKIP
>>> report.name  # doctest: +SKIP
'report.md'

Command line::

    python -m fusion.eda --data ../shared/data/covid-chestxray --schema covid_chestxray --out eda_covid
    python -m fusion.eda --data ../shared/data/pneumoniamnist/pneumoniamnist_trainval.npz --schema pneumoniamnist --out eda_pmnist
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import chi2_contingency

from fusion.data import Dataset, load_dataset, read_table
from fusion.schema import Schema, is_missing

__all__ = [
    "class_balance",
    "missingness_by_class",
    "predictive_missingness",
    "leak_candidates",
    "skipped_summary",
    "images_per_patient",
    "duplicate_images",
    "plot_class_balance",
    "plot_missingness",
    "plot_feature_distributions",
    "plot_images_per_patient",
    "plot_sample_grid",
    "plot_intensity",
    "run_eda",
    "main",
]

# Thresholds of the warnings, as defaults of the functions that apply them. They are
# deliberately coarse: a warning asks a person to look, it does not decide.
MISSING_SPREAD = 0.20  # missing rates of two classes differ by 20 points or more
ALPHA = 0.05  # ... and the indicator-class dependence is significant (chi-square)
MIN_CLASS_SIZE = 5  # classes smaller than this are too small to compare rates
LEAK_UNCERTAINTY = 0.5  # the value explains half the label's entropy or more
LEAK_AUROC = 0.9  # a numeric value alone separates one class from the rest
MIN_FILLED = 10  # fewer filled rows than this are too few to judge a column's values
RARE_CLASS = 0.05  # classes under 5 % of the images are reported as rare
DPI = 110

_MISSING = "(missing)"


# ---------------------------------------------------------------------- helpers
def _missing_mask(values: Iterable) -> np.ndarray:
    """True where a value is missing, by the schema's own rule (NaN, None, '', 'NA'...),
    so raw CSV strings and parsed records are judged alike."""
    return np.fromiter((is_missing(v) for v in values), dtype=bool)


def _encode_labels(table: pd.DataFrame, schema: Schema) -> np.ndarray:
    """Class index of every row from the schema's label column; -1 where the label is
    missing or unknown (such rows are left out of per-class figures)."""
    column = schema.label.column
    if column not in table.columns:
        raise ValueError(
            f"table has no label column {column!r} (schema {schema.name!r}); "
            f"pass labels= or a table with that column; columns: {list(table.columns)}"
        )
    out = []
    for value in table[column]:
        try:
            out.append(schema.label.encode(value))
        except ValueError:
            out.append(-1)
    return np.asarray(out, dtype=np.int64)


def _check_labels(labels, n: int, classes: Sequence[str], what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"{what}: labels must have shape ({n},) to match the table; got {labels.shape}")
    if labels.size and (labels.min() < -1 or labels.max() >= len(classes)):
        raise ValueError(f"{what}: labels must index into {len(classes)} classes {list(classes)}; got values {sorted(set(labels.tolist()))}")
    return labels.astype(np.int64)


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


def _markdown_table(frame: pd.DataFrame, *, index: bool = True, digits: int = 2) -> str:
    """A DataFrame as a GitHub-flavoured Markdown table (no tabulate dependency)."""

    def cell(v) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if math.isnan(v) else f"{v:.{digits}f}"
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else ""
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    # itertuples keeps each column's dtype (iterrows would turn counts into floats).
    for key, row in zip(frame.index, frame.itertuples(index=False, name=None)):
        cells = ([cell(key)] if index else []) + [cell(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _percent(x: float) -> str:
    return f"{100 * x:.0f}%"


# --------------------------------------------------------------------- analysis
def class_balance(labels, classes: Sequence[str], *, groups=None, splits: dict | None = None) -> pd.DataFrame:
    """Images (and patients, or images per split) of each class.

    Parameters
    ----------
    labels : array-like of int, shape (n,)
        Class indices.
    classes : sequence of str
    groups : array-like, shape (n,), optional
        Patient ids. A patient with films of two classes counts once in each, so the
        patient column can sum to more than the number of patients.
    splits : dict of str -> index array, optional
        The data's own splits (an ``.npz``): one count column per split.

    Returns
    -------
    pandas.DataFrame
        Indexed by class: ``images``, ``images %`` and, with ``groups``, ``patients``
        and ``images/patient``; with ``splits``, one column per split before them.

    Example
    -------
    >>> class_balance([0, 0, 1], ["a", "b"], groups=["p1", "p1", "p2"])["patients"].tolist()
    [1, 1]
    """
    labels = np.asarray(labels)
    classes = list(classes)
    frame = pd.DataFrame(index=pd.Index(classes, name="class"))
    if splits:
        for name, index in splits.items():
            frame[name] = np.bincount(labels[np.asarray(index, dtype=np.int64)], minlength=len(classes))
    frame["images"] = np.bincount(labels, minlength=len(classes))[: len(classes)]
    frame["images %"] = 100 * frame["images"] / max(len(labels), 1)
    if groups is not None:
        groups = np.asarray(groups)
        frame["patients"] = [len(set(groups[labels == k])) for k in range(len(classes))]
        frame["images/patient"] = frame["images"] / frame["patients"].replace(0, np.nan)
    return frame


def missingness_by_class(table: pd.DataFrame, schema: Schema, *, labels=None, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Fraction of rows with a missing value, per column and class.

    Parameters
    ----------
    table : pandas.DataFrame
        Raw (strings, as :func:`fusion.data.read_table` gives) or parsed records; a
        value is missing by the schema's rule (empty, ``NA``, NaN, None...).
    schema : Schema
        Gives the classes and, without ``labels``, the label column to encode.
    labels : array-like of int, shape (len(table),), optional
        Class indices aligned with ``table``; rows with -1 are left out. Default: the
        schema's label column, encoded (rows with an unknown label are left out).
    columns : sequence of str, optional
        Default: the schema's features present in ``table``.

    Returns
    -------
    pandas.DataFrame
        Index: columns; one column per class plus ``all``; values in [0, 1] (NaN for a
        class without rows).

    Raises
    ------
    ValueError
        When ``labels`` does not match the table, or the label column is absent.

    Example
    -------
    >>> from fusion.schema import load_schema
    >>> t = pd.DataFrame({"diagnosis": ["COVID-19", "No Finding"], "age": ["", "40"]})
    >>> float(missingness_by_class(t, load_schema("synthetic"), columns=["age"]).loc["age", "covid"])
    1.0
    """
    classes = list(schema.classes)
    labels = _encode_labels(table, schema) if labels is None else _check_labels(labels, len(table), classes, "missingness_by_class")
    if columns is None:
        columns = [c for c in schema.feature_names if c in table.columns]
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise ValueError(f"missingness_by_class: columns {absent} are not in the table; it has {list(table.columns)}")
    keep = labels >= 0
    rows = {}
    for column in columns:
        missing = _missing_mask(table[column])[keep]
        lab = labels[keep]
        rates = [missing[lab == k].mean() if (lab == k).any() else math.nan for k in range(len(classes))]
        rows[column] = rates + [missing.mean() if missing.size else math.nan]
    return pd.DataFrame.from_dict(rows, orient="index", columns=classes + ["all"]).rename_axis("column")


def predictive_missingness(
    table: pd.DataFrame,
    labels,
    classes: Sequence[str],
    *,
    columns: Sequence[str] | None = None,
    spread: float = MISSING_SPREAD,
    alpha: float = ALPHA,
    min_class_size: int = MIN_CLASS_SIZE,
    min_count: int = MIN_FILLED,
) -> pd.DataFrame:
    """How well each column's missing/present indicator alone predicts the label.

    A model given a missing-value indicator (the ``indicator`` policy) will use it if it
    pays, and in pooled collections it pays for the wrong reason: some sources never
    report a measurement, and each source brought mostly one diagnosis.

    Rule: a column is flagged when the indicator and the class are dependent
    (chi-square test of the 2 x k table, p < ``alpha``) *and* the effect is large:
    the missing rates of two classes (each with at least ``min_class_size`` rows) differ
    by ``spread`` or more, or one such class never (or always) has the value while
    another class sometimes does, so that presence alone rules that class out. The
    significance test keeps a 20-point gap in a class of six films from being flagged;
    a column filled (or missing) in fewer than ``min_count`` rows is never flagged, as
    a handful of exceptions cannot be judged.

    Parameters
    ----------
    table : pandas.DataFrame
        Raw or parsed values.
    labels : array-like of int, shape (len(table),)
        Class indices; rows with -1 are left out.
    classes : sequence of str
    columns : sequence of str, optional
        Default: every column of ``table``.
    spread, alpha, min_class_size, min_count : float, float, int, int
        The rule's thresholds (see above).

    Returns
    -------
    pandas.DataFrame
        Index: columns. ``missing <class>`` rates, ``spread`` (largest difference of
        rates between classes large enough to compare), ``p_value``, ``indicator_auroc``
        (macro one-vs-rest AUROC of the indicator alone, either direction; 0.5 = no
        information), ``flagged`` and ``why`` (a sentence for the report).

    Example
    -------
    >>> t = pd.DataFrame({"lab": [None] * 12 + [1.0] * 12})
    >>> bool(predictive_missingness(t, [0] * 12 + [1] * 12, ["a", "b"]).loc["lab", "flagged"])
    True
    """
    classes = list(classes)
    labels = _check_labels(labels, len(table), classes, "predictive_missingness")
    columns = list(table.columns) if columns is None else list(columns)
    keep = labels >= 0
    lab = labels[keep]
    sizes = np.bincount(lab, minlength=len(classes))
    out = {}
    for column in columns:
        if column not in table.columns:
            raise ValueError(f"predictive_missingness: column {column!r} is not in the table; it has {list(table.columns)}")
        missing = _missing_mask(table[column])[keep]
        n_missing = np.bincount(lab[missing], minlength=len(classes))
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = n_missing / sizes
        big = [k for k in range(len(classes)) if sizes[k] >= min_class_size]
        gap = float(max(rates[big]) - min(rates[big])) if len(big) >= 2 else 0.0
        present = [k for k in range(len(classes)) if sizes[k] > 0]
        contingency = np.array([n_missing[present], sizes[present] - n_missing[present]])
        if contingency.sum(axis=1).min() == 0 or len(present) < 2:
            p_value = 1.0  # the indicator is constant: it carries nothing
        else:
            p_value = float(chi2_contingency(contingency)[1])
        aucs = []
        for k in present:
            rest = lab != k
            if rest.any():
                aucs.append(0.5 + abs(rates[k] - missing[rest].mean()) / 2)
        auroc = float(np.mean(aucs)) if aucs else 0.5
        never = [classes[k] for k in big if rates[k] == 1.0 and any(rates[j] < 1.0 for j in big)]
        always = [classes[k] for k in big if rates[k] == 0.0 and any(rates[j] > 0.0 for j in big)]
        enough = min(int(missing.sum()), int((~missing).sum())) >= min_count
        flagged = enough and p_value < alpha and (gap >= spread or bool(never) or bool(always))
        why = ", ".join(f"{_percent(rates[k])} of {classes[k]}" for k in present)
        why = f"missing in {why}"
        if never:
            why += f"; never filled for {', '.join(never)}"
        if always:
            why += f"; always filled for {', '.join(always)}"
        why += f" (chi-square p={p_value:.2g}, indicator AUROC {auroc:.2f})"
        out[column] = {**{f"missing {c}": rates[k] for k, c in enumerate(classes)}, "spread": gap, "p_value": p_value,
                       "indicator_auroc": auroc, "flagged": bool(flagged), "why": why}
    return pd.DataFrame.from_dict(out, orient="index").rename_axis("column")


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

    Rules, each applied to the rows where the column is filled (at least
    ``min_filled``):

    - categorical values: Theil's uncertainty coefficient U(label | value) >=
      ``uncertainty``, i.e. the value removes at least half of the label's entropy.
      A column with many distinct values each seen with a single class (an identifier
      or free text) reaches 1; ``across_patients`` recomputes U with the values seen in
      a single patient pooled, which separates *source* columns (values shared by many
      patients that carry the label, high) from *identifier* columns (values unique to
      a patient, low: a model memorises them, and free text or a URL can still name
      the diagnosis).
    - numeric values (columns in ``numeric``, or whose filled values all parse as
      numbers and take at least 10 distinct values): one class (at least
      ``min_class_size`` filled rows) is separated from the rest by the value alone,
      one-vs-rest AUROC >= ``auroc`` in either direction.
    - with ``presence``: the missing/present indicator, by the rule of
      :func:`predictive_missingness` (a column filled only for some classes).

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
    presence_table = (
        predictive_missingness(table.loc[keep], lab, classes, columns=columns, min_class_size=min_class_size, min_count=min_filled)
        if presence
        else None
    )
    rows = {}
    for column in columns:
        raw = table[column].to_numpy()[keep]
        filled = ~_missing_mask(raw)
        values = pd.Series(raw[filled], dtype=object)
        y, g = lab[filled], groups[filled]
        distinct = values.map(lambda v: str(v).strip()).nunique()
        row = {"filled": filled.mean() if filled.size else math.nan, "distinct": distinct, "kind": "categorical",
               "label_U": math.nan, "across_patients": math.nan, "value_auroc": math.nan}
        reasons = []
        numbers = _as_numbers(values) if (column in numeric or distinct >= 10) and distinct else None
        if not filled.any():
            row["kind"] = "empty"
        elif distinct == 1:
            row["kind"] = "constant"
        elif numbers is not None:
            row["kind"] = "numeric"
            best, best_class = math.nan, None
            for k, cls in enumerate(classes):
                positive = y == k
                if positive.sum() >= min_class_size and (~positive).sum() >= min_class_size:
                    a = _binary_auroc(positive, numbers)
                    a = max(a, 1 - a)
                    if math.isnan(best) or a > best:
                        best, best_class = a, cls
            row["value_auroc"] = best
            if filled.sum() >= min_filled and not math.isnan(best) and best >= auroc:
                reasons.append(f"its value alone separates {best_class} from the rest (AUROC {best:.2f})")
        else:
            text = values.map(lambda v: str(v).strip()).to_numpy()
            row["label_U"] = _uncertainty_coefficient(text, y)
            patients = pd.Series(g).groupby(text).nunique()
            pooled = np.where(patients.reindex(text).to_numpy() >= 2, text, "\x00one patient")
            row["across_patients"] = _uncertainty_coefficient(pooled, y)
            if filled.sum() >= min_filled and row["label_U"] >= uncertainty:
                shared = "values shared across patients carry it" if row["across_patients"] >= uncertainty else "values mostly unique to a patient"
                reasons.append(
                    f"its {distinct} distinct values explain {row['label_U']:.0%} of the label's entropy "
                    f"on its {int(filled.sum())} filled rows ({shared}; across patients {row['across_patients']:.0%})"
                )
        row["presence_flagged"] = bool(presence_table is not None and presence_table.loc[column, "flagged"])
        if row["presence_flagged"]:
            reasons.append("its presence predicts the label: " + presence_table.loc[column, "why"])
        row["flagged"] = bool(reasons)
        row["why"] = "; ".join(reasons)
        rows[column] = row
    frame = pd.DataFrame.from_dict(rows, orient="index").rename_axis("column")
    if frame.empty:
        return frame
    return frame.sort_values(["flagged", "label_U", "value_auroc"], ascending=[False, False, False], na_position="last", kind="stable")


def _reason_kind(reason: str) -> str:
    """A skipped row's reason without its particular values, so reasons can be counted."""
    match = re.match(r"'([^']+)' (must be|is required)", reason)
    if match:
        return f"{match.group(1)}: invalid value" if match.group(2) == "must be" else f"{match.group(1)}: required but missing"
    match = re.match(r"image .*?: ([^(]+)", reason)
    if match:
        return "image: " + match.group(1).strip()
    if reason.startswith("duplicate image"):
        return "duplicate image"
    if reason.startswith("label"):
        return "label: " + ("missing" if "is missing" in reason else "unknown value")
    return re.sub(r"'[^']*'|\d+", "...", reason)[:80]


def skipped_summary(skipped: Sequence[dict]) -> pd.DataFrame:
    """Skipped rows counted by kind of reason, with the first rows of each kind.

    A row can fail for several reasons (joined by ``"; "``); it counts under each.

    Parameters
    ----------
    skipped : sequence of dict
        ``Dataset.skipped``: ``{"row", "file", "reason"}``.

    Returns
    -------
    pandas.DataFrame
        Index: reason kind; ``rows`` (count) and ``examples`` (up to five row ids).

    Example
    -------
    >>> skipped_summary([{"row": 3, "file": None, "reason": "'age' must be a number in [0, 120] years; got 'abc'"}])["rows"].to_dict()
    {'age: invalid value': 1}
    """
    kinds: dict[str, list] = {}
    for entry in skipped:
        parts = re.split(r"; (?!got )", str(entry.get("reason", "")))
        for kind in dict.fromkeys(_reason_kind(p) for p in parts if p):
            kinds.setdefault(kind, []).append(entry.get("row"))
    frame = pd.DataFrame(
        {"rows": [len(v) for v in kinds.values()], "examples": [", ".join(str(r) for r in v[:5]) for v in kinds.values()]},
        index=pd.Index(list(kinds), name="reason"),
    )
    return frame.sort_values("rows", ascending=False, kind="stable")


def duplicate_images(images: np.ndarray, labels, classes: Sequence[str], *, splits: dict | None = None, groups=None) -> pd.DataFrame:
    """Sets of rows whose decoded images are pixel-identical.

    The same film under two names (or two patient ids, or in two splits) inflates a
    test score, and with two labels it is a label error. Images are compared as
    decoded at the dataset's size, so identical arrays are the same picture up to
    resizing.

    Parameters
    ----------
    images : numpy.ndarray of uint8, shape (n, S, S)
    labels : array-like of int, shape (n,)
    classes : sequence of str
    splits : dict of str -> index array, optional
        The data's own splits; a set spanning two of them is a leak between them.
    groups : array-like, shape (n,), optional
        Patient ids; a set spanning two patients defeats a grouped split.

    Returns
    -------
    pandas.DataFrame
        One row per set of two or more identical images: ``rows`` (positions),
        ``classes``, ``splits`` and ``patients`` involved, ``conflict`` (more than one
        class) and ``crosses`` (more than one split or patient).

    Example
    -------
    >>> imgs = np.zeros((3, 2, 2), np.uint8); imgs[2] += 1
    >>> duplicate_images(imgs, [0, 1, 1], ["a", "b"])["conflict"].tolist()
    [True]
    """
    labels = np.asarray(labels)
    split_of = np.full(len(images), "", dtype=object)
    for name, index in (splits or {}).items():
        split_of[np.asarray(index, dtype=np.int64)] = name
    seen: dict[bytes, list[int]] = {}
    for i, image in enumerate(images):
        seen.setdefault(hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest(), []).append(i)
    rows = []
    for members in seen.values():
        if len(members) < 2:
            continue
        cls = sorted({classes[labels[i]] for i in members})
        spl = sorted({split_of[i] for i in members} - {""})
        pat = sorted({str(groups[i]) for i in members}) if groups is not None else []
        rows.append({"rows": members, "classes": cls, "splits": spl, "patients": pat,
                     "conflict": len(cls) > 1, "crosses": len(spl) > 1 or len(pat) > 1})
    return pd.DataFrame(rows, columns=["rows", "classes", "splits", "patients", "conflict", "crosses"])


def images_per_patient(groups) -> pd.Series:
    """Number of images of each patient (index: patient id), most first."""
    return pd.Series(np.asarray(groups)).value_counts().rename("images").rename_axis("patient")


# -------------------------------------------------------------------- plotting
def plot_class_balance(balance: pd.DataFrame, path: str | Path, *, columns: Sequence[str] | None = None, title: str = "Class balance") -> None:
    """Grouped bars of counts per class (images and patients, or one bar per split),
    each bar labelled with its count, so rare classes stay readable."""
    columns = list(columns or [c for c in ("images", "patients") if c in balance.columns])
    classes = list(balance.index)
    fig = Figure(figsize=(max(4.5, 1.3 * len(classes) * max(len(columns), 1) / 1.5 + 2), 3.6))
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
    """Heatmap of :func:`missingness_by_class` (rows: columns, columns: classes + all),
    each cell annotated with its percentage."""
    values = 100 * missing.to_numpy(dtype=float)
    fig = Figure(figsize=(1.2 * missing.shape[1] + 2.6, 0.38 * missing.shape[0] + 1.6))
    ax = fig.subplots()
    image = ax.imshow(np.nan_to_num(values, nan=0.0), cmap="Reds", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(missing.shape[1]), [str(c) for c in missing.columns], rotation=30, ha="right")
    ax.set_yticks(range(missing.shape[0]), [str(c) for c in missing.index])
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            ax.text(j, i, "" if math.isnan(v) else f"{v:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if v > 60 else "black")
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02, label="% missing")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def plot_feature_distributions(records: pd.DataFrame, labels, schema: Schema, path: str | Path, *, seed: int = 0) -> None:
    """One panel per schema feature: numeric values as box plots with every value
    drawn as a jittered point (small classes stay visible); categories as stacked
    proportions per class, missing values included as their own grey category."""
    labels = np.asarray(labels)
    classes = list(schema.classes)
    features = [f for f in schema.features if f.name in records.columns]
    ncols = min(3, max(len(features), 1))
    nrows = max(1, math.ceil(len(features) / ncols))
    fig = Figure(figsize=(4.3 * ncols, 3.4 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    rng = np.random.default_rng(seed)
    for ax, feature in zip(axes, features):
        column = records[feature.name]
        missing = _missing_mask(column)
        if feature.type == "numeric":
            values = column.to_numpy(dtype=float)
            data = [values[(labels == k) & ~missing] for k in range(len(classes))]
            nonempty = [k for k, d in enumerate(data) if d.size]
            if nonempty:
                ax.boxplot([data[k] for k in nonempty], positions=nonempty, widths=0.5, showfliers=False,
                           medianprops={"color": "black"})
            for k in nonempty:
                ax.scatter(k + rng.uniform(-0.18, 0.18, data[k].size), data[k], s=10, alpha=0.6, color=f"C{k}", linewidths=0, zorder=3)
            ax.set_xticks(range(len(classes)), [f"{c}\nn={d.size}" for c, d in zip(classes, data)], fontsize=8)
            ax.set_xlim(-0.6, len(classes) - 0.4)
            ax.set_title(f"{feature.name}" + (f" ({feature.unit})" if feature.unit else ""), fontsize=10)
        else:
            categories = list(feature.categories) + [_MISSING]
            text = np.array([_MISSING if m else str(v) for v, m in zip(column, missing)], dtype=object)
            bottom = np.zeros(len(classes))
            for i, cat in enumerate(categories):
                share = np.array([(text[labels == k] == cat).mean() if (labels == k).any() else 0.0 for k in range(len(classes))])
                color = "lightgrey" if cat == _MISSING else f"C{i}"
                ax.bar(range(len(classes)), share, bottom=bottom, color=color, label=cat, width=0.6)
                bottom += share
            counts = np.bincount(labels, minlength=len(classes))
            ax.set_xticks(range(len(classes)), [f"{c}\nn={n}" for c, n in zip(classes, counts)], fontsize=8)
            ax.set_ylim(0, 1)
            ax.set_ylabel("share of images", fontsize=8)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
            ax.set_title(feature.name, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    for ax in axes[len(features):]:
        ax.set_axis_off()
    fig.suptitle("Feature values by class (filled values; n = filled count)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def plot_images_per_patient(counts: pd.Series, path: str | Path) -> None:
    """Histogram of images per patient (integer bins), so a few heavily imaged
    patients, who dominate a per-image metric, are seen."""
    counts = np.asarray(counts)
    fig = Figure(figsize=(5, 3.4))
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


def plot_sample_grid(images: np.ndarray, labels, classes: Sequence[str], path: str | Path, *, per_class: int = 6, seed: int = 0) -> None:
    """A random sample of ``per_class`` images of each class (one row per class),
    drawn with a fixed seed, to see what a model will see (text, arrows, borders)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(1.35 * per_class + 0.6, 1.45 * len(classes) + 0.4))
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


def plot_intensity(images: np.ndarray, labels, classes: Sequence[str], path: str | Path, *, max_images: int = 400, seed: int = 0) -> None:
    """Pixel-value histogram per class and per-image mean brightness per class.

    Exposure, windowing or screenshot borders that differ between sources show here,
    and a model can learn them instead of the disease.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(9, 3.5))
    left, right = fig.subplots(1, 2)
    bins = np.arange(0, 257, 8)
    means = []
    for k, cls in enumerate(classes):
        index = np.flatnonzero(labels == k)
        total = index.size
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
        right.boxplot([means[k] for k in nonempty], positions=nonempty, widths=0.5, showfliers=True,
                      flierprops={"markersize": 2}, medianprops={"color": "black"})
    right.set_xticks(range(len(classes)), [str(c) for c in classes])
    right.set_xlim(-0.6, len(classes) - 0.4)
    right.set_ylabel("mean pixel value of an image")
    right.set_title("Image brightness by class", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


# ---------------------------------------------------------------------- driver
def _prepare_out(out: str | Path) -> Path:
    """The output folder: new, empty, or an earlier EDA output (holding report.md),
    whose figures and report are then replaced so no stale figure survives."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {str(out)!r} exists and is not a folder")
        entries = list(out.iterdir())
        if entries and not (out / "report.md").is_file():
            raise ValueError(f"--out {str(out)!r} is not empty and holds no earlier report.md; choose a new folder")
        for entry in entries:
            if entry.is_file() and (entry.suffix == ".png" or entry.name in ("report.md", "summary.json")):
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _load(data: Path, schema, image_size: int | None) -> tuple[Dataset, pd.DataFrame | None]:
    if not data.exists():
        raise FileNotFoundError(f"dataset {str(data)!r} does not exist")
    if data.suffix == ".npz":
        # image_size None keeps the file's own resolution.
        return load_dataset(data, schema, image_size=image_size), None
    ds = load_dataset(data, schema, image_size=image_size or 64)
    csv = data if data.is_file() else data / "metadata.csv"
    return ds, read_table(csv)


def run_eda(
    data: str | Path,
    schema: Schema | str | Path | None = None,
    out: str | Path = "eda",
    *,
    image_size: int | None = None,
    per_class: int = 6,
    seed: int = 0,
) -> Path:
    """Analyse a dataset and write figures, ``report.md`` and ``summary.json`` to ``out``.

    Parameters
    ----------
    data : str or Path
        A folder with ``metadata.csv`` (or the CSV itself) and images, or an ``.npz`` in
        MedMNIST layout (then the tabular sections are left out).
    schema : Schema, str or Path, optional
        Schema object, TOML file or built-in name; default: the folder's
        ``schema.toml`` (an ``.npz`` without one keeps its integer labels).
    out : str or Path
        Output folder: new, empty or an earlier EDA output (its figures are replaced).
    image_size : int, optional
        Side of the decoded images; default 64 for folders, the file's own for ``.npz``.
    per_class : int
        Sample images per class in the grid.
    seed : int
        Seed of the image samples and the jitter.

    Returns
    -------
    Path
        ``out/report.md``.

    Raises
    ------
    FileNotFoundError
        ``data`` does not exist, or the schema is neither a file nor a built-in name.
    ValueError
        The output folder is unsuitable, or the data do not match the schema.
    """
    data = Path(data)
    ds, raw = _load(data, schema, image_size)
    out = _prepare_out(out)
    schema = ds.schema
    classes = list(ds.classes)
    labels = ds.labels
    warnings_: list[str] = []
    figures: list[str] = []
    summary: dict = {"data": str(data), "schema": schema.name if schema else None, "n_rows": len(ds),
                     "n_skipped": len(ds.skipped), "classes": classes}
    md = [f"# Exploratory analysis: {ds.name}", ""]
    md.append(f"- data: `{data}`")
    md.append(f"- schema: `{schema.name}`" if schema else "- schema: none (integer labels)")
    md.append(f"- rows loaded: {len(ds)}; skipped: {len(ds.skipped)}; classes: {', '.join(classes)}")
    if ds.images is not None:
        md.append(f"- images decoded at {ds.image_size} x {ds.image_size} px (grayscale)")
    md.append("")
    body: list[str] = []

    def figure(name: str, caption: str) -> str:
        figures.append(name)
        return f"![{caption}]({name})"

    # -- class balance
    balance = class_balance(labels, classes, groups=ds.groups, splits=ds.splits)
    columns = list(ds.splits) if ds.splits else None
    plot_class_balance(balance, out / "class_balance.png", columns=columns,
                       title="Images per class and split" if ds.splits else "Images and patients per class")
    body += ["## Class balance", "", _markdown_table(balance, digits=1), ""]
    if ds.groups is not None:
        body += ["A patient with films of several classes counts once in each class.", ""]
    body += [figure("class_balance.png", "class balance"), ""]
    for cls in classes:
        n = int(balance.loc[cls, "images"])
        if len(ds) and n / len(ds) < RARE_CLASS:
            who = f" from {int(balance.loc[cls, 'patients'])} patients" if "patients" in balance else ""
            warnings_.append(f"class {cls!r} is rare: {n} images ({100 * n / len(ds):.1f}%){who}; per-class metrics on it will be noisy")

    # -- skipped rows and values turned missing
    body += ["## Skipped rows", ""]
    if ds.skipped:
        summary_table = skipped_summary(ds.skipped)
        body += [f"{len(ds.skipped)} rows were not loaded:", "", _markdown_table(summary_table), ""]
        warnings_.append(f"{len(ds.skipped)} rows skipped: " + "; ".join(f"{r} ({n})" for r, n in summary_table["rows"].items()))
        summary["skipped_reasons"] = {k: int(v) for k, v in summary_table["rows"].items()}
    else:
        body += ["None: every row passed the schema and its image was readable.", ""]
    if ds.notes:
        noted = Counter(str(n["reason"]).split("=", 1)[0] for n in ds.notes)
        body += ["Values the schema's declared `out_of_range = \"missing\"` policy treated as not measured: "
                 + ", ".join(f"{k} ({v})" for k, v in noted.items()) + ".", ""]
        summary["values_made_missing"] = dict(noted)

    tabular = ds.records is not None and schema is not None and len(ds.records.columns) > 0
    if tabular:
        records = ds.records
        # -- missingness
        missing = missingness_by_class(records, schema, labels=labels)
        plot_missingness(missing, out / "missingness.png")
        predictive = predictive_missingness(records, labels, classes)
        body += ["## Missing values by class", "",
                 "Fraction of loaded images whose value is missing after validation (values the schema turned into "
                 "missing count as missing: this is what the model's missing-value indicators see).", "",
                 _markdown_table(missing), "", figure("missingness.png", "missingness by class"), "",
                 "### Does missingness predict the label?", "",
                 f"Flagged when the indicator and the class are dependent (chi-square p < {ALPHA}) and either the missing "
                 f"rates of two classes (of at least {MIN_CLASS_SIZE} images) differ by {100 * MISSING_SPREAD:.0f} points or more, "
                 "or such a class never (or always) has the value while another sometimes does; a value filled (or missing) "
                 f"in fewer than {MIN_FILLED} images is not judged. `indicator_auroc` is the "
                 "macro one-vs-rest AUROC of the indicator alone (0.5: no information).", "",
                 _markdown_table(predictive[["spread", "p_value", "indicator_auroc", "flagged"]]
                                 .assign(p_value=lambda d: d["p_value"].map(lambda p: f"{p:.2g}"))), ""]
        flagged = predictive.index[predictive["flagged"]].tolist()
        summary["missingness_flagged"] = flagged
        for column in flagged:
            warnings_.append(f"missingness of feature {column!r} predicts the label: {predictive.loc[column, 'why']}")

        # -- distributions
        plot_feature_distributions(records, labels, schema, out / "features.png", seed=seed)
        body += ["## Feature values by class", "", figure("features.png", "feature distributions"), ""]

        # -- leaks
        leak_frames = [leak_candidates(records, labels, classes, groups=ds.groups, presence=False,
                                       numeric=[f.name for f in schema.features if f.type == "numeric"]).assign(role="feature")]
        if raw is not None:
            rows = raw.loc[records.index]  # the raw rows that were loaded, in the dataset's order
            roles = {c for c in (schema.label.column, schema.group, schema.image_column) if c}
            others = [c for c in rows.columns if c not in roles and c not in schema.feature_names]
            if others:
                other = leak_candidates(rows.reset_index(drop=True), labels, classes, groups=ds.groups, columns=others)
                other["role"] = ["excluded" if c in schema.excluded else "undeclared" for c in other.index]
                leak_frames.append(other)
            undeclared = schema.undeclared_columns(rows.columns)
            if undeclared:
                warnings_.append(f"columns not declared in schema {schema.name!r} (ignored by training): {undeclared}")
            summary["undeclared_columns"] = undeclared
        leaks = pd.concat(leak_frames)
        leaks = leaks.sort_values("flagged", ascending=False, kind="stable")
        body += ["## Columns that look like leaks", "",
                 f"A column is flagged when, on its filled rows (at least {MIN_FILLED}), its categorical value explains at least "
                 f"{100 * LEAK_UNCERTAINTY:.0f}% of the label's entropy (`label_U`, Theil's uncertainty coefficient), or its "
                 f"numeric value separates one class from the rest with AUROC >= {LEAK_AUROC} (`value_auroc`), or (excluded and "
                 "undeclared columns) its presence predicts the label by the rule above. `across_patients` recomputes U with "
                 "values seen in a single patient pooled: high for source columns (hospital, article), low for identifiers "
                 "and free text, which a model memorises. Excluded columns are never features; a flag on one confirms why "
                 "it is excluded. A flag on a feature asks for a second look.", "",
                 _markdown_table(leaks[["role", "kind", "filled", "distinct", "label_U", "across_patients", "value_auroc", "flagged"]]),
                 ""]
        flagged_leaks = leaks[leaks["flagged"]]
        if len(flagged_leaks):
            body += ["Why:", ""] + [f"- `{c}` ({r['role']}): {r['why']}" for c, r in flagged_leaks.iterrows()] + [""]
        if schema.excluded:
            body += ["Reasons the schema gives for its excluded columns:", ""]
            body += [f"- `{c}`: {reason}" for c, reason in schema.excluded.items()] + [""]
        summary["leak_flagged"] = {c: r["role"] for c, r in flagged_leaks.iterrows()}
        for column, row in flagged_leaks.iterrows():
            if row["role"] == "feature":
                # A strong feature may be real medicine; only a person can tell it from an
                # artefact of how the data were collected.
                warnings_.append(f"feature {column!r} nearly determines the label: {row['why']}; check that it is known "
                                 "at the time of the film and not an artefact of how the data were collected")
            else:
                warnings_.append(f"{row['role']} column {column!r} looks like a leak: {row['why']}")

    # -- patients
    if ds.groups is not None and len(ds):
        counts = images_per_patient(ds.groups)
        plot_images_per_patient(counts, out / "images_per_patient.png")
        per_patient = pd.DataFrame({"group": ds.groups, "label": labels}).groupby("group")["label"].nunique()
        mixed = per_patient.index[per_patient > 1].tolist()
        body += ["## Images per patient", "",
                 f"{len(counts)} patients; median {counts.median():.0f}, max {counts.max()} images "
                 f"(patient {counts.index[0]}). {len(mixed)} patients have images of more than one class"
                 + (f": {', '.join(map(str, mixed[:10]))}{'...' if len(mixed) > 10 else ''}" if mixed else "") + ".", "",
                 figure("images_per_patient.png", "images per patient"), ""]
        if mixed:
            warnings_.append(f"{len(mixed)} patients have images of more than one class (labels are per image); "
                             f"patient-grouped splits keep each of them on one side")
        summary["patients"] = len(counts)
        summary["patients_with_several_classes"] = [str(m) for m in mixed]

    # -- images
    if ds.images is not None and len(ds):
        duplicates = duplicate_images(ds.images, labels, classes, splits=ds.splits, groups=ds.groups)
        summary["duplicate_image_sets"] = len(duplicates)
        if len(duplicates):
            conflict, crosses = int(duplicates["conflict"].sum()), int(duplicates["crosses"].sum())
            where = "splits" if ds.splits else "patients"
            files = ds.files if ds.files is not None else np.arange(len(ds)).astype(str)
            listing = [f"- {', '.join(str(files[i]) for i in r['rows'])}: {', '.join(r['classes'])}"
                       + (f"; {where} {', '.join(r['splits'] or r['patients'])}" if r["crosses"] else "")
                       for _, r in duplicates.head(20).iterrows()]
            body += ["## Duplicate images", "",
                     f"{len(duplicates)} sets of pixel-identical images at {ds.image_size} px "
                     f"({conflict} with different labels, {crosses} spanning several {where}):", ""]
            body += listing + (["- ..."] if len(duplicates) > 20 else []) + [""]
            warnings_.append(f"{len(duplicates)} sets of pixel-identical images ({conflict} with different labels, "
                             f"{crosses} spanning several {where})")
        plot_intensity(ds.images, labels, classes, out / "intensity.png", seed=seed)
        plot_sample_grid(ds.images, labels, classes, out / "samples.png", per_class=per_class, seed=seed)
        body += ["## Pixel intensities by class", "",
                 "Differences here come from acquisition (source, exposure, screenshots) as often as from disease.", "",
                 figure("intensity.png", "pixel intensity by class"), "",
                 "## Sample images", "", figure("samples.png", "sample images per class"), ""]

    md += ["## Warnings", ""]
    md += [f"- {w}" for w in warnings_] if warnings_ else ["None."]
    md += [""] + body
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    summary["warnings"] = warnings_
    summary["figures"] = figures
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return out / "report.md"


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m fusion.eda --data PATH [--schema FILE] --out DIR``."""
    p = argparse.ArgumentParser(prog="python -m fusion.eda", description="Exploratory analysis of a dataset: figures and report.md.")
    p.add_argument("--data", required=True, help="dataset folder (metadata.csv + images), CSV file or MedMNIST .npz")
    p.add_argument("--schema", help="schema TOML file or built-in name (default: the folder's schema.toml)")
    p.add_argument("--out", required=True, help="output folder: new, empty, or an earlier EDA output (replaced)")
    p.add_argument("--image-size", type=int, help="side of the decoded images (default: 64 for folders, the file's own for .npz)")
    p.add_argument("--per-class", type=int, default=6, help="sample images per class (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        report = run_eda(args.data, args.schema, args.out, image_size=args.image_size, per_class=args.per_class, seed=args.seed)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = json.loads((report.parent / "summary.json").read_text(encoding="utf-8"))
    print(f"{summary['n_rows']} rows loaded, {summary['n_skipped']} skipped; classes {', '.join(summary['classes'])}")
    for warning in summary["warnings"]:
        print(f"warning: {warning}")
    print(f"report written to {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
