"""Compare run folders: ``fusion compare RUN [RUN ...]`` (also ``python -m fusion.compare``).

One table of every run's headline metrics with their 95 % intervals (the patient
bootstrap's, as ``metrics.json`` holds them), what each run was (modalities, strategy,
head, data, rows scored, seconds), and one figure of each metric with its interval per
run; written as ``comparison.md``, ``comparison.csv`` and ``comparison.png``.

Where a run scored the same rows as the reference (the first run, or ``--reference``),
the table adds the *paired* difference of each metric with its 95 % interval: one
patient bootstrap resamples the shared patients and scores both runs on every resample
(:func:`fusion.evaluation.intervals.paired_differences`), from the per-row predictions
the run folders keep (:mod:`fusion.evaluation.predictions`). Two intervals side by side
overlap even when one run is better on nearly every resample; the paired interval says
whether the difference is more than noise.

What is compared with what, and why not:

- rows are the same when the row keys and true labels of both predictions files are
  the same sets; when they share at least 90 % of both, the difference is of the shared
  rows (a note says so); below that, or without a predictions file (run folders written
  before fusion kept them, ``fusion evaluate`` output), no paired difference, with a note;
- runs whose classes differ from the reference's are shown (one table can summarise
  runs on several cohorts) with a ``classes`` column and a warning: their figures are
  not comparable, and they are never paired;
- an output of ``fusion evaluate --out FILE.json`` is a run too (its metrics have the
  same shape); its model's ``config.json`` gives the strategy and head when it can be read.

Nothing here prints but :func:`main`.

Example
-------
fusion compare runs/fused runs/image runs/tabular --metric macro_auroc,macro_f1 --out comparisons/ablation
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from fusion.cli import NORMAL, QUIET, add_verbosity_arguments, fail, verbosity, whole_number
from fusion.errors import ConfigError, ModelFolderError

__all__ = ["METRICS", "Comparison", "RunSummary", "compare_runs", "main", "read_run", "write_comparison"]

# The command's name of a metric -> (its key in metrics.json, its name in the table).
METRICS = {
    "macro_auroc": ("auroc_macro", "macro AUROC"),
    "macro_f1": ("macro_f1", "macro-F1"),
    "balanced_accuracy": ("balanced_accuracy", "balanced accuracy"),
    "accuracy": ("accuracy", "accuracy"),
}
SPLITS = ("test", "val")
FILES = ("comparison.md", "comparison.csv", "comparison.png")
# A paired difference over the rows two runs share needs most of each run's rows.
MIN_SHARED = 0.9
NOT_PAIRED = "no paired difference"


@dataclass(frozen=True)
class RunSummary:
    """What the table says of one run: read from its folder (or an evaluation's JSON).

    ``values`` and ``intervals`` are keyed by ``metrics.json``'s names
    (``auroc_macro``); an interval is ``(low, high)`` or None. ``predictions`` is the
    split's predictions file, or None with ``why_unpaired`` saying why there is none.
    """

    path: Path
    name: str
    split: str
    classes: tuple[str, ...]
    modalities: tuple[str, ...]
    strategy: str
    head: str
    data: str
    n: int
    seconds: float | None
    values: dict
    intervals: dict
    predictions: Path | None = None
    why_unpaired: str | None = None
    unit: str = "patient"  # what the intervals resample (the schema's group: lesions for ham10000)


@dataclass
class Comparison:
    """The runs, the reference's index, the paired differences against it (run index
    -> :func:`~fusion.evaluation.intervals.paired_differences`'s dict with ``rows``),
    the notes per run (index -> sentence) and the warnings about the whole."""

    runs: list[RunSummary]
    metrics: list[str]
    reference: int = 0
    differences: dict[int, dict] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ reading runs
def _read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``; a clear error naming the file when it is not one."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFolderError(f"{what}: {path.name} is missing ({path})", file=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFolderError(f"{what}: {path} cannot be read as JSON ({err})", file=str(path)) from None
    if not isinstance(value, dict):
        raise ModelFolderError(f"{what}: {path} must hold a JSON object", file=str(path))
    return value


def _run_config(folder: Path, metrics: dict) -> dict:
    """The run's settings: ``metrics.json``'s copy, else ``config.json``'s (empty when
    neither can be read: the table then shows less, it does not fail)."""
    if isinstance(metrics.get("config"), dict):
        return metrics["config"]
    try:
        saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return saved.get("config", {}) if isinstance(saved, dict) else {}


def _strategy_and_head(metrics: dict, cfg: dict) -> tuple[str, str]:
    """How the run joined its modalities (the backend fitted; ``auto`` says it chose)
    and the joint network's head (``-`` for the other strategies)."""
    backend = metrics.get("backend") or ("xgboost" if cfg.get("model") == "xgboost" else cfg.get("fusion", "?"))
    strategy = f"{backend} (auto)" if cfg.get("fusion") == "auto" and cfg.get("model") != "xgboost" else backend
    head = (cfg.get("head") or {}).get("kind", "?") if backend == "joint" else "-"
    return strategy, head


def _data(metrics: dict, cfg: dict) -> str:
    """The data, as the table names it: a synthetic cohort by its size and seed."""
    data = metrics.get("data") or "?"
    if str(data).startswith("synthetic"):
        size = (cfg.get("data") or {}).get("synthetic_n")
        seed = (cfg.get("train") or {}).get("seed")
        return f"synthetic ({size} rows, seed {seed})" if size is not None else str(data)
    return str(data)


def _unit(scored: dict) -> str:
    """What a split's intervals resampled, as its metrics record it (``patient`` when
    they do not)."""
    unit = (scored.get("intervals") or {}).get("unit")
    return unit if isinstance(unit, str) and unit else "patient"


def _figures(scored: dict, origin: Path, what: str) -> tuple[dict, dict]:
    """Each metric's value and interval from one split's metrics (``scored``)."""
    values, intervals = {}, {}
    ci = scored.get("intervals") or {}
    for key, _ in METRICS.values():
        if key not in scored:
            raise ModelFolderError(f"{what}: {origin} holds no {key!r}", file=str(origin), field=key)
        values[key] = scored[key]
        iv = ci.get(key)
        intervals[key] = (iv["low"], iv["high"]) if isinstance(iv, dict) and "low" in iv else None
    return values, intervals


def read_run(path: str | Path, split: str = "test") -> RunSummary:
    """One run of the table: a run folder written by ``fusion train``, or a JSON file
    written by ``fusion evaluate --out`` (``split`` does not apply to it: it scored its
    own rows).

    Raises
    ------
    ModelFolderError
        The folder does not exist, holds no ``metrics.json`` (an unfinished run), its
        metrics cannot be read, or it scored no ``split``; ``file`` names the file.
    """
    path = Path(path)
    if path.is_file():
        return _read_evaluation(path)
    what = f"run folder {str(path)!r}"
    if not path.is_dir():
        raise ModelFolderError(f"{what} does not exist", file=str(path), value=str(path))
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        interrupted = (path / "progress.json").is_file()
        hint = "an interrupted run: finish it with fusion train --resume" if interrupted else "not a finished run"
        raise ModelFolderError(f"{what} holds no metrics.json ({hint})", file=str(metrics_file))
    metrics = _read_json(metrics_file, what)
    scored = metrics.get(split)
    if not isinstance(scored, dict):
        other = [s for s in SPLITS if s != split and isinstance(metrics.get(s), dict)]
        hint = f"; it has a {other[0]} split (--split {other[0]})" if other else ""
        raise ModelFolderError(
            f"{what}: its metrics.json holds no {split} split{hint}", file=str(metrics_file), field=split
        )
    cfg = _run_config(path, metrics)
    values, intervals = _figures(scored, metrics_file, what)
    strategy, head = _strategy_and_head(metrics, cfg)
    predictions = path / f"predictions_{split}.csv"
    return RunSummary(
        path=path,
        name=path.name or str(path),
        split=split,
        classes=tuple(metrics.get("classes") or ()),
        modalities=tuple(metrics.get("modalities") or ()),
        strategy=strategy,
        head=head,
        data=_data(metrics, cfg),
        n=int(metrics.get(f"n_{split}") or 0),
        seconds=metrics.get("seconds"),
        values=values,
        intervals=intervals,
        unit=_unit(scored),
        predictions=predictions if predictions.is_file() else None,
        why_unpaired=None
        if predictions.is_file()
        else f"no {predictions.name} in {str(path)!r} (a run written before fusion kept its predictions)",
    )


def _read_evaluation(path: Path) -> RunSummary:
    """A ``fusion evaluate --out`` file: its metrics are at the top level."""
    what = f"evaluation {str(path)!r}"
    result = _read_json(path, what)
    for key in ("classes", "n", "model"):
        if key not in result:
            raise ModelFolderError(
                f"{what}: not a run folder nor a fusion evaluate output (no {key!r})", file=str(path), field=key
            )
    values, intervals = _figures(result, path, what)
    model = Path(str(result["model"]))
    cfg, backend = {}, None
    try:
        saved = json.loads((model / "config.json").read_text(encoding="utf-8"))
        cfg, backend = saved.get("config", {}), saved.get("backend")
    except (OSError, ValueError, AttributeError):
        pass
    strategy, head = _strategy_and_head({"backend": backend}, cfg) if cfg else ("?", "?")
    return RunSummary(
        path=path,
        name=path.stem,
        split=str(result.get("split", "?")),
        classes=tuple(result["classes"]),
        modalities=tuple(result.get("modalities") or ()),
        strategy=strategy,
        head=head,
        data=str(result.get("data", "?")),
        n=int(result["n"]),
        seconds=None,
        values=values,
        intervals=intervals,
        unit=_unit(result),
        why_unpaired="an evaluation's output holds no per-row predictions",
    )


# ------------------------------------------------------------------ pairing
def _shared_rows(run, ref) -> tuple[list[int], list[int], str | None]:
    """Row positions of the rows both predictions files hold (same key, same true
    label), in one order; with a note when they are fewer than all of either's, and no
    rows at all when they are fewer than :data:`MIN_SHARED` of either's."""
    if len(set(run.keys)) != len(run.keys) or len(set(ref.keys)) != len(ref.keys):
        return [], [], f"{NOT_PAIRED}: a predictions file names a row twice"
    mine = {(k, int(y)): i for i, (k, y) in enumerate(zip(run.keys, run.labels, strict=True))}
    theirs = {(k, int(y)): i for i, (k, y) in enumerate(zip(ref.keys, ref.labels, strict=True))}
    shared = sorted(mine.keys() & theirs.keys())
    sizes = f"{len(shared)} shared of {len(run)} and {len(ref)}"
    if not shared or len(shared) < MIN_SHARED * max(len(run), len(ref)):
        return [], [], f"{NOT_PAIRED}: it scored other rows than the reference ({sizes}; other data or split)"
    note = None if len(shared) == len(run) == len(ref) else f"paired on the rows both scored ({sizes})"
    return [mine[s] for s in shared], [theirs[s] for s in shared], note


def paired(run: RunSummary, ref: RunSummary, *, seed: int = 0, n_boot: int = 1000) -> tuple[dict | None, str | None]:
    """The paired differences ``run`` minus ``ref`` on the rows both scored, with a
    note (or None and the reason there are none)."""
    from fusion.evaluation.intervals import paired_differences
    from fusion.evaluation.predictions import read_predictions

    if run.classes != ref.classes:
        return None, f"{NOT_PAIRED}: other classes than the reference"
    for r, whose in ((ref, "the reference: "), (run, "")):
        if r.predictions is None:
            return None, f"{NOT_PAIRED}: {whose}{r.why_unpaired}"
    mine, theirs = read_predictions(run.predictions), read_predictions(ref.predictions)
    if mine.classes != run.classes or theirs.classes != ref.classes:
        return None, f"{NOT_PAIRED}: a predictions file's classes differ from its run's metrics.json"
    ia, ib, note = _shared_rows(mine, theirs)
    if not ia:
        return None, note
    groups = None if theirs.groups is None else theirs.groups[ib]
    diff = paired_differences(
        theirs.labels[ib],
        mine.proba[ia],
        theirs.proba[ib],
        run.classes,
        groups,
        pred=mine.predicted[ia],
        baseline_pred=theirs.predicted[ib],
        seed=seed,
        n_boot=n_boot,
    )
    diff["rows"] = len(ia)
    return diff, note


def compare_runs(
    paths, *, split: str = "test", metrics=tuple(METRICS), reference=None, seed: int = 0, n_boot: int = 1000
) -> Comparison:
    """Read the runs at ``paths`` and pair each with the reference (``reference``: one
    of ``paths`` or another run, shown first; default the first of ``paths``).

    Raises
    ------
    ConfigError
        No run, an unknown metric or split.
    ModelFolderError
        A run that cannot be read (see :func:`read_run`).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("compare needs at least one run folder", field="runs")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ConfigError(
            f"unknown metric {unknown[0] if unknown else ''!r}; choose from {', '.join(METRICS)}",
            field="metric",
            value=unknown[0] if unknown else "",
            accepted=", ".join(METRICS),
        )
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}", field="split", value=split)
    at = 0
    if reference is not None:
        found = [i for i, p in enumerate(paths) if _same_path(p, Path(reference))]
        at = found[0] if found else 0
        if not found:
            paths.insert(0, Path(reference))
    runs = [read_run(p, split) for p in paths]
    _unique_names(runs)
    cmp = Comparison(runs=runs, metrics=list(metrics), reference=at)
    ref = runs[at]
    for i, run in enumerate(runs):
        if i == at:
            continue
        diff, note = paired(run, ref, seed=seed, n_boot=n_boot)
        if diff is not None:
            cmp.differences[i] = diff
        if note:
            cmp.notes[i] = note
    other = [r.name for r in runs if r.classes != ref.classes]
    if other:
        cmp.warnings.append(
            f"{', '.join(other)}: other classes than the reference {ref.name} ({' / '.join(ref.classes)}): "
            "their metrics are not comparable with its"
        )
    return cmp


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


def _unique_names(runs: list[RunSummary]) -> None:
    """Runs named alike (``a/run``, ``b/run``) are named by their whole path."""
    names = [r.name for r in runs]
    for i, r in enumerate(runs):
        if names.count(r.name) > 1:
            runs[i] = replace(r, name=str(r.path))


# ------------------------------------------------------------------ the table
def _number(v, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:+.3f}" if sign else f"{v:.3f}"


def _with_interval(value, interval, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    if interval is None or interval[0] is None:
        return _number(value, sign)
    return f"{_number(value, sign)} [{_number(interval[0], sign)}, {_number(interval[1], sign)}]"


def _difference_cell(cmp: Comparison, i: int, key: str) -> str:
    if i == cmp.reference:
        return "reference"
    d = cmp.differences.get(i)
    if d is None:
        return "-"
    return _with_interval(d[key]["point"], (d[key]["low"], d[key]["high"]), sign=True)


def table(cmp: Comparison) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the table, as text: one row per run; each metric
    with its interval, then (when any run is paired) its difference from the reference."""
    mixed = len({r.classes for r in cmp.runs}) > 1
    paired_any = bool(cmp.differences)
    header = ["run", *(["classes"] if mixed else []), "modalities", "strategy", "head", "data", "split", "n", "seconds"]
    for m in cmp.metrics:
        label = METRICS[m][1]
        header += [label, f"Δ {label}"] if paired_any else [label]
    rows = []
    for i, r in enumerate(cmp.runs):
        seconds = "-" if r.seconds is None else f"{r.seconds:.1f}"
        row = [r.name, *([" / ".join(r.classes)] if mixed else []), ",".join(r.modalities) or "?", r.strategy]
        row += [r.head, r.data, r.split, str(r.n), seconds]
        for m in cmp.metrics:
            key = METRICS[m][0]
            row.append(_with_interval(r.values[key], r.intervals[key]))
            if paired_any:
                row.append(_difference_cell(cmp, i, key))
        rows.append(row)
    return header, rows


def markdown(cmp: Comparison, *, warnings: bool = True) -> str:
    """The table as Markdown (columns padded, so it reads as well in a terminal), with
    a line on what the intervals are, the notes and (with ``warnings``) the warnings."""
    header, rows = table(cmp)
    cells = [header, *rows]
    width = [max(len(c[j]) for c in cells) for j in range(len(header))]

    def line(values) -> str:
        return "| " + " | ".join(v.replace("|", "\\|").ljust(w) for v, w in zip(values, width, strict=True)) + " |"

    ref = cmp.runs[cmp.reference]
    lines = [line(header), "|" + "|".join("-" * (w + 2) for w in width) + "|", *(line(r) for r in rows), ""]
    lines.append(f"95 % intervals: bootstrap over {ref.unit}s (as each run's metrics.json holds them).")
    if cmp.differences:
        lines.append(
            f"Δ: the run minus the reference ({ref.name}) on the rows both scored, with a 95 % interval from one "
            f"paired bootstrap over {ref.unit}s (both runs scored on every resample)."
        )
    for i, note in cmp.notes.items():
        lines.append(f"- {cmp.runs[i].name}: {note}")
    lines += [f"warning: {w}" for w in cmp.warnings] if warnings else []
    return "\n".join(lines) + "\n"


def csv_text(cmp: Comparison) -> str:
    """The table as CSV, numbers in full: one row per run; each metric, its interval and
    (empty where not paired) its difference from the reference with that interval."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    head = ["run", "path", "split", "classes", "modalities", "strategy", "head", "data", "n", "seconds"]
    for m in cmp.metrics:
        head += [m, f"{m}_low", f"{m}_high", f"diff_{m}", f"diff_{m}_low", f"diff_{m}_high"]
    writer.writerow([*head, "reference", "paired_rows", "note"])
    for i, r in enumerate(cmp.runs):
        row = [r.name, str(r.path), r.split, " / ".join(r.classes), ",".join(r.modalities), r.strategy, r.head]
        row += [r.data, r.n, "" if r.seconds is None else r.seconds]
        d = cmp.differences.get(i)
        for m in cmp.metrics:
            key = METRICS[m][0]
            low, high = r.intervals[key] or (None, None)
            diff = d[key] if d else {}
            row += [r.values[key], low, high, diff.get("point"), diff.get("low"), diff.get("high")]
        row += [cmp.runs[cmp.reference].name, d["rows"] if d else "", cmp.notes.get(i, "")]
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


# ------------------------------------------------------------------ the figure and files
def figure(cmp: Comparison):
    """Each metric with its 95 % interval per run, one panel per metric, the runs in
    the table's order from the top; a dotted line at the reference's value. A
    ``matplotlib.figure.Figure`` (no pyplot state, as :mod:`fusion.plots` draws)."""
    from matplotlib.figure import Figure

    n = len(cmp.runs)
    fig = Figure(figsize=(1.6 + 3.0 * len(cmp.metrics), 1.2 + 0.45 * n))
    axes = fig.subplots(1, len(cmp.metrics), sharey=True, squeeze=False)[0]
    ys = list(range(n - 1, -1, -1))
    for ax, m in zip(axes, cmp.metrics, strict=True):
        key, label = METRICS[m]
        for i, (r, y) in enumerate(zip(cmp.runs, ys, strict=True)):
            value, interval = r.values[key], r.intervals[key]
            if value is None:
                continue
            err = None if interval is None else [[value - interval[0]], [interval[1] - value]]
            colour = "C1" if i == cmp.reference else "C0"
            ax.errorbar([value], [y], xerr=err, fmt="o", color=colour, capsize=3)
        ref = cmp.runs[cmp.reference].values[key]
        if ref is not None:
            ax.axvline(ref, color="0.6", linestyle=":")
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys, [r.name for r in cmp.runs])
    axes[0].set_ylim(-0.6, n - 0.4)
    fig.suptitle(f"{cmp.runs[0].split} split, 95 % intervals (reference: {cmp.runs[cmp.reference].name})", fontsize=10)
    fig.tight_layout()
    return fig


def check_out(out: str | Path, runs) -> Path:
    """The folder the comparison is written to: never a run folder or inside one (a
    run's folder holds what its run wrote), and never replacing a file already there.

    Raises
    ------
    ConfigError
        ``field`` "out": a run folder or inside one, not a folder, or holding a file
        the comparison would write.
    """
    out = Path(out)
    for run in runs:
        run = Path(run)
        if run.is_dir() and (_same_path(out, run) or run.resolve() in out.resolve().parents):
            raise ConfigError(
                f"output folder {str(out)!r} is inside the run folder {str(run)!r}; choose a folder outside the runs",
                field="out",
                value=str(out),
            )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output folder {str(out)!r} exists and is not a folder", field="out", value=str(out))
    there = [name for name in FILES if (out / name).exists() or (out / name).is_symlink()]
    if there:
        raise ConfigError(
            f"output folder {str(out)!r} already holds {there[0]}; outputs never replace a file: choose a new folder",
            field="out",
            value=str(out),
        )
    return out


def write_comparison(cmp: Comparison, out: str | Path) -> list[Path]:
    """Write ``comparison.md``, ``comparison.csv`` and ``comparison.png`` into ``out``
    (made if new; checked with :func:`check_out` first), each whole; their paths."""
    from fusion.persistence import atomic_write, atomic_write_text

    out = check_out(out, [r.path for r in cmp.runs])
    out.mkdir(parents=True, exist_ok=True)
    md, table_csv, png = (out / name for name in FILES)
    ref = cmp.runs[cmp.reference]
    title = f"# {len(cmp.runs)} runs compared ({ref.split} split; reference {ref.name})\n\n"
    atomic_write_text(md, title + markdown(cmp) + f"\n![metrics with 95 % intervals]({png.name})\n")
    atomic_write_text(table_csv, csv_text(cmp))
    fig = figure(cmp)
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    return [md, table_csv, png]


# ------------------------------------------------------------------ the command
def _metric_list(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(METRICS)}; got {text!r}")
    return names


def build_parser(prog: str = "python -m fusion.compare") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Compare run folders: one table (metrics with 95 %% intervals, paired differences where two runs "
        "scored the same rows) and one figure.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or fusion evaluate --out JSON files)")
    p.add_argument(
        "--metric",
        type=_metric_list,
        action="append",
        metavar="LIST",
        help=f"metrics to show, comma-separated or repeated: {', '.join(METRICS)} (default: all)",
    )
    p.add_argument("--split", choices=SPLITS, default="test", help="the split compared (default: %(default)s)")
    p.add_argument("--reference", metavar="RUN", help="the run the others are compared with (default: the first)")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="folder for comparison.md, .csv and .png; new, or without those files (default: comparisons/<timestamp>)",
    )
    p.add_argument("--seed", type=whole_number, default=0, help="seed of the paired bootstrap (default: %(default)s)")
    add_verbosity_arguments(p, quiet="print where the files were written, warnings and errors only, not the table")
    return p


def main(argv: list[str] | None = None, *, prog: str = "python -m fusion.compare") -> int:
    """``fusion compare RUN [RUN ...]``: print the table, write the files.

    Returns
    -------
    int
        0; 2 when a run cannot be read or the output folder is refused (the reason on
        stderr); argparse exits with 2 itself on a bad flag.
    """
    p = build_parser(prog)
    args = p.parse_args(argv)
    metrics = list(dict.fromkeys(m for group in args.metric for m in group)) if args.metric else list(METRICS)
    out = Path(args.out) if args.out else Path("comparisons") / datetime.now().strftime("%Y%m%d-%H%M%S")
    level = verbosity(args)
    try:
        check_out(out, args.runs)
        cmp = compare_runs(args.runs, split=args.split, metrics=metrics, reference=args.reference, seed=args.seed)
        if level > QUIET:
            print(markdown(cmp, warnings=False), end="")
        for warning in cmp.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        written = write_comparison(cmp, out)
    except (ValueError, FileNotFoundError) as err:
        return fail(err, p, verbose=level > NORMAL)
    except OSError as err:
        print(f"error: could not write the comparison to {str(out)!r}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(f"written to {written[0].parent}: {', '.join(p.name for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
