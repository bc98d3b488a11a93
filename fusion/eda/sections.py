"""The sections of the EDA report, one function each.

Each section measures (:mod:`fusion.eda.analysis`, :mod:`fusion.eda.leaks`), draws
(:mod:`fusion.eda.figures`) and adds its Markdown, warnings and ``summary.json`` entries
to a :class:`ReportParts`. The sections append in the order :func:`fusion.eda.run_eda`
calls them, which is the order of the report and of its warnings.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fusion.data import Dataset
from fusion.eda.analysis import (
    ALPHA,
    LEAK_AUROC,
    LEAK_UNCERTAINTY,
    MIN_CLASS_SIZE,
    MIN_FILLED,
    MISSING_SPREAD,
    RARE_CLASS,
    class_balance,
    duplicate_images,
    images_per_patient,
    missingness_by_class,
    predictive_missingness,
    skipped_summary,
)
from fusion.eda.figures import (
    plot_class_balance,
    plot_feature_distributions,
    plot_images_per_patient,
    plot_intensity,
    plot_missingness,
    plot_sample_grid,
)
from fusion.eda.leaks import leak_candidates
from fusion.eda.output import OutputFolder

__all__ = [
    "ReportParts",
    "add_class_balance",
    "add_distributions",
    "add_images",
    "add_leaks",
    "add_missingness",
    "add_patients",
    "add_skipped",
]

_MISSINGNESS_RULE = (
    f"Flagged when the indicator and the class are dependent (chi-square p < {ALPHA}) and either the missing "
    f"rates of two classes (of at least {MIN_CLASS_SIZE} images) differ by {100 * MISSING_SPREAD:.0f} points or more, "
    "or such a class never (or always) has the value while another sometimes does; a value filled (or missing) "
    f"in fewer than {MIN_FILLED} images is not judged. `indicator_auroc` is the "
    "macro one-vs-rest AUROC of the indicator alone (0.5: no information)."
)

_LEAK_RULE = (
    f"A column is flagged when, on its filled rows (at least {MIN_FILLED}), its categorical value explains at least "
    f"{100 * LEAK_UNCERTAINTY:.0f}% of the label's entropy (`label_U`, Theil's uncertainty coefficient), or its "
    f"numeric value separates one class from the rest with AUROC >= {LEAK_AUROC} (`value_auroc`), or (excluded and "
    "undeclared columns) its presence predicts the label by the rule above. `across_patients` recomputes U with "
    "values seen in a single patient pooled: high for source columns (hospital, article), low for identifiers "
    "and free text, which a model memorises. Excluded columns are never features; a flag on one confirms why "
    "it is excluded. A flag on a feature asks for a second look."
)

_LEAK_COLUMNS = ["role", "kind", "filled", "distinct", "label_U", "across_patients", "value_auroc", "flagged"]


@dataclass
class ReportParts:
    """What the sections have produced so far.

    The sections share one object rather than return pieces, because a section adds
    to several outputs at once (the body, the warnings at the top, ``summary.json``)
    and their order must follow the order of the sections.

    Attributes
    ----------
    out : OutputFolder
        Where the figures go; :meth:`file` gives each one's path.
    body : list of str
        Markdown lines of the report after its warnings.
    warnings : list of str
        One sentence each, for the report's top and ``summary.json``.
    figures : list of str
        File names of the figures linked so far.
    summary : dict
        Entries of ``summary.json``.
    """

    out: OutputFolder
    body: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def file(self, name: str) -> Path:
        """The path to write the new file ``name`` to (recorded as the analysis's own)."""
        return self.out.claim(name)

    def figure(self, name: str, caption: str) -> str:
        """Markdown that links the figure ``name``, recorded so that ``summary.json``
        lists exactly the figures the report links."""
        self.figures.append(name)
        return f"![{caption}]({name})"


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
    for key, row in zip(frame.index, frame.itertuples(index=False, name=None), strict=True):
        cells = ([cell(key)] if index else []) + [cell(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------- every dataset
def add_class_balance(parts: ReportParts, ds: Dataset) -> None:
    """Images (and patients, or splits) per class, with a warning for each rare class,
    since per-class metrics on a handful of films are noise."""
    classes = list(ds.classes)
    balance = class_balance(ds.labels, classes, groups=ds.groups, splits=ds.splits)
    columns = list(ds.splits) if ds.splits else None
    title = "Images per class and split" if ds.splits else "Images and patients per class"
    plot_class_balance(balance, parts.file("class_balance.png"), columns=columns, title=title)
    parts.body += ["## Class balance", "", _markdown_table(balance, digits=1), ""]
    if ds.groups is not None:
        parts.body += ["A patient with films of several classes counts once in each class.", ""]
    parts.body += [parts.figure("class_balance.png", "class balance"), ""]
    for cls in classes:
        n = int(balance.loc[cls, "images"])
        if len(ds) and n / len(ds) < RARE_CLASS:
            who = f" from {int(balance.loc[cls, 'patients'])} patients" if "patients" in balance else ""
            parts.warnings.append(
                f"class {cls!r} is rare: {n} images ({100 * n / len(ds):.1f}%){who}; "
                "per-class metrics on it will be noisy"
            )


def add_skipped(parts: ReportParts, ds: Dataset) -> None:
    """Rows the loader skipped, counted by reason, and values the schema turned into
    missing: both shrink or bias the data before any model sees it."""
    parts.body += ["## Skipped rows", ""]
    if ds.skipped:
        table = skipped_summary(ds.skipped)
        parts.body += [f"{len(ds.skipped)} rows were not loaded:", "", _markdown_table(table), ""]
        reasons = "; ".join(f"{r} ({n})" for r, n in table["rows"].items())
        parts.warnings.append(f"{len(ds.skipped)} rows skipped: {reasons}")
        parts.summary["skipped_reasons"] = {k: int(v) for k, v in table["rows"].items()}
    else:
        parts.body += ["None: every row passed the schema and its image was readable.", ""]
    if ds.notes:
        noted = Counter(str(n["reason"]).split("=", 1)[0] for n in ds.notes)
        parts.body += [
            'Values the schema\'s declared `out_of_range = "missing"` policy treated as not measured: '
            + ", ".join(f"{k} ({v})" for k, v in noted.items())
            + ".",
            "",
        ]
        parts.summary["values_made_missing"] = dict(noted)
    if ds.missing_tokens:
        counts = [
            f"{name} {token!r} ({n})" for name, tokens in ds.missing_tokens.items() for token, n in tokens.items()
        ]
        parts.body += [
            "Values the schema declares as not known (`missing_tokens`), kept as missing: " + ", ".join(counts) + ".",
            "",
        ]
        parts.summary["missing_tokens"] = ds.missing_tokens


# ------------------------------------------------------------- tabular datasets
def add_missingness(parts: ReportParts, ds: Dataset) -> None:
    """Missing rates by class and whether missingness alone predicts the label, which
    a model with missing-value indicators would exploit."""
    classes = list(ds.classes)
    missing = missingness_by_class(ds.records, ds.schema, labels=ds.labels)
    plot_missingness(missing, parts.file("missingness.png"))
    predictive = predictive_missingness(ds.records, ds.labels, classes)
    shown = predictive[["spread", "p_value", "indicator_auroc", "flagged"]].assign(
        p_value=lambda d: d["p_value"].map(lambda p: f"{p:.2g}")
    )
    parts.body += [
        "## Missing values by class",
        "",
        "Fraction of loaded images whose value is missing after validation (values the schema turned into "
        "missing count as missing: this is what the model's missing-value indicators see).",
        "",
        _markdown_table(missing),
        "",
        parts.figure("missingness.png", "missingness by class"),
        "",
        "### Does missingness predict the label?",
        "",
        _MISSINGNESS_RULE,
        "",
        _markdown_table(shown),
        "",
    ]
    flagged = predictive.index[predictive["flagged"]].tolist()
    parts.summary["missingness_flagged"] = flagged
    for column in flagged:
        parts.warnings.append(f"missingness of feature {column!r} predicts the label: {predictive.loc[column, 'why']}")


def add_distributions(parts: ReportParts, ds: Dataset, *, seed: int) -> None:
    """The figure of every feature's values by class."""
    plot_feature_distributions(ds.records, ds.labels, ds.schema, parts.file("features.png"), seed=seed)
    parts.body += ["## Feature values by class", "", parts.figure("features.png", "feature distributions"), ""]


def add_leaks(parts: ReportParts, ds: Dataset, raw: pd.DataFrame | None) -> None:
    """Features and other columns whose values or presence nearly determine the label.

    ``raw`` (the CSV as read, or None for an ``.npz``) holds the columns training
    ignores; they are judged too, because a leak there is what the schema must keep out.
    """
    schema = ds.schema
    leaks = _leak_table(parts, ds, raw)
    flagged = leaks[leaks["flagged"]]
    parts.body += ["## Columns that look like leaks", "", _LEAK_RULE, "", _markdown_table(leaks[_LEAK_COLUMNS]), ""]
    if len(flagged):
        parts.body += ["Why:", ""] + [f"- `{c}` ({r['role']}): {r['why']}" for c, r in flagged.iterrows()] + [""]
    if schema.excluded:
        parts.body += ["Reasons the schema gives for its excluded columns:", ""]
        parts.body += [f"- `{c}`: {reason}" for c, reason in schema.excluded.items()] + [""]
    parts.summary["leak_flagged"] = {c: r["role"] for c, r in flagged.iterrows()}
    for column, row in flagged.iterrows():
        if row["role"] == "feature":
            # A strong feature may be real medicine; only a person can tell it from an
            # artefact of how the data were collected.
            parts.warnings.append(
                f"feature {column!r} nearly determines the label: {row['why']}; check that it is known "
                "at the time of the film and not an artefact of how the data were collected"
            )
        else:
            parts.warnings.append(f"{row['role']} column {column!r} looks like a leak: {row['why']}")


def _leak_table(parts: ReportParts, ds: Dataset, raw: pd.DataFrame | None) -> pd.DataFrame:
    """:func:`~fusion.eda.leaks.leak_candidates` of the features and of the raw table's
    other columns, with their ``role``; notes the undeclared columns on the way."""
    schema, records, labels, classes = ds.schema, ds.records, ds.labels, list(ds.classes)
    numeric = [f.name for f in schema.features if f.continuous]
    # Presence of a feature is judged by add_missingness already.
    features = leak_candidates(records, labels, classes, groups=ds.groups, presence=False, numeric=numeric)
    frames = [features.assign(role="feature")]
    if raw is not None:
        rows = raw.loc[records.index]  # the raw rows that were loaded, in the dataset's order
        roles = {c for c in (schema.label.column, schema.group, schema.image_column) if c}
        others = [c for c in rows.columns if c not in roles and c not in schema.feature_names]
        if others:
            other = leak_candidates(rows.reset_index(drop=True), labels, classes, groups=ds.groups, columns=others)
            other["role"] = ["excluded" if c in schema.excluded else "undeclared" for c in other.index]
            frames.append(other)
        undeclared = schema.undeclared_columns(rows.columns)
        if undeclared:
            parts.warnings.append(f"columns not declared in schema {schema.name!r} (ignored by training): {undeclared}")
        parts.summary["undeclared_columns"] = undeclared
    leaks = pd.concat(frames)
    return leaks.sort_values("flagged", ascending=False, kind="stable")


# ------------------------------------------------------- patients and images
def add_patients(parts: ReportParts, ds: Dataset) -> None:
    """Images per patient and patients with films of several classes, which a split
    by image rather than by patient would put on both sides."""
    counts = images_per_patient(ds.groups)
    plot_images_per_patient(counts, parts.file("images_per_patient.png"))
    per_patient = pd.DataFrame({"group": ds.groups, "label": ds.labels}).groupby("group")["label"].nunique()
    mixed = per_patient.index[per_patient > 1].tolist()
    listed = f": {', '.join(map(str, mixed[:10]))}{'...' if len(mixed) > 10 else ''}" if mixed else ""
    parts.body += [
        "## Images per patient",
        "",
        f"{len(counts)} patients; median {counts.median():.0f}, max {counts.max()} images "
        f"(patient {counts.index[0]}). {len(mixed)} patients have images of more than one class{listed}.",
        "",
        parts.figure("images_per_patient.png", "images per patient"),
        "",
    ]
    if mixed:
        parts.warnings.append(
            f"{len(mixed)} patients have images of more than one class (labels are per image); "
            f"patient-grouped splits keep each of them on one side"
        )
    parts.summary["patients"] = len(counts)
    parts.summary["patients_with_several_classes"] = [str(m) for m in mixed]


def add_images(parts: ReportParts, ds: Dataset, *, per_class: int, seed: int) -> None:
    """Duplicate images, pixel intensities and sample images by class: what the image
    model will see, including what differs by source rather than by disease."""
    classes = list(ds.classes)
    duplicates = duplicate_images(ds.images, ds.labels, classes, splits=ds.splits, groups=ds.groups)
    parts.summary["duplicate_image_sets"] = len(duplicates)
    if len(duplicates):
        _add_duplicates(parts, ds, duplicates)
    plot_intensity(ds.images, ds.labels, classes, parts.file("intensity.png"), seed=seed)
    plot_sample_grid(ds.images, ds.labels, classes, parts.file("samples.png"), per_class=per_class, seed=seed)
    parts.body += [
        "## Pixel intensities by class",
        "",
        "Differences here come from acquisition (source, exposure, screenshots) as often as from disease.",
        "",
        parts.figure("intensity.png", "pixel intensity by class"),
        "",
        "## Sample images",
        "",
        parts.figure("samples.png", "sample images per class"),
        "",
    ]


def _add_duplicates(parts: ReportParts, ds: Dataset, duplicates: pd.DataFrame) -> None:
    """The duplicate-image section: the first 20 sets by file, and one warning."""
    conflict, crosses = int(duplicates["conflict"].sum()), int(duplicates["crosses"].sum())
    where = "splits" if ds.splits else "patients"
    files = ds.files if ds.files is not None else np.arange(len(ds)).astype(str)
    listing = []
    for _, r in duplicates.head(20).iterrows():
        line = f"- {', '.join(str(files[i]) for i in r['rows'])}: {', '.join(r['classes'])}"
        if r["crosses"]:
            line += f"; {where} {', '.join(r['splits'] or r['patients'])}"
        listing.append(line)
    parts.body += [
        "## Duplicate images",
        "",
        f"{len(duplicates)} sets of pixel-identical images at {ds.image_size} px "
        f"({conflict} with different labels, {crosses} spanning several {where}):",
        "",
    ]
    parts.body += listing + (["- ..."] if len(duplicates) > 20 else []) + [""]
    parts.warnings.append(
        f"{len(duplicates)} sets of pixel-identical images ({conflict} with different labels, "
        f"{crosses} spanning several {where})"
    )
