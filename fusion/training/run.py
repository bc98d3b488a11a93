"""The pipeline of one training run: load the data, split it by patient, fit, score
validation and test, and write the run folder (model, ``metrics.json``, plots, model
card, each split's per-row predictions). ``python -m fusion.train`` is this plus its flags and what it prints.

The run folder is checkpointed after every epoch, so a run stopped on the way
(Ctrl-C, a kill, a full disk) continues with ``resume=True``; a stopped run raises
:class:`RunInterrupted` or :class:`DiskFull`, whose :class:`FolderState` says what the
folder holds and how the run can go on. Under torch.distributed (``torchrun``) every
process calls :func:`run`: all train and predict, only rank 0 writes files.

Nothing here prints: progress goes to the ``fusion`` logger, and the skipped rows of
the data to a warning.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from fusion import __version__
from fusion.classifier import FusionClassifier
from fusion.config import Config
from fusion.data.dataset import Dataset
from fusion.data.loaders import declared_image, load_dataset
from fusion.environment import environment
from fusion.evaluation import classification_metrics, metric_intervals
from fusion.evaluation.calibration import calibration_report, operating_point_report, reliability_bins
from fusion.evaluation.card import model_card
from fusion.evaluation.conformal import set_report
from fusion.evaluation.decision import decision_report
from fusion.evaluation.modalities import best_single, fusion_change, modality_answers, single_aurocs
from fusion.evaluation.predictions import PREDICTIONS, row_keys, write_predictions
from fusion.evaluation.subgroups import subgroup_report
from fusion.persistence import is_disk_full, remove_temporary, write_files, write_json
from fusion.plots import plot_confusion, plot_decision_curves, plot_history, plot_reliability, plot_roc
from fusion.schema import group_unit, short_repr
from fusion.tracking import Tracker, ending, epoch_metrics, final_metrics, run_params, tracker_for
from fusion.training import distributed
from fusion.training.checkpoint import PROGRESS, mark_complete, read_progress

logger = logging.getLogger(__name__)

MIN_ROWS = 10


# ------------------------------------------------------------------ outcomes
@dataclass(frozen=True)
class RunResult:
    """What :func:`run` made: the fitted classifier, the metrics written to
    ``metrics.json``, and the run folder."""

    classifier: FusionClassifier
    metrics: dict
    folder: Path


@dataclass(frozen=True)
class FolderState:
    """What the folder of a stopped run holds, so its caller can say how to go on.

    ``complete``: the run finished (model and ``metrics.json`` saved); ``next_epoch``:
    the epoch a resume continues from (None: no checkpoint to resume); ``trained``:
    the training was done, and a resume writes the model and metrics; ``empty``: the
    folder holds nothing at all.
    """

    folder: Path
    complete: bool = False
    next_epoch: int | None = None
    trained: bool = False
    empty: bool = True

    @classmethod
    def of(cls, folder: Path, trained: bool) -> FolderState:
        try:
            progress = read_progress(folder)
        except (OSError, ValueError):
            progress = None
        if progress is None:
            return cls(folder, trained=trained, empty=not (folder.is_dir() and any(folder.iterdir())))
        if progress.get("complete"):
            return cls(folder, complete=True, trained=trained, empty=False)
        return cls(folder, next_epoch=progress["epoch"] + 1, trained=trained, empty=False)

    def sentence(self, cause: str, *, free_space: bool = False, wording: Wording | None = None) -> str:
        """One sentence: ``cause`` (what stopped the run), what the folder holds and
        how to go on (after freeing space, with ``free_space``), in the library's words
        or a command's (``wording``: the command line names its flags)."""
        w = wording or Wording()
        free = "free space and " if free_space else ""
        if self.complete:
            return f"{cause}; the run in {self.folder} is complete (its model and metrics.json are saved)"
        if self.next_epoch is None:
            if not self.empty:
                return f"{cause}; nothing in {self.folder} can be resumed: {free}{w.new_folder}"
            return f"{cause} before any epoch was saved; {free}{w.again}"
        resume = w.resume.format(folder=self.folder)
        if self.trained:
            done = "its training is done: the model and metrics.json are written then"
            return f"{cause}; {free}{resume} to {w.finish} ({done})"
        return f"{cause}; {free}{resume} to continue from epoch {self.next_epoch}"


@dataclass(frozen=True)
class Wording:
    """How a stopped run's sentence says what to do: the library's words by default;
    the command line gives its own (``rerun the same command with --resume``)."""

    new_folder: str = "start the run in a new folder"
    again: str = "start the run again"
    resume: str = "resume the run in {folder}"
    finish: str = "finish it"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run`: temporary files are removed; ``state`` says what the
    run folder holds and how to continue."""

    def __init__(self, state: FolderState | None = None):
        super().__init__(state.sentence("interrupted") if state is not None else "interrupted")
        self.state = state


class DiskFull(OSError):
    """The disk (or quota) filled while :func:`run` wrote ``written`` (its folder, or a
    file outside it such as an image cache); ``state`` says what the run folder holds
    and how to continue once there is space."""

    def __init__(self, state: FolderState, written: Path):
        message = state.sentence(f"no space left on device writing {written}", free_space=True)
        super().__init__(errno.ENOSPC, message, str(written))
        self.state, self.written = state, written

    def __str__(self) -> str:
        return self.strerror


class RunFolderError(ValueError):
    """The folder asked for cannot take the run: ``folder`` names it. Raised before
    anything is loaded or written."""

    def __init__(self, message: str, folder: Path | None = None):
        super().__init__(message)
        self.folder = folder


class NoRunToResume(RunFolderError):
    """A resume asked for a folder without an interrupted run; ``complete``: it holds a
    finished one."""

    def __init__(self, message: str, folder: Path | None = None, *, complete: bool = False):
        super().__init__(message, folder)
        self.complete = complete


class FolderInUse(RunFolderError):
    """A new run asked for a folder that is not empty (runs are never overwritten);
    ``resumable``: it holds an interrupted run."""

    def __init__(self, message: str, folder: Path | None = None, *, resumable: bool = False):
        super().__init__(message, folder)
        self.resumable = resumable


class DanglingFolderLink(RunFolderError):
    """The folder asked for is a symlink to ``target``, which does not exist."""

    def __init__(self, message: str, folder: Path | None = None, *, target: str = ""):
        super().__init__(message, folder)
        self.target = target


# ------------------------------------------------------------------ the run
def run(
    cfg: Config,
    out: str | Path | None = None,
    *,
    verbose: bool = False,
    resume: bool = False,
    cache_dir: str | Path | bool | None = None,
    cache_workers: int | None = None,
    memory_map: bool | None = None,
    command: str | None = None,
) -> RunResult:
    """Load data, split by patient, train, score validation and test, save everything
    in the run folder ``out`` (default ``runs/<timestamp>``; new or empty).

    The training state is checkpointed in the folder after every epoch; with
    ``resume`` an interrupted run continues from its last completed epoch (temporary
    files that a killed write left behind are removed first). ``verbose``: a progress
    bar while training. ``cache_dir``, ``cache_workers``, ``memory_map``: how a
    folder's decoded images are cached and read (see
    :func:`fusion.data.loaders.load_dataset`). ``command``: the command line that
    started the run, recorded in ``metrics.json`` and the model card beside the package
    versions and the machine's kind (:func:`fusion.environment.environment`), so that the
    run can be repeated and told apart from one made elsewhere.

    Raises
    ------
    RunFolderError
        ``out`` cannot take the run (see :func:`prepare_folder`).
    RunInterrupted
        Ctrl-C (a ``KeyboardInterrupt``): temporary files are removed.
    DiskFull
        The disk filled while the run folder (or a file it needed) was written.
    ValueError
        Bad data or configuration, too little valid data, or a training that diverged.
    """
    cfg = resolved_for_data(cfg, cfg.data.path, cfg.data.schema)
    logger.debug("environment: %s", json.dumps(environment(), sort_keys=True))
    start = time.perf_counter()
    main = distributed.is_main()
    # Before the folder is made: a tracking package that is not installed stops the run here.
    tracker = tracker_for(cfg.tracking, enabled=main)
    folder = distributed.on_main(lambda: prepare_folder(out, resume))
    trained = False
    try:
        cache = {"cache_dir": cache_dir, "cache_workers": cache_workers, "memory_map": memory_map}
        with ending(tracker):
            ds, parts, clf = _fit(cfg, folder, tracker, verbose=verbose and main, resume=resume, **cache)
            trained = True
            # What the model was trained with: the image channels followed the data.
            finished = _finish(clf.config_, folder, ds, parts, clf, start=start, command=command)
            result = RunResult(clf, finished, folder)
            _track_result(tracker, result)
        return result
    except KeyboardInterrupt:
        if main:
            remove_temporary(folder)
        raise RunInterrupted(FolderState.of(folder, trained)) from None
    except Exception as err:
        if not (main and is_disk_full(err)):
            raise
        remove_temporary(folder)
        raise DiskFull(FolderState.of(folder, trained), _written(err, folder)) from None


def resolved_for_data(cfg: Config, path, schema) -> Config:
    """``cfg`` with the derived defaults (image size, starting weights) it will train
    with on the data at ``path`` read with ``schema``, knowing what the schema says of
    the images before they are loaded (``[image] channels`` unless ``image.channels``
    is set, ``flip_rotate``, ``detail``): a colour ``auto`` model starts from no weights,
    at the networks' size. What the train command and ``experiments/cv.py`` resolve alike."""
    channels, flip_rotate, detail = declared_image(path, schema)
    return cfg.resolved(cfg.image.channels or channels, flip_rotate, detail)


def prepare_folder(out: str | Path | None, resume: bool = False) -> Path:
    """The run folder: ``out`` made (default ``runs/<timestamp>``), or, with ``resume``,
    the interrupted run in ``out`` cleared of the temporary files a killed write left.

    Raises
    ------
    ValueError
        ``resume`` without ``out``.
    RunFolderError
        :class:`NoRunToResume`, :class:`FolderInUse` or :class:`DanglingFolderLink`.
    """
    if resume:
        if not out:
            raise ValueError("resume needs out, the folder of the run to continue")
        path = Path(out)
        progress = read_progress(path)
        if progress is None:
            raise NoRunToResume(f"{str(path)!r} holds no interrupted run to resume (no {PROGRESS})", path)
        if progress.get("complete"):
            message = f"the run in {str(path)!r} is already complete; its model and metrics.json are there"
            raise NoRunToResume(message, path, complete=True)
        _remove_temporary(path)
        return path
    path = Path(out) if out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    if os.path.lexists(path) and not path.exists():
        target = os.readlink(path)
        raise DanglingFolderLink(
            f"{str(path)!r} is a symlink to {target!r}, which does not exist; choose a new folder "
            "(runs are never written through a dangling link)",
            path,
            target=target,
        )
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        resumable = read_progress(path) is not None
        hint = " or resume the interrupted run in it" if resumable else ""
        message = f"{str(path)!r} exists and is not empty; choose a new folder{hint} (runs are never overwritten)"
        raise FolderInUse(message, path, resumable=resumable)
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def _fit(
    cfg: Config, folder: Path, tracker: Tracker, *, verbose: bool, resume: bool, **cache
) -> tuple[Dataset, dict, FusionClassifier]:
    """Load and split the data, open the tracked run, and fit (checkpointing into
    ``folder``)."""
    # Rank 0 first: it builds the image cache the other processes then read.
    ds = distributed.main_first(
        lambda: load_dataset(
            cfg.data.path,
            cfg.data.schema,
            image_size=cfg.image.image_size,
            seed=cfg.train.seed,
            synthetic_n=cfg.data.synthetic_n,
            modalities=cfg.modalities,
            channels=cfg.image.channels,
            **cache,
        )
    )
    check_enough_data(ds)
    if ds.skipped and distributed.is_main():
        warnings.warn(
            f"{len(ds.skipped)} row(s) of {ds.name} skipped; see 'skipped' in {folder / 'metrics.json'}; "
            f"first: {_skipped_row(ds.skipped[0])}",
            stacklevel=3,
        )
    parts = ds.split(seed=cfg.train.seed, val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction)
    train = parts.get("train")
    if train is None or len(train) == 0:
        raise ValueError(f"{ds.name}: no training rows (splits: { {k: len(v) for k, v in parts.items()} })")
    sizes = ", ".join(f"{k} {len(v)}" for k, v in parts.items())
    logger.info(
        "data: %s (%d rows; %s; %d skipped); classes %s", ds.name, len(ds), sizes, len(ds.skipped), list(ds.classes)
    )
    colour = ", colour" if ds.image_channels == 3 else ""
    detail = f", detail {cfg.image.detail} px" if cfg.image.detail else ""
    image = f", backbone {cfg.image.backbone} at {cfg.image.image_size} px{colour}{detail}"
    image = image if "image" in cfg.modalities else ""
    logger.info("model: %s, modalities %s%s", cfg.model, ",".join(cfg.modalities), image)
    logger.debug("settings: %s", json.dumps(cfg.to_dict(), sort_keys=True))
    logger.debug("groups (patients) per split: %s", {k: len(set(v.groups)) for k, v in parts.items()})
    _track_start(tracker, cfg, folder, ds, parts)
    clf = FusionClassifier(cfg).fit(train, parts.get("val"), verbose=verbose, checkpoint_dir=folder, resume=resume)
    for record in clf.history_.get("history", []):
        tracker.log_epoch(record["epoch"], epoch_metrics(record))
    return ds, parts, clf


def _track_start(tracker: Tracker, cfg: Config, folder: Path, ds: Dataset, parts: dict) -> None:
    """Open the tracked run: the settings (as ``config.json`` holds them), what is
    trained on what, and the split sizes; filed under ``tracking.experiment``, else the
    data's name."""
    extra = {
        "modalities": ",".join(cfg.modalities),
        "strategy": cfg.fusion if cfg.model == "fusion" else cfg.model,
        "data": cfg.data.path or "synthetic (embedded)",
        "classes": ",".join(ds.classes),
        **{f"n_{name}": len(parts[name]) if parts.get(name) is not None else 0 for name in ("train", "val", "test")},
    }
    tracker.start(folder, cfg.tracking.experiment or ds.name, run_params(cfg.to_dict(), extra))


def _track_result(tracker: Tracker, result: RunResult) -> None:
    """The final figures (with their intervals) and the run folder's plots, card,
    metrics and configuration, once the folder is complete."""
    tracker.log_final(final_metrics(result.metrics))
    tracker.log_artifacts(result.folder)


def _describe(cfg: Config, ds: Dataset, parts: dict, clf: FusionClassifier) -> dict:
    """The head of ``metrics.json``: what was trained, on what, and how."""
    return {
        "task": f"{ds.name}: {' / '.join(ds.classes)}",
        "classes": list(ds.classes),
        "modalities": list(clf.modalities_),  # what the model uses (auto may drop one: see "auto")
        "model": cfg.model,
        "fusion": cfg.fusion,
        "backend": clf.backend_.name,
        "auto": clf.history_.get("auto"),
        "backbone": cfg.image.backbone if "image" in clf.modalities_ else None,
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
    cfg: Config, folder: Path, ds: Dataset, parts: dict, clf: FusionClassifier, *, start: float, command: str | None
) -> dict:
    """Score validation and test, write the plots, the model, metrics.json and the
    card, and mark the run complete; the metrics."""
    main = distributed.is_main()
    metrics = _describe(cfg, ds, parts, clf)
    plots = folder / "plots"
    if main:
        plots.mkdir(exist_ok=True)
    for name in ("val", "test"):
        metrics[name] = _score_split(cfg, name, parts.get(name), ds, clf, plots if main else None, metrics.get("val"))
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
    metrics["missing_tokens"] = ds.missing_tokens
    metrics["config"] = cfg.to_dict()
    metrics["fusion_version"] = __version__
    metrics["command"] = command
    metrics["environment"] = environment()
    if main:
        write_json(folder / "metrics.json", metrics)
        write_model_card(folder, metrics, ds.schema, cfg)
        mark_complete(folder)
        _remove_temporary(folder)
    return metrics


def _score_split(
    cfg: Config, name: str, part: Dataset | None, ds: Dataset, clf, plots: Path | None, val: dict | None = None
) -> dict | None:
    """The figures of split ``name`` (None when it is empty); with ``plots`` (rank 0),
    its figures drawn there, its per-row predictions written beside them
    (``predictions_<name>.csv``, see :mod:`fusion.evaluation.predictions`) and, for
    the test split, its subgroups reported."""
    if part is None or len(part) == 0:
        return None
    metrics, proba, raw = score(clf, part, cfg.train.seed)
    # Before the return of the processes that draw nothing: every one must predict
    # (under torch.distributed the prediction is shared out among them).
    answers = modality_answers(clf, part, proba)
    if len(answers) > 1:
        metrics["single_modality_auroc"] = single_aurocs(part.labels, answers)
    if name == "test" and len(answers) > 1:
        chosen, reason = best_single((val or {}).get("single_modality_auroc"), metrics["single_modality_auroc"])
        decide = clf.calibration_.decide
        metrics["fusion_change"] = fusion_change(part.labels, answers, clf.classes_, decide, chosen, reason)
    if name == "test":
        metrics["decision_curves"] = decision_report(clf, part, proba, cfg.calibration.healthy, answers)
    if plots is None:
        return metrics
    # What each row was given, beside the plots: `fusion compare` pairs two runs on it.
    predicted = clf.calibration_.decide(proba)
    predictions = plots.parent / PREDICTIONS.format(split=name)
    write_predictions(predictions, row_keys(part), part.groups, part.labels, proba, clf.classes_, predicted)
    plot_reliability(part.labels, raw, proba, plots / f"reliability_{name}.png", title=f"Reliability ({name})")
    plot_confusion(
        metrics["confusion_matrix"], ds.classes, plots / f"confusion_{name}.png", title=f"Confusion matrix ({name})"
    )
    plot_roc(part.labels, proba, ds.classes, plots / f"roc_{name}.png", title=f"ROC one vs rest ({name})")
    if name == "test":
        plot_decision_curves(
            metrics["decision_curves"], plots / "decision_curves_test.png", title="Decision curves (test)"
        )
    if name == "test" and ds.schema is not None and part.records is not None:
        by = subgroup_features(ds.schema)
        if by:
            metrics["subgroups"] = subgroup_report(
                part.records,
                part.labels,
                proba,
                clf.classes_,
                part.groups,
                by,
                ds.schema,
                seed=cfg.train.seed,
                pred=clf.calibration_.decide(proba),
            )
    return metrics


def _remove_temporary(folder: Path) -> None:
    """Temporary files that a killed write left in the run folder (a write that fails
    removes its own): removed on resume and when the run completes."""
    removed = remove_temporary(folder)
    if removed:
        logger.info("removed %d temporary file(s) that an interrupted write left: %s", len(removed), removed[0].name)


# ------------------------------------------------------------------ the parts
def _skipped_row(entry: dict) -> str:
    """One skipped row for a warning: its row, file and reason, each cut (a file name or
    a reason can be as long as the table makes it)."""
    parts = [f"row {entry['row']}"] if "row" in entry else []
    if entry.get("file") is not None:
        parts.append(f"file {short_repr(str(entry['file']))}")
    reason = str(entry.get("reason", ""))
    return f"{', '.join(parts)}: {reason if len(reason) <= 200 else reason[:197] + '...'}"


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
    pred = clf.calibration_.decide(proba)  # the labels predict gives (calibration.decision)
    metrics = classification_metrics(ds.labels, proba, clf.classes_, pred=pred)
    metrics["intervals"] = metric_intervals(
        ds.labels, proba, clf.classes_, ds.groups, seed=seed, pred=pred, unit=group_unit(ds.schema)
    )
    metrics["calibration"] = calibration_report(ds.labels, raw, proba)
    metrics["reliability"] = reliability_bins(ds.labels, proba)
    metrics["operating_points"] = operating_point_report(ds.labels, proba, clf.classes_, clf.calibration_.thresholds)
    sets = clf.calibration_.conformal
    if sets is not None:
        used = [m for m in clf.modalities_ if m in ds.modalities]
        metrics["prediction_sets"] = set_report(sets, ds.labels, proba, used, clf.classes_, ds.groups, seed=seed)
    return metrics, proba, raw


def subgroup_features(schema) -> list[str]:
    """The record features a run reports subgroups of: every categorical or binary
    feature, and every numeric one whose schema declares bands."""
    return [f.name for f in schema.features if f.has_subgroups]


def write_model_card(folder: Path, metrics: dict, schema, cfg: Config) -> None:
    """``MODEL_CARD.md`` in the run folder, from the run's own metadata."""
    from fusion.nets.registry import backbone_spec

    pretraining = None
    if "image" in metrics["modalities"] and cfg.image.pretrained in backbone_spec(cfg.image.backbone).shipped:
        from fusion.nets.backbones import shipped_weights_info

        pretraining = shipped_weights_info(backbone_spec(cfg.image.backbone).shipped[cfg.image.pretrained].file)
    card = model_card(metrics, schema, pretraining=pretraining, versions=metrics["environment"]["versions"])
    (folder / "MODEL_CARD.md").write_text(card, encoding="utf-8")
