"""Train a model: ``python -m fusion.train [options]``.

Without ``--data`` it trains on the embedded synthetic cohort. The run folder
(``--out``, default ``runs/<timestamp>``) receives the saved model, ``metrics.json``
(validation and test figures, every skipped row) and plots.

Examples
--------
python -m fusion.train --modalities image,tabular
python -m fusion.train --modalities tabular --model xgboost
python -m fusion.train --data ../shared/data/pneumoniamnist/pneumoniamnist_trainval.npz --modalities image
torchrun --standalone --nproc_per_node=2 -m fusion.train --modalities image,tabular

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same run trains with DistributedDataParallel
(see :mod:`fusion.training.distributed`); only rank 0 writes the run folder.

A run stopped on the way says in one line what its folder holds and the command that
continues it: Ctrl-C exits with 130, a full disk with 2 (``--resume`` continues from the
last saved epoch, or writes the model of a run whose training was done). Temporary
files that a killed write left behind are removed on ``--resume`` and when the run
completes.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
import time
import warnings
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np

from fusion import __version__
from fusion.allocator import tune_allocator
from fusion.classifier import FusionClassifier
from fusion.cli import (
    add_cache_arguments,
    add_config_arguments,
    cache_options,
    config_from_args,
    fail,
    log_to_terminal,
)
from fusion.config import Config
from fusion.data.dataset import Dataset
from fusion.data.loaders import load_dataset
from fusion.evaluation import classification_metrics, format_metrics, metric_intervals
from fusion.evaluation.calibration import calibration_report, operating_point_report
from fusion.evaluation.card import model_card
from fusion.evaluation.subgroups import subgroup_report
from fusion.persistence import is_disk_full, remove_temporary, write_files, write_json
from fusion.plots import plot_confusion, plot_history, plot_reliability, plot_roc
from fusion.schema import short_repr
from fusion.training import distributed
from fusion.training.checkpoint import PROGRESS, mark_complete, read_progress

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command's options: one for each setting that declares a flag
    (:mod:`fusion.config`), then the run's own: where it is written, whether it
    continues, how images are cached and how much it prints. Those are not settings:
    a model folder does not record where it was written or cached, and the library
    never prints."""
    p = argparse.ArgumentParser(
        prog="python -m fusion.train", description="Train a fusion model (image + clinical record)."
    )
    add_config_arguments(p)
    p.add_argument("--out", metavar="DIR", help="run folder; must be new or empty (default: runs/<timestamp>)")
    p.add_argument(
        "--resume", action="store_true", help="continue the interrupted run in --out from its last completed epoch"
    )
    add_cache_arguments(p)
    p.add_argument("--quiet", action="store_true", help="print only the final summary")
    return p


def _prepare_out(out: str | None, resume: bool = False) -> Path:
    if resume:
        if not out:
            raise ValueError("--resume needs the --out folder of the run to continue")
        path = Path(out)
        progress = read_progress(path)
        if progress is None:
            raise ValueError(
                f"--resume: {str(path)!r} holds no interrupted run (no {PROGRESS}); start it without --resume"
            )
        if progress.get("complete"):
            raise ValueError(
                f"--resume: the run in {str(path)!r} is already complete; its model and metrics.json are there"
            )
        _remove_temporary(path)
        return path
    path = Path(out) if out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    if os.path.lexists(path) and not path.exists():
        raise ValueError(
            f"--out {str(path)!r} is a symlink to {os.readlink(path)!r}, which does not exist; "
            "choose a new folder (runs are never written through a dangling link)"
        )
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        hint = " or add --resume to continue an interrupted run" if read_progress(path) else ""
        raise ValueError(
            f"--out {str(path)!r} exists and is not empty; choose a new folder{hint} (runs are never overwritten)"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _skipped_row(entry: dict) -> str:
    """One skipped row for a warning: its row, file and reason, each cut (a file name or
    a reason can be as long as the table makes it)."""
    parts = [f"row {entry['row']}"] if "row" in entry else []
    if entry.get("file") is not None:
        parts.append(f"file {short_repr(str(entry['file']))}")
    reason = str(entry.get("reason", ""))
    return f"{', '.join(parts)}: {reason if len(reason) <= 200 else reason[:197] + '...'}"


MIN_ROWS = 10


def check_enough_data(ds: Dataset) -> None:
    """Refuse to train when too little valid data is left after skipping bad rows.

    Raises
    ------
    ValueError
        Fewer than ``MIN_ROWS`` valid rows, or fewer than two classes; the message
        summarises why rows were skipped.
    """
    present = len(set(ds.labels.tolist()))
    if len(ds) >= MIN_ROWS and present >= 2:
        return
    # "image /data/x.png: no such file" -> "image: no such file": the cause, which rows
    # share, not the file name, which no two rows share.
    reasons = Counter(re.sub(r"^image .+?: ", "image: ", s["reason"]) for s in ds.skipped)
    common = "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3))
    raise ValueError(
        f"{ds.name}: too little valid data to train: {len(ds)} valid row(s) in {present} class(es) "
        f"(need at least {MIN_ROWS} rows in 2 classes); {len(ds.skipped)} row(s) skipped"
        + (f", most often: {common}" if common else "")
    )


def score(clf: FusionClassifier, ds: Dataset, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics of ``ds`` (calibrated probabilities), each headline figure with its 95 %
    patient-bootstrap interval; calibration before/after and the operating points'
    sensitivity and specificity. Returns (metrics, calibrated, raw probabilities).

    Under torch.distributed every process predicts a share of ``ds`` and all get the
    whole (so every process must call it): the figures are those of the whole split."""
    raw = clf.predict_dataset(ds, calibrated=False, gather=True)
    proba = clf.calibration_.apply(raw)
    metrics = classification_metrics(ds.labels, proba, clf.classes_)
    metrics["intervals"] = metric_intervals(ds.labels, proba, clf.classes_, ds.groups, seed=seed)
    metrics["calibration"] = calibration_report(ds.labels, raw, proba)
    metrics["operating_points"] = operating_point_report(ds.labels, proba, clf.classes_, clf.calibration_.thresholds)
    return metrics, proba, raw


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run`; the message says what is kept and how to continue."""


class DiskFull(OSError):
    """The disk (or quota) filled while :func:`run` wrote its folder; the message names
    the folder and how to continue."""

    def __init__(self, message: str, folder: Path):
        super().__init__(errno.ENOSPC, message, str(folder))

    def __str__(self) -> str:
        return self.strerror


def run(
    cfg: Config,
    out: str | Path | None = None,
    *,
    verbose: bool = True,
    resume: bool = False,
    cache_dir: str | Path | bool | None = None,
    cache_workers: int | None = None,
    memory_map: bool | None = None,
) -> tuple[FusionClassifier, dict]:
    """Load data, split by patient, train, score validation and test, save everything.

    The training state is checkpointed in the run folder after every epoch; with
    ``resume`` an interrupted run continues from its last completed epoch (temporary
    files that a killed write left behind are removed first).

    Under torch.distributed (``torchrun``) every process calls it: all train and
    predict, only rank 0 writes files and prints.

    ``cache_dir``, ``cache_workers``, ``memory_map``: how a folder's decoded images
    are cached and read (see :func:`fusion.data.loaders.load_dataset`).

    Returns the fitted classifier and the metrics written to ``metrics.json``.

    Raises
    ------
    RunInterrupted
        Ctrl-C (a ``KeyboardInterrupt``): temporary files are removed and the message
        says how to continue (``--resume``, or start again).
    DiskFull
        The disk filled while the run folder was written: one sentence naming the
        folder and how to continue.
    """
    start = time.perf_counter()
    cfg = cfg.resolved()  # the derived defaults (image size, starting weights) this run trains with
    main = distributed.is_main()
    verbose = verbose and main
    folder = distributed.on_main(lambda: _prepare_out(str(out) if out else None, resume))
    trained = False
    try:
        cache = {"cache_dir": cache_dir, "cache_workers": cache_workers, "memory_map": memory_map}
        ds, parts, clf = _train(cfg, folder, verbose=verbose, resume=resume, **cache)
        trained = True
        return _finish(cfg, folder, ds, parts, clf, start=start, verbose=verbose)
    except KeyboardInterrupt:
        if main:
            remove_temporary(folder)
        raise RunInterrupted(_stopped("interrupted", folder, out is not None, trained)) from None
    except Exception as err:
        if not (main and is_disk_full(err)):
            raise
        remove_temporary(folder)
        written = _written(err, folder)
        message = _stopped(f"no space left on device writing {written}", folder, out is not None, trained)
        raise DiskFull(message, written) from None


def _written(err: BaseException | None, folder: Path) -> Path:
    """What a full disk stopped writing: the run folder, or a file outside it that the
    error names (an image cache elsewhere, say)."""
    while err is not None:
        name = getattr(err, "filename", None) if isinstance(err, OSError) else None
        if name:
            path = Path(name).resolve()
            return folder if folder.resolve() in (path, *path.parents) else path
        err = err.__cause__ or err.__context__
    return folder


def _stopped(cause: str, folder: Path, out_given: bool, trained: bool) -> str:
    """The one sentence for a run stopped by ``cause`` ("interrupted", or a full disk):
    what the run folder holds and the command that continues it."""
    try:
        progress = read_progress(folder)
    except (OSError, ValueError):
        progress = None
    free = "" if cause == "interrupted" else "free space and "
    if progress is not None and progress.get("complete"):
        return f"{cause}; the run in {folder} is complete (its model and metrics.json are saved)"
    if progress is None:
        if folder.is_dir() and any(folder.iterdir()):
            return f"{cause}; nothing in {folder} can be resumed: {free}rerun with a new --out folder"
        return f"{cause} before any epoch was saved; {free}rerun the same command to start again"
    resume = "rerun the same command with --resume" + ("" if out_given else f" --out {folder}")
    if trained:
        done = "its training is done: the model and metrics.json are written then"
        return f"{cause}; {free}{resume} to finish the run ({done})"
    return f"{cause}; {free}{resume} to continue from epoch {progress['epoch'] + 1}"


def _train(
    cfg: Config, folder: Path, *, verbose: bool, resume: bool, **cache
) -> tuple[Dataset, dict, FusionClassifier]:
    """Load and split the data, and fit (checkpointing into ``folder``)."""
    main = distributed.is_main()
    # Rank 0 first: it builds the image cache the other processes then read.
    ds = distributed.main_first(
        lambda: load_dataset(
            cfg.data.path,
            cfg.data.schema,
            image_size=cfg.image.image_size,
            seed=cfg.train.seed,
            synthetic_n=cfg.data.synthetic_n,
            modalities=cfg.modalities,
            **cache,
        )
    )
    check_enough_data(ds)
    if ds.skipped and main:
        warnings.warn(
            f"{len(ds.skipped)} row(s) of {ds.name} skipped; see 'skipped' in {folder / 'metrics.json'}; "
            f"first: {_skipped_row(ds.skipped[0])}",
            stacklevel=3,
        )
    parts = ds.split(seed=cfg.train.seed, val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction)
    train = parts.get("train")
    if train is None or len(train) == 0:
        raise ValueError(f"{ds.name}: no training rows (splits: { {k: len(v) for k, v in parts.items()} })")
    if verbose:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in parts.items())
        print(
            f"data: {ds.name} ({len(ds)} rows; {sizes}; {len(ds.skipped)} skipped); classes {list(ds.classes)}",
            flush=True,
        )
        print(
            f"model: {cfg.model}, modalities {','.join(cfg.modalities)}"
            + (f", backbone {cfg.image.backbone} at {cfg.image.image_size} px" if "image" in cfg.modalities else ""),
            flush=True,
        )
    clf = FusionClassifier(cfg).fit(train, parts.get("val"), verbose=verbose, checkpoint_dir=folder, resume=resume)
    return ds, parts, clf


def _describe(cfg: Config, ds: Dataset, parts: dict, clf: FusionClassifier) -> dict:
    """The head of ``metrics.json``: what was trained, on what, and how."""
    return {
        "task": f"{ds.name}: {' / '.join(ds.classes)}",
        "classes": list(ds.classes),
        "modalities": list(cfg.modalities),
        "model": cfg.model,
        "fusion": cfg.fusion,
        "backend": clf.backend_.name,
        "auto": clf.history_.get("auto"),
        "backbone": cfg.image.backbone if "image" in cfg.modalities else None,
        "data": cfg.data.path or "synthetic (embedded)",
        **{f"n_{name}": len(parts[name]) if parts.get(name) is not None else 0 for name in ("train", "val", "test")},
        "epochs": clf.history_.get("epochs"),
        "epochs_run": clf.history_.get("epochs_run", 0),
        "resumed_from_epoch": clf.history_.get("resumed_from_epoch"),
        "best_epoch": clf.history_.get("best_epoch"),
        "device": clf.history_.get("device", "cpu"),
        "precision": clf.history_.get("precision"),
        "world_size": distributed.world_size(),
        "distributed_backend": distributed.backend_name(),
        "calibration": {k: v for k, v in clf.calibration_.to_dict().items() if k != "report"},
    }


def _finish(
    cfg: Config, folder: Path, ds: Dataset, parts: dict, clf: FusionClassifier, *, start: float, verbose: bool
) -> tuple[FusionClassifier, dict]:
    """Score validation and test, write the plots, the model, metrics.json and the
    card, and mark the run complete."""
    main = distributed.is_main()
    metrics = _describe(cfg, ds, parts, clf)
    plots = folder / "plots"
    if main:
        plots.mkdir(exist_ok=True)
    for name in ("val", "test"):
        part = parts.get(name)
        if part is None or len(part) == 0:
            metrics[name] = None
            continue
        metrics[name], proba, raw = score(clf, part, cfg.train.seed)
        if not main:
            continue
        plot_reliability(part.labels, raw, proba, plots / f"reliability_{name}.png", title=f"Reliability ({name})")
        plot_confusion(
            metrics[name]["confusion_matrix"],
            ds.classes,
            plots / f"confusion_{name}.png",
            title=f"Confusion matrix ({name})",
        )
        plot_roc(part.labels, proba, ds.classes, plots / f"roc_{name}.png", title=f"ROC one vs rest ({name})")
        if name == "test" and ds.schema is not None and part.records is not None:
            by = subgroup_features(ds.schema)
            if by:
                metrics[name]["subgroups"] = subgroup_report(
                    part.records, part.labels, proba, clf.classes_, part.groups, by, ds.schema, seed=cfg.train.seed
                )
    if main:
        if clf.history_.get("history"):
            plot_history(clf.history_["history"], plots / "training_curves.png")
        # The run folder already holds this run's checkpoint, progress and plots, so
        # the model's files go in beside them (manifest last) rather than through
        # save(), which writes a folder whole and refuses one that is not empty.
        write_files(folder, clf.model_files(), __version__)
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    metrics["history"] = clf.history_.get("history", [])
    metrics["skipped"] = ds.skipped
    metrics["notes"] = ds.notes
    metrics["config"] = cfg.to_dict()
    metrics["fusion_version"] = __version__
    if not main:
        return clf, metrics
    write_json(folder / "metrics.json", metrics)
    write_model_card(folder, metrics, ds.schema, cfg)
    mark_complete(folder)
    _remove_temporary(folder)
    if verbose:
        for name in ("val", "test"):
            if metrics[name]:
                print(format_metrics(metrics[name], title=f"-- {name} ({metrics['n_' + name]} rows)"))
    scored = "test" if metrics["test"] else "val" if metrics["val"] else None
    summary = f"{scored} macro-F1 {metrics[scored]['macro_f1']:.3f}" if scored else "no validation or test split"
    print(f"done in {metrics['seconds']:.1f}s: {summary}; run saved to {folder}", flush=True)
    return clf, metrics


def _remove_temporary(folder: Path) -> None:
    """Temporary files that a killed write left in the run folder (a write that fails
    removes its own): removed on resume and when the run completes."""
    removed = remove_temporary(folder)
    if removed:
        logger.info("removed %d temporary file(s) that an interrupted write left: %s", len(removed), removed[0].name)


def subgroup_features(schema) -> list[str]:
    """The record features a run reports subgroups of: every categorical or binary
    feature, and every numeric one whose schema declares bands."""
    return [f.name for f in schema.features if f.type != "numeric" or f.bands]


def write_model_card(folder: Path, metrics: dict, schema, cfg: Config) -> None:
    """``MODEL_CARD.md`` in the run folder, from the run's own metadata."""
    import torch

    from fusion.nets.registry import backbone_spec

    pretraining = None
    if "image" in cfg.modalities and cfg.image.pretrained in backbone_spec(cfg.image.backbone).shipped:
        from fusion.nets.backbones import shipped_weights_info

        pretraining = shipped_weights_info(backbone_spec(cfg.image.backbone).shipped[cfg.image.pretrained].file)
    card = model_card(
        metrics, schema, pretraining=pretraining, versions={"fusion": __version__, "torch": torch.__version__}
    )
    (folder / "MODEL_CARD.md").write_text(card, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_allocator()
    joined, main = False, True
    try:
        joined = distributed.init_from_env(args.device)
        main = distributed.is_main()
        with log_to_terminal(not args.quiet and main):
            cfg = config_from_args(args)
            run(cfg, args.out, verbose=not args.quiet, resume=args.resume, **cache_options(args))
    except DiskFull as err:
        print(f"error: {err}", file=sys.stderr)  # it names its flags itself
        return 2
    except (ValueError, FileNotFoundError) as err:
        # Every process meets the same error; one says it.
        return fail(err) if main else 2
    except KeyboardInterrupt as err:
        # Ctrl-C: one line, no trace; 130 is the shell's code for a command ended by SIGINT.
        if main:
            print(str(err) if isinstance(err, RunInterrupted) else "interrupted", file=sys.stderr, flush=True)
        return 130
    finally:
        if joined:
            distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
