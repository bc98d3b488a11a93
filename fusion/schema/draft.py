"""A first schema drafted from a folder's ``metadata.csv``, to be read and corrected.

Writing a schema by hand means listing every category, guessing ranges and finding the
columns that give the answer away. The draft does the mechanical part from the data:
each column's kind, categories in order of frequency, a range wider than the observed
one, "not known" tokens declared as missing (so those rows are kept), the label, the
group and the image column, and an ``[excluded]`` entry with its reason for leaks
(:func:`fusion.eda.leak_candidates`), identifiers, files, dates, constants and free
text. Every choice that is a guess says so in a comment: the draft loads and trains as
written, but only a person who knows the data can confirm it.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fusion.data import read_table
from fusion.eda.analysis import MIN_FILLED
from fusion.eda.leaks import leak_candidates
from fusion.schema.values import DECIMAL, is_missing

__all__ = ["draft_schema"]

# Words a table writes for "not known"; matched case-insensitively, after the
# MISSING_STRINGS every schema already reads as missing (empty, NA, null...).
UNKNOWN_TOKENS = ("unknown", "?", "-", "missing", "not known", "unk", "n.a.")
LABEL_NAMES = ("label", "diagnosis", "dx", "finding", "target", "class", "outcome", "y")
GROUP_WORDS = ("patient", "subject", "lesion", "person", "case")
DATE_WORDS = ("date", "time", "year")
# Column names that read as something known only after the image (outcomes) or as where
# the case came from (provenance): excluded with a reason to check, since a pooled
# collection's source often gives its diagnosis away. A word of the name must start with one.
OUTCOME_WORDS = ("surviv", "death", "died", "mortality", "icu", "intubat", "extubat", "discharge", "supplemental")
PROVENANCE_WORDS = ("licen", "url", "doi", "source", "hospital", "location", "credit")
TEXT_CHARS = 40  # values this long on average are sentences, not categories
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff", ".bmp", ".gif")
MAX_CATEGORIES = 30  # more distinct values than this: free text or an identifier, not a category
MAX_CLASSES = 20
SAMPLE_FILES = 200  # image files checked for the image column
PURITY = 0.99  # a value this often one class is that class
SOURCE = 0.5  # free text whose values explain this much of the label across patients is a source
LEAK_AUROC_DRAFT = 0.97  # a numeric column this good alone is a leak candidate, not a clue


@dataclass
class _Column:
    """What the draft says of one column: a feature table's lines or an exclusion."""

    name: str
    lines: list[str] = field(default_factory=list)
    reason: str | None = None
    tokens: list[str] = field(default_factory=list)  # "not known" values, read as missing
    numeric: bool = False


def _q(text: str) -> str:
    """A TOML string (JSON's escaping is valid TOML basic-string escaping)."""
    return json.dumps(str(text), ensure_ascii=False)


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _q(name)


def _filled(values: pd.Series) -> pd.Series:
    return values[[not is_missing(v) for v in values]].astype(str).str.strip()


def _tokens(filled: pd.Series) -> list[str]:
    return sorted({v for v in filled.unique() if v.lower() in UNKNOWN_TOKENS})


def _numbers(values: pd.Series) -> np.ndarray | None:
    if len(values) == 0 or not all(DECIMAL.fullmatch(v) for v in values):
        return None
    return values.astype(float).to_numpy()


def _range(numbers: np.ndarray) -> tuple[float, float]:
    """The observed range widened by half its span each way (never below 0 when nothing
    observed is negative), rounded outwards to a step of the span's order: a new patient
    slightly outside is kept, a typo far outside is caught."""
    low, high = float(numbers.min()), float(numbers.max())
    span = (high - low) or abs(high) or 1.0
    step = 10.0 ** math.floor(math.log10(span / 2))
    wide_low = math.floor((low - span / 2) / step) * step
    if low >= 0:
        wide_low = max(wide_low, 0.0)
    return round(wide_low, 10), round(math.ceil((high + span / 2) / step) * step, 10)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _numeric_tokens(name: str, numbers: np.ndarray, texts: pd.Series) -> tuple[list[str], list[str]]:
    """Numbers that are placeholders rather than values: ``-1`` where every other value is
    positive, and an age of ``0`` far below every other age. Conservative on purpose: a
    real 0 declared missing loses a value, a placeholder left in biases the feature."""
    tokens, notes = [], []
    rest = numbers[numbers != -1]
    if (numbers == -1).any() and len(rest) and rest.min() > 0:
        tokens += sorted({t for t in texts if float(t) == -1})
        notes.append("-1 where every other value is positive reads as a 'not known' code")
    rest = numbers[numbers != 0]
    if "age" in name.lower() and (numbers == 0).any() and len(rest) and rest.min() >= 5:
        tokens += sorted({t for t in texts if float(t) == 0})
        notes.append(f"age 0 while every other age is at least {_fmt(rest.min())}: a placeholder, not an infant")
    return tokens, notes


def _numeric_lines(name: str, filled: pd.Series, numbers: np.ndarray, tokens: list[str]) -> tuple[list[str], list[str]]:
    codes, notes = _numeric_tokens(name, numbers, filled)
    values = numbers[~np.isin(filled.to_numpy(), codes)]
    low, high = _range(values)
    if values.min() >= 0 and values.max() == 100 and high > 100:
        high = 100.0  # a scale that tops out at 100 in the data is most likely a percentage
        notes.append("the values reach 100 exactly: read as a percentage, so the range stops at 100")
    lines = ['type = "numeric"']
    lines += [f"# {note}" for note in notes]
    lines.append(f"# observed {_fmt(values.min())} to {_fmt(values.max())}; widened: check the plausible range")
    lines.append(f"range = [{_fmt(low)}, {_fmt(high)}]")
    return lines, tokens + codes


def _choice_lines(filled: pd.Series) -> list[str]:
    counts = Counter(filled)
    order = [v for v, _ in counts.most_common()]
    negative = [v for v in order if v.lower() in ("0", "n", "no", "false", "negative", "neg", "absent")]
    if len(order) == 2:
        if negative:
            order = negative[:1] + [v for v in order if v != negative[0]]
        kind, note = "binary", "[negative, positive]: check which is which"
    else:
        kind, note = "categorical", "in order of frequency"
    shown = ", ".join(f"{v} {counts[v]:,}" for v in order)
    return [f'type = "{kind}"', f"# {note} ({shown})", f"categories = [{', '.join(_q(v) for v in order)}]"]


def _describe(name: str, values: pd.Series, n_rows: int) -> _Column:
    """A feature's lines, or the reason the column is excluded (identifier, date, file,
    constant, free text), from its raw values."""
    col = _Column(name)
    filled = _filled(values)
    tokens = _tokens(filled)
    known = filled[~filled.isin(tokens)]
    distinct = known.nunique()
    lower = name.lower()
    words = re.split(r"[^a-z0-9]+", lower)
    if distinct == 0:
        col.reason = "empty: no value in any row"
    elif distinct == 1:
        col.reason = f"constant: every filled row holds {known.iloc[0]!r}"
    elif known.str.lower().str.endswith(IMAGE_SUFFIXES).mean() > 0.5:
        col.reason = "file name: identifies the image, carries nothing about the patient"
    elif re.search(r"(^|_)id$|id$", lower) and not lower.endswith("_paid"):
        col.reason = "identifier: names a record, carries nothing about the patient"
    elif lower.startswith("unnamed"):
        col.reason = "unnamed column: a spreadsheet's index or spill-over column; read it before using it"
    elif any(w.startswith(OUTCOME_WORDS) for w in words):
        col.reason = "outcome? the name reads as something known only after the image; keep it only if it is not"
    elif any(w.startswith(PROVENANCE_WORDS) for w in words):
        col.reason = "provenance? the name reads as where the case came from, which can give the diagnosis away"
    elif known.str.len().mean() > TEXT_CHARS:
        col.reason = f"free text ({distinct:,} distinct values): may name the diagnosis, needs reading"
    elif any(w in lower for w in DATE_WORDS) and _numbers(known) is None:
        col.reason = "date or time: provenance (when the case was collected), not the patient"
    elif (numbers := _numbers(known)) is not None and distinct > 2:
        col.lines, tokens = _numeric_lines(name, known, numbers, tokens)
        col.numeric = True
    elif distinct <= MAX_CATEGORIES:
        col.lines = _choice_lines(known)
    elif known.str.len().mean() > 25 or known.str.contains(" ").mean() > 0.5:
        col.reason = f"free text ({distinct:,} distinct values): may name the diagnosis, needs reading"
    else:
        col.reason = f"identifier-like: {distinct:,} distinct values in {n_rows:,} rows"
    col.tokens = tokens
    if col.lines and tokens:
        col.lines.append("# written for 'not known' in this column: kept as missing, not skipped")
        col.lines.append(f"missing_tokens = [{', '.join(_q(t) for t in tokens)}]")
    if col.lines:
        # empty cells, and the cells holding a token (a numeric column's tokens are still in `known`)
        missing = len(values) - len(known) + int(known.isin(tokens).sum())
        col.lines.append(f"# {missing:,} of {n_rows:,} rows missing; impute, no indicator (whether a value")
        col.lines.append("# was recorded often says which source sent the case, a shortcut)")
        col.lines.append('missing = "impute"')
    return col


def _image_column(table: pd.DataFrame, folder: Path) -> tuple[str | None, str | None]:
    """The column whose values are files that exist (in ``images/`` beside the table, or
    beside it), and that folder relative to the table."""
    for sub in ("images", "."):
        where = folder / sub
        if not where.is_dir():
            continue
        for column in table.columns:
            sample = _filled(table[column]).head(SAMPLE_FILES)
            if len(sample) and all((where / v).is_file() for v in sample):
                return column, sub
    return None, None


def _label_column(table: pd.DataFrame, label: str | None, skip: set[str]) -> tuple[str, str]:
    if label is not None:
        if label not in table.columns:
            raise ValueError(f"--label {label!r} is not a column of metadata.csv; columns: {list(table.columns)}")
        return label, "given with --label"
    by_name = {c.lower(): c for c in table.columns if c not in skip}
    for name in LABEL_NAMES:
        if name in by_name:
            return by_name[name], f"a guess: the column named {name!r}; check it is the answer to predict"
    for column in table.columns:
        if column not in skip and 2 <= _filled(table[column]).nunique() <= MAX_CLASSES:
            return column, "a guess: the first column with 2-20 distinct values; check it is the answer"
    raise ValueError("no column looks like a label (2-20 distinct values): name it with --label")


def _group_column(table: pd.DataFrame, skip: set[str]) -> tuple[str | None, str]:
    """An id-like column whose values repeat (several films of one patient or lesion)."""
    candidates = []
    for column in table.columns:
        filled = _filled(table[column])
        if column in skip or not len(filled):
            continue
        distinct, lower = filled.nunique(), column.lower()
        id_like = lower.endswith("id") or any(w in lower for w in GROUP_WORDS)
        if id_like and 1 < distinct < len(filled):
            rank = next((k for k, w in enumerate(GROUP_WORDS) if w in lower), len(GROUP_WORDS))
            candidates.append((rank, column, distinct, len(filled)))
    if not candidates:
        return None, "no id-like column with repeated values: every row is taken as its own patient"
    rank, column, distinct, n = min(candidates)
    others = [c for _, c, _, _ in sorted(candidates) if c != column]
    why = f"{distinct:,} distinct values in {n:,} rows: several rows per {column}"
    return column, why + (f"; other candidates: {others}" if others else "")


def _class_name(value: str, taken: set[str]) -> str:
    name = re.sub(r"[^0-9a-z]+", "_", value.lower()).strip("_") or "class"
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _label_lines(table: pd.DataFrame, column: str, why: str) -> tuple[list[str], np.ndarray, list[str]]:
    filled = _filled(table[column])
    counts = Counter(filled).most_common()
    if len(counts) < 2 or len(counts) > MAX_CLASSES:
        raise ValueError(
            f"label column {column!r} has {len(counts)} distinct values; a label needs 2 to {MAX_CLASSES}: "
            "name another with --label"
        )
    taken: set[str] = set()
    names = [_class_name(v, taken) for v, _ in counts]
    classes = ", ".join(f"{_key(n)} = [{_q(v)}]" for n, (v, _) in zip(names, counts, strict=True))
    shown = ", ".join(f"{v} {k:,}" for v, k in counts)
    lines = [
        "[label]",
        f"# {why}.",
        f"# Classes in order of frequency ({shown}); their order is the model's outputs.",
        f"column = {_q(column)}",
        f"classes = {{ {classes} }}",
    ]
    index = {v: k for k, (v, _) in enumerate(counts)}
    raw = table[column].map(lambda v: -1 if is_missing(v) else index.get(str(v).strip(), -1)).to_numpy()
    return lines, raw.astype(int), names


def _pure_values(values: pd.Series, labels: np.ndarray) -> str | None:
    """Values that occur only with one class, covering a tenth of the filled rows or more
    (``dx_type = follow_up``: naevi only): a column written from the answer. Theil's U
    misses it when the pure values belong to the majority class."""
    frame = pd.DataFrame({"v": values.to_numpy(), "y": labels})
    frame = frame[(frame.y >= 0) & ~frame.v.map(is_missing)]
    if frame.empty:
        return None
    table = pd.crosstab(frame.v, frame.y)
    sizes = table.sum(axis=1)
    pure = table[(table.max(axis=1) >= PURITY * sizes) & (sizes >= max(MIN_FILLED, len(frame) // 50))]
    if pure.to_numpy().sum() < 0.1 * len(frame):
        return None
    return (
        "value(s) "
        + ", ".join(f"{v!r} ({int(n):,} rows)" for v, n in pure.sum(axis=1).items())
        + " occur with one class only"
    )


def _presence(values: pd.Series, labels: np.ndarray, classes: list[str]) -> str | None:
    """Filled for (nearly) exactly one class's rows: the column is written with the answer."""
    filled = ~values.map(is_missing).to_numpy()
    for k, name in enumerate(classes):
        mine, others = labels == k, (labels != k) & (labels >= 0)
        if mine.any() and others.any() and filled[mine].mean() >= PURITY and filled[others].mean() <= 1 - PURITY:
            return f"filled for the rows of class {name!r} only"
    return None


def _leaks(judged: list[_Column], table: pd.DataFrame, labels: np.ndarray, classes: list[str], groups) -> dict:
    """Columns whose values alone nearly give the label: :func:`fusion.eda.leak_candidates`
    (Theil's U, or a one-column AUROC of at least ``LEAK_AUROC_DRAFT``), a value seen with
    one class only, or a column filled for one class only. Free text counts only when its
    values are shared across patients (a source, not a note that is unique to a patient).
    Weaker signs (the EDA report's presence rule) stay features: the report shows them,
    a person decides."""
    if not judged:
        return {}
    columns = [c.name for c in judged]
    clean = pd.DataFrame(
        {c.name: table[c.name].mask(table[c.name].astype(str).str.strip().isin(c.tokens)) for c in judged}
    )
    numeric = [c.name for c in judged if c.numeric]
    found = leak_candidates(
        clean, labels, classes, groups=groups, numeric=numeric, presence=False, auroc=LEAK_AUROC_DRAFT
    )
    text = {c.name for c in judged if c.reason is not None and c.reason.startswith("free text")}
    why = {
        column: row["why"]
        for column, row in found.iterrows()
        if row["flagged"] and (column not in text or row["across_patients"] >= SOURCE)
    }
    table = clean
    for column in columns:
        reason = _pure_values(table[column], labels) or _presence(table[column], labels, classes)
        if column not in why and reason:
            why[column] = reason
    return {
        column: f"leak candidate: {text}; keep it only if it is known before the diagnosis"
        for column, text in why.items()
    }


def draft_schema(folder: str | Path, label: str | None = None) -> str:
    """A commented schema (TOML text) for the folder's ``metadata.csv``, to be read before use.

    Raises
    ------
    FileNotFoundError
        No ``metadata.csv`` in ``folder``.
    ValueError
        The table cannot be read, or no label can be found (then name it with ``label``).
    """
    folder = Path(folder)
    path = folder / "metadata.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metadata.csv in {folder}; a data folder holds metadata.csv and images/")
    table = read_table(path)
    image, image_folder = _image_column(table, folder)
    label_column, label_why = _label_column(table, label, {image})
    group, group_why = _group_column(table, {image, label_column})
    label_lines, labels, classes = _label_lines(table, label_column, label_why)
    described = [_describe(c, table[c], len(table)) for c in table.columns if c not in (image, label_column, group)]
    judged = [c for c in described if c.reason is None or c.reason.startswith(("free text", "date"))]
    groups = None if group is None else table[group].astype(str).to_numpy()
    leaks = _leaks(judged, table, labels, classes, groups)
    for col in described:
        if col.name in leaks:
            col.lines, col.reason = [], leaks[col.name]
    return _assemble(folder, label_lines, (group, group_why), (image, image_folder), described)


def _assemble(folder: Path, label_lines, group, image, described: list[_Column]) -> str:
    lines = [
        f"# Draft schema of {folder.name}, written by `python -m fusion.schema draft` from metadata.csv.",
        "# A draft: every kind, range and exclusion below is a guess from the values; read each",
        "# comment, ask whether a column is known when the image is taken, and correct it.",
        f"name = {_q(re.sub(r'[^0-9A-Za-z_]+', '_', folder.name) or 'draft')}",
        f"description = {_q(f'Draft schema of {folder.name} (from metadata.csv)')}",
        "",
        *label_lines,
    ]
    if group[0] is not None:
        lines += ["", "[group]", f"# {group[1]}; splits never separate them.", f"column = {_q(group[0])}"]
    else:
        lines += ["", f"# No [group]: {group[1]}."]
    if image[0] is not None:
        lines += [
            "",
            "[image]",
            "# the column whose values are files found in the folder below",
            f"column = {_q(image[0])}",
            f"folder = {_q(image[1])}",
        ]
    for col in described:
        if col.reason is None:
            lines += ["", f"[features.{_key(col.name)}]", *col.lines]
    excluded = [col for col in described if col.reason is not None]
    if excluded:
        lines += ["", "[excluded]"]
        lines += [f"{_key(col.name)} = {{ reason = {_q(col.reason)} }}" for col in excluded]
    return "\n".join(lines) + "\n"
