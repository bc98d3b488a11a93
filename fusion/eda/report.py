"""The EDA run: load a dataset, prepare the output folder, run the sections and write
``report.md`` and ``summary.json``.

The output folder is checked before anything is written (see
:mod:`fusion.eda.output`): it is never an input, and a rerun removes only the files an
earlier analysis recorded writing there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from fusion.data import Dataset, load_dataset, read_table
from fusion.eda.output import OutputFolder, check_not_an_input
from fusion.eda.sections import (
    ReportParts,
    add_class_balance,
    add_distributions,
    add_images,
    add_leaks,
    add_missingness,
    add_patients,
    add_skipped,
)
from fusion.schema import Schema

__all__ = ["run_eda"]

logger = logging.getLogger(__name__)


def _inputs(data: Path, schema: Schema | str | Path | None, ds: Dataset | None = None) -> list[Path]:
    """Every file and folder the analysis reads (the image folder once the dataset's
    schema is known): the output folder may be none of them, contain none and lie
    inside none."""
    inputs = [data]
    if isinstance(schema, (str, Path)) and Path(schema).is_file():
        inputs.append(Path(schema))
    if data.suffix != ".npz":
        csv = data if data.is_file() else data / "metadata.csv"
        inputs += [csv, csv.parent]
        if ds is not None and ds.schema is not None and ds.schema.image_folder:
            inputs.append(csv.parent / ds.schema.image_folder)
    return inputs


def _load(
    data: Path, schema: Schema | str | Path | None, image_size: int | None
) -> tuple[Dataset, pd.DataFrame | None]:
    """The dataset and, for a folder or CSV, its raw table, whose columns the schema
    leaves out of the dataset but the leak section still judges."""
    if not data.exists():
        raise FileNotFoundError(f"dataset {str(data)!r} does not exist")
    if data.suffix == ".npz":
        # image_size None keeps the file's own resolution.
        return load_dataset(data, schema, image_size=image_size), None
    ds = load_dataset(data, schema, image_size=image_size or 64)
    csv = data if data.is_file() else data / "metadata.csv"
    return ds, read_table(csv)


def _header(data: Path, ds: Dataset) -> list[str]:
    """The report's title and what was analysed, before the warnings."""
    schema = ds.schema
    md = [f"# Exploratory analysis: {ds.name}", ""]
    md.append(f"- data: `{data}`")
    md.append(f"- schema: `{schema.name}`" if schema else "- schema: none (integer labels)")
    md.append(f"- rows loaded: {len(ds)}; skipped: {len(ds.skipped)}; classes: {', '.join(ds.classes)}")
    if ds.images is not None:
        md.append(f"- images decoded at {ds.image_size} x {ds.image_size} px (grayscale)")
    md.append("")
    return md


def _summary_head(data: Path, ds: Dataset) -> dict:
    """The first entries of ``summary.json``: what was analysed, for scripts that read
    several summaries."""
    return {
        "data": str(data),
        "schema": ds.schema.name if ds.schema else None,
        "n_rows": len(ds),
        "n_skipped": len(ds.skipped),
        "classes": list(ds.classes),
    }


def _write(parts: ReportParts, header: list[str]) -> Path:
    """Write ``report.md`` (header, warnings first, then the sections) and
    ``summary.json``; return the report's path."""
    md = [*header, "## Warnings", ""]
    md += [f"- {w}" for w in parts.warnings] if parts.warnings else ["None."]
    md += ["", *parts.body]
    report = parts.file("report.md")
    report.write_text("\n".join(md), encoding="utf-8")
    summary = {**parts.summary, "warnings": parts.warnings, "figures": parts.figures}
    parts.file("summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return report


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
        Output folder: new, empty or an earlier analysis's output (the files it
        recorded writing are replaced; nothing else there is touched). It may not be,
        contain or lie inside an input (the dataset folder, CSV, image folder, schema).
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
    OutputWriteError
        The output folder could not be written (e.g. a full disk); the message names
        it and what to do.
    """
    data = Path(data)
    check_not_an_input(out, _inputs(data, schema))  # before the (long) loading
    ds, raw = _load(data, schema, image_size)
    logger.info("loaded %d rows (%d skipped) from %s", len(ds), len(ds.skipped), data)
    folder = OutputFolder(out, _inputs(data, schema, ds))
    with folder.writing():
        report = _sections(ReportParts(folder, summary=_summary_head(data, ds)), data, ds, raw, per_class, seed)
    return report


def _sections(parts: ReportParts, data: Path, ds: Dataset, raw: pd.DataFrame | None, per_class: int, seed: int) -> Path:
    """Run every section that applies and write the report."""
    add_class_balance(parts, ds)
    add_skipped(parts, ds)
    # The tabular sections need a schema to say which columns are features.
    if ds.records is not None and ds.schema is not None and len(ds.records.columns) > 0:
        add_missingness(parts, ds)
        add_distributions(parts, ds, seed=seed)
        add_leaks(parts, ds, raw)
    if ds.groups is not None and len(ds):
        add_patients(parts, ds)
    if ds.images is not None and len(ds):
        add_images(parts, ds, per_class=per_class, seed=seed)
    report = _write(parts, _header(data, ds))
    logger.info("wrote %s with %d warnings and %d figures", report, len(parts.warnings), len(parts.figures))
    return report
