"""The numbers of the exploratory analysis: class balance, missing values, skipped rows,
patients and duplicate images.

Every function here is pure: it takes tables, label arrays or images and returns a
DataFrame or Series, so the same measurements serve the report, a notebook or a test.
Nothing is drawn or written; :mod:`fusion.eda.figures` draws and
:mod:`fusion.eda.report` writes.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from fusion.schema import Schema, is_missing

__all__ = [
    "class_balance",
    "duplicate_images",
    "images_per_patient",
    "missingness_by_class",
    "predictive_missingness",
    "skipped_summary",
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
    """``labels`` as int64 after checking it against the table and the classes.

    The checks run here, once, because a misaligned label array would not fail later:
    it would silently attribute rows to the wrong class.
    """
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"{what}: labels must have shape ({n},) to match the table; got {labels.shape}")
    if labels.size and (labels.min() < -1 or labels.max() >= len(classes)):
        raise ValueError(
            f"{what}: labels must index into {len(classes)} classes {list(classes)}; "
            f"got values {sorted(set(labels.tolist()))}"
        )
    return labels.astype(np.int64)


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


def missingness_by_class(
    table: pd.DataFrame, schema: Schema, *, labels=None, columns: Sequence[str] | None = None
) -> pd.DataFrame:
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
    if labels is None:
        labels = _encode_labels(table, schema)
    else:
        labels = _check_labels(labels, len(table), classes, "missingness_by_class")
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
        rows[column] = [*rates, missing.mean() if missing.size else math.nan]
    return pd.DataFrame.from_dict(rows, orient="index", columns=[*classes, "all"]).rename_axis("column")


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
    thresholds = {"spread": spread, "alpha": alpha, "min_class_size": min_class_size, "min_count": min_count}
    out = {}
    for column in columns:
        if column not in table.columns:
            raise ValueError(
                f"predictive_missingness: column {column!r} is not in the table; it has {list(table.columns)}"
            )
        missing = _missing_mask(table[column])[keep]
        out[column] = _indicator_row(missing, lab, sizes, classes, **thresholds)
    return pd.DataFrame.from_dict(out, orient="index").rename_axis("column")


def _indicator_row(
    missing: np.ndarray,
    lab: np.ndarray,
    sizes: np.ndarray,
    classes: list[str],
    *,
    spread: float,
    alpha: float,
    min_class_size: int,
    min_count: int,
) -> dict:
    """One row of :func:`predictive_missingness`: the rule applied to one column's
    missing indicator (``missing``, aligned with the labelled rows ``lab``)."""
    n_missing = np.bincount(lab[missing], minlength=len(classes))
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = n_missing / sizes
    # Only classes large enough to estimate a rate may set the gap or the never/always finding.
    big = [k for k in range(len(classes)) if sizes[k] >= min_class_size]
    gap = float(max(rates[big]) - min(rates[big])) if len(big) >= 2 else 0.0
    present = [k for k in range(len(classes)) if sizes[k] > 0]
    p_value = _indicator_p_value(n_missing, sizes, present)
    auroc = _indicator_auroc(missing, lab, rates, present)
    never = [classes[k] for k in big if rates[k] == 1.0 and any(rates[j] < 1.0 for j in big)]
    always = [classes[k] for k in big if rates[k] == 0.0 and any(rates[j] > 0.0 for j in big)]
    enough = min(int(missing.sum()), int((~missing).sum())) >= min_count
    flagged = enough and p_value < alpha and (gap >= spread or bool(never) or bool(always))
    why = "missing in " + ", ".join(f"{_percent(rates[k])} of {classes[k]}" for k in present)
    if never:
        why += f"; never filled for {', '.join(never)}"
    if always:
        why += f"; always filled for {', '.join(always)}"
    why += f" (chi-square p={p_value:.2g}, indicator AUROC {auroc:.2f})"
    rates_by_class = {f"missing {c}": rates[k] for k, c in enumerate(classes)}
    return {
        **rates_by_class,
        "spread": gap,
        "p_value": p_value,
        "indicator_auroc": auroc,
        "flagged": bool(flagged),
        "why": why,
    }


def _indicator_p_value(n_missing: np.ndarray, sizes: np.ndarray, present: list[int]) -> float:
    """p-value of the chi-square test of independence of the missing indicator and the
    class, over the classes with rows (``present``)."""
    contingency = np.array([n_missing[present], sizes[present] - n_missing[present]])
    if contingency.sum(axis=1).min() == 0 or len(present) < 2:
        return 1.0  # the indicator is constant: it carries nothing
    # Imported here so that importing fusion.eda does not load scipy.
    from scipy.stats import chi2_contingency

    return float(chi2_contingency(contingency)[1])


def _indicator_auroc(missing: np.ndarray, lab: np.ndarray, rates: np.ndarray, present: list[int]) -> float:
    """Macro one-vs-rest AUROC of the binary indicator, either direction.

    For a binary score the AUROC is the mean of the two rates' difference and 0.5, so no
    ranking is needed.
    """
    aucs = []
    for k in present:
        rest = lab != k
        if rest.any():
            aucs.append(0.5 + abs(rates[k] - missing[rest].mean()) / 2)
    return float(np.mean(aucs)) if aucs else 0.5


def _reason_kind(reason: str) -> str:
    """A skipped row's reason without its particular values, so reasons can be counted."""
    match = re.match(r"'([^']+)' (must be|is required)", reason)
    if match:
        if match.group(2) == "must be":
            return f"{match.group(1)}: invalid value"
        return f"{match.group(1)}: required but missing"
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
    >>> reason = "'age' must be a number in [0, 120] years; got 'abc'"
    >>> skipped_summary([{"row": 3, "file": None, "reason": reason}])["rows"].to_dict()
    {'age: invalid value': 1}
    """
    kinds: dict[str, list] = {}
    for entry in skipped:
        # "; got ..." continues a reason (the offending value), it does not start one.
        parts = re.split(r"; (?!got )", str(entry.get("reason", "")))
        for kind in dict.fromkeys(_reason_kind(p) for p in parts if p):
            kinds.setdefault(kind, []).append(entry.get("row"))
    frame = pd.DataFrame(
        {
            "rows": [len(v) for v in kinds.values()],
            "examples": [", ".join(str(r) for r in v[:5]) for v in kinds.values()],
        },
        index=pd.Index(list(kinds), name="reason"),
    )
    return frame.sort_values("rows", ascending=False, kind="stable")


def duplicate_images(
    images: np.ndarray, labels, classes: Sequence[str], *, splits: dict | None = None, groups=None
) -> pd.DataFrame:
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
        # A digest instead of the bytes themselves keeps memory flat on large datasets.
        seen.setdefault(hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest(), []).append(i)
    rows = []
    for members in seen.values():
        if len(members) < 2:
            continue
        cls = sorted({classes[labels[i]] for i in members})
        spl = sorted({split_of[i] for i in members} - {""})
        pat = sorted({str(groups[i]) for i in members}) if groups is not None else []
        rows.append(
            {
                "rows": members,
                "classes": cls,
                "splits": spl,
                "patients": pat,
                "conflict": len(cls) > 1,
                "crosses": len(spl) > 1 or len(pat) > 1,
            }
        )
    return pd.DataFrame(rows, columns=["rows", "classes", "splits", "patients", "conflict", "crosses"])


def images_per_patient(groups) -> pd.Series:
    """Number of images of each patient (index: patient id), most first."""
    return pd.Series(np.asarray(groups)).value_counts().rename("images").rename_axis("patient")
