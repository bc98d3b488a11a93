"""Experiment tracking: a training run sent to MLflow or TensorBoard as well as written
to its run folder (``tracking.backend``, the train command's ``--track``).

What a tracked run holds, the same in both:

- parameters: the settings of ``config.json`` by their dotted names (``train.lr``;
  not ``tracking.*``, which say where the run went, and a URI may hold a password), the
  modalities, the strategy, the data, the rows of each split, the package versions and
  the machine's kind;
- per epoch (networks): the figures of ``metrics.json``'s ``history``
  (``epoch_train_loss``, ``epoch_val_loss``, ``epoch_val_macro_f1``, ``epoch_seconds``...),
  one step per epoch;
- final: each split's headline figures (``test_macro_f1``, ``val_auroc_macro``...), the
  per-class ones (``test_covid_auroc``) and their 95 % intervals as two more figures
  each (``test_macro_f1_low``, ``test_macro_f1_high``), the seconds and epochs;
- files: the plots, ``MODEL_CARD.md``, ``metrics.json`` and ``config.json`` (MLflow's
  artifacts; in TensorBoard the plots as images and the card as text).

A run that fails ends its tracked run FAILED (KILLED on Ctrl-C) and the error goes on.

The packages are imported only when asked for, by :func:`tracker_for`, before anything
is trained: an absent one is refused at once, with the command that installs it. The
per-epoch figures are sent when the training ends, from the history the run folder
records (so the tracked figures and ``metrics.json`` are the same numbers). Nothing
here prints: where the run went is logged to the ``fusion`` logger. MLflow's own
progress lines (its database set-up) and the deprecation warnings of the libraries under
it are held back while it works; its other warnings still show.

Example
-------
>>> from fusion.config import TrackingConfig
>>> tracker = tracker_for(TrackingConfig())  # backend "none": does nothing
>>> tracker.start(Path("runs/x"), "synthetic", {"train.lr": "0.002"})
>>> tracker.end("FINISHED")
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import re
import time
import warnings
from pathlib import Path
from typing import Protocol

from fusion.config import TrackingConfig
from fusion.errors import ConfigError

logger = logging.getLogger(__name__)

INSTALL = 'pip install "fusion[track]"'
# What a run folder holds that a tracked run receives besides its plots.
RUN_FILES = ("MODEL_CARD.md", "metrics.json", "config.json", "predictions_val.csv", "predictions_test.csv")
# The statuses a tracked run ends with (MLflow's names).
STATUSES = ("FINISHED", "FAILED", "KILLED")
# The splits whose final figures are tracked.
_SPLITS = ("val", "test")
# MLflow accepts letters, digits and _ - . space / : in a name; a class name may hold more.
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /:]")


class Tracker(Protocol):
    """Where a run is tracked; every method is called on the main process only."""

    def start(self, folder: Path, experiment: str, params: dict[str, str]) -> None:
        """Open the tracked run of the run folder ``folder``, filed under ``experiment``,
        with its parameters (names to text)."""

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """The figures of one epoch (1-based), as step ``epoch``."""

    def log_final(self, metrics: dict[str, float]) -> None:
        """The run's final figures (:func:`final_metrics`)."""

    def log_artifacts(self, folder: Path) -> None:
        """The run folder's plots and :data:`RUN_FILES` (those present)."""

    def end(self, status: str) -> None:
        """Close the tracked run with one of :data:`STATUSES`; nothing when none is open."""


class NoTracker:
    """The run is tracked in its folder only (``tracking.backend = "none"``)."""

    def start(self, folder: Path, experiment: str, params: dict[str, str]) -> None:
        pass

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def log_final(self, metrics: dict[str, float]) -> None:
        pass

    def log_artifacts(self, folder: Path) -> None:
        pass

    def end(self, status: str) -> None:
        pass


def tracker_for(settings: TrackingConfig, *, enabled: bool = True) -> Tracker:
    """The tracker ``settings`` ask for, its package imported now, so that a missing one
    stops the run before it trains. ``enabled`` False (a process other than the main
    one of a distributed run): the package is still checked, nothing is tracked.

    Raises
    ------
    ConfigError
        The package of ``tracking.backend`` is not installed (the message gives the
        command that installs it).
    """
    if settings.backend == "none":
        return NoTracker()
    _require(settings.backend)
    if not enabled:
        return NoTracker()
    if settings.backend == "mlflow":
        return MlflowTracker(settings.uri)
    return TensorBoardTracker(settings.uri)


def _require(package: str) -> None:
    """Import ``package`` or say how to install it."""
    try:
        importlib.import_module(package)
    except ImportError:
        raise ConfigError(
            f"tracking.backend {package!r} needs the {package} package, which is not installed: "
            f"install it with {INSTALL} (or track with 'none')",
            field="tracking.backend",
            value=package,
            accepted=f"'none', or a backend whose package is installed ({INSTALL})",
        ) from None


@contextlib.contextmanager
def ending(tracker: Tracker):
    """Close ``tracker``'s run as the block ends: FINISHED, KILLED on Ctrl-C, FAILED on
    any other error, which goes on (an error in closing the run is logged, never put
    in its place)."""
    try:
        yield tracker
    except BaseException as err:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        try:
            tracker.end(status)
        except Exception as closing:  # the run's own error is the one to raise
            logger.warning("could not mark the tracked run %s: %s", status, closing)
        raise
    tracker.end("FINISHED")


# ------------------------------------------------------------------ what is tracked
def run_params(config_json: dict, extra: dict) -> dict[str, str]:
    """A run's parameters as text: the settings of ``config_json``'s configuration by
    dotted name (``train.lr``; JSON values as JSON writes them), without ``tracking``,
    then ``extra`` (modalities, strategy, data, split sizes), the package versions
    (``version.torch``) and the machine's kind (``machine.cpu_capability``), as
    :func:`fusion.environment.environment` gives them to ``metrics.json``."""
    from fusion.environment import environment

    config = {k: v for k, v in config_json.items() if k != "tracking"}
    params = _flat(config)
    params.update({name: v if isinstance(v, str) else json.dumps(v) for name, v in extra.items()})
    found = environment()  # what metrics.json records of the packages and the machine
    params.update({f"version.{name}": v for name, v in found["versions"].items()})
    params.update(_flat(found["machine"], "machine."))
    return params


def _flat(values: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


def epoch_metrics(record: dict) -> dict[str, float]:
    """One line of ``metrics.json``'s ``history`` as figures: every number but the
    epoch itself, each name led by ``epoch_`` (``epoch_train_loss``,
    ``epoch_val_macro_f1``, ``epoch_seconds``): the final ``val_macro_f1``, after
    calibration and of the best epoch, is another figure."""
    return {f"epoch_{name}": float(value) for name, value in record.items() if name != "epoch" and _is_number(value)}


def final_metrics(metrics: dict) -> dict[str, float]:
    """The final figures of a run's ``metrics.json``: for each scored split, its
    headline and per-class numbers (``test_macro_f1``, ``test_covid_auroc``) and each
    one's interval bounds (``test_macro_f1_low``, ``test_macro_f1_high``); the
    prediction sets' empirical coverage and mean size with theirs
    (``test_prediction_coverage``, ``test_prediction_set_size``); the run's seconds,
    epochs run and best epoch."""
    out = {
        name: float(metrics[name]) for name in ("seconds", "epochs_run", "best_epoch") if _is_number(metrics.get(name))
    }
    for split in _SPLITS:
        figures = metrics.get(split) or {}
        intervals = figures.get("intervals") or {}
        out.update(_numbers(figures, split))
        for name, bounds in intervals.items():
            if name == "per_class" and isinstance(bounds, dict):
                for cls, per in bounds.items():
                    out.update(_bounds(per, f"{split}_{cls}"))
            elif isinstance(bounds, dict):
                out.update(_bounds({name: bounds}, split))
        for cls, per in (figures.get("per_class") or {}).items():
            out.update(_numbers(per, f"{split}_{cls}"))
        sets = figures.get("prediction_sets") or {}
        for name in ("coverage", "set_size"):
            figure = sets.get(name) or {}
            if _is_number(figure.get("value")):
                out[f"{split}_prediction_{name}"] = float(figure["value"])
                out.update(_bounds({f"prediction_{name}": figure}, split))
    return {_safe(name): value for name, value in out.items()}


def _numbers(values: dict, prefix: str) -> dict[str, float]:
    return {f"{prefix}_{k}": float(v) for k, v in values.items() if _is_number(v)}


def _bounds(values: dict, prefix: str) -> dict[str, float]:
    """``{name: {low, high}}`` as ``prefix_name_low`` and ``prefix_name_high``."""
    out = {}
    for name, bound in values.items():
        for side in ("low", "high"):
            if isinstance(bound, dict) and _is_number(bound.get(side)):
                out[f"{prefix}_{name}_{side}"] = float(bound[side])
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name)


def _plots(folder: Path) -> list[Path]:
    return sorted((folder / "plots").glob("*.png"))


# ------------------------------------------------------------------ MLflow
def mlflow_store(uri: str | None, folder: Path) -> tuple[str, str | None]:
    """The tracking URI and the artifact folder of a new experiment: ``uri`` as given
    when it is a URI (``sqlite:///``, ``http://``...; a SQLite file's artifacts in
    ``mlartifacts/`` beside it), else the folder ``uri`` (default: the run folder's
    parent) with ``mlflow.db`` and ``mlartifacts/`` in it. MLflow 3 refuses its old
    plain-folder store unless told otherwise; a SQLite file needs no server."""
    if uri and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri) and not re.match(r"^[A-Za-z]:[\\/]", uri):
        if uri.startswith("sqlite:///"):
            database = Path(uri[len("sqlite:///") :])
            return uri, str((database.parent / "mlartifacts").resolve())
        return uri, None
    root = (Path(uri) if uri else folder.parent).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", str(root / "mlartifacts")


@contextlib.contextmanager
def _mlflow_quiet():
    """MLflow's and its database migrations' progress lines (INFO: "Creating initial
    MLflow database tables...") and the deprecation warnings of the libraries under it
    (SQLAlchemy's, which a user cannot act on) held back while it works; the loggers'
    levels and the warning filters are put back after (nothing global is left changed)."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    saved = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for log, level in zip(loggers, saved, strict=True):
            log.setLevel(level)


class MlflowTracker:
    """A run tracked in MLflow through its client (no active-run global, no server):
    ``uri`` as :func:`mlflow_store` reads it."""

    def __init__(self, uri: str | None = None):
        self.uri = uri
        self._client = None
        self._run_id: str | None = None
        self._step = 0

    def start(self, folder: Path, experiment: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri, artifacts = mlflow_store(self.uri, folder)
        with _mlflow_quiet():
            self._client = MlflowClient(tracking_uri=uri)
            found = self._client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else self._client.create_experiment(experiment, artifacts)
            tags = {"fusion.run_folder": str(folder.resolve())}
            self._run_id = self._client.create_run(exp_id, run_name=folder.name, tags=tags).info.run_id
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters a batch
                self._client.log_batch(self._run_id, params=items[i : i + 100])
        logger.info(
            "tracking in MLflow: experiment %r, run %s (view: mlflow ui --backend-store-uri %s)",
            experiment,
            self._run_id,
            uri,
        )

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._step = epoch
        self._log(metrics, epoch)

    def log_final(self, metrics: dict[str, float]) -> None:
        self._log(metrics, self._step)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(_safe(k), v, stamp, step) for k, v in metrics.items() if math.isfinite(v)]
        with _mlflow_quiet():
            for i in range(0, len(items), 1000):  # at most 1,000 figures a batch
                self._client.log_batch(self._run_id, metrics=items[i : i + 1000])

    def log_artifacts(self, folder: Path) -> None:
        with _mlflow_quiet():
            for path in _plots(folder):
                self._client.log_artifact(self._run_id, str(path), "plots")
            for name in RUN_FILES:
                if (folder / name).is_file():
                    self._client.log_artifact(self._run_id, str(folder / name))

    def end(self, status: str) -> None:
        if self._run_id is None:
            return
        with _mlflow_quiet():
            self._client.set_terminated(self._run_id, status)
        self._run_id = None


# ------------------------------------------------------------------ TensorBoard
class TensorBoardTracker:
    """A run tracked in TensorBoard event files, in ``uri``/<run folder name> (default:
    the run folder's ``tensorboard/``): figures as scalars, parameters and final
    figures in the HParams tab as well, plots as images, the card as text."""

    def __init__(self, uri: str | None = None):
        self.uri = uri
        self._writer = None
        self._params: dict[str, str] = {}
        self._step = 0

    def start(self, folder: Path, experiment: str, params: dict[str, str]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        logdir = Path(self.uri) / folder.name if self.uri else folder / "tensorboard"
        self._writer = SummaryWriter(log_dir=str(logdir))
        self._params = {"experiment": experiment, **params}
        table = "\n".join(["| parameter | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in self._params.items())])
        self._writer.add_text("parameters", table, 0)
        # Viewed from the folder that holds every run's logs, so that runs can be compared.
        logger.info("tracking in TensorBoard: %s (view: tensorboard --logdir %s)", logdir, self.uri or folder.parent)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._step = epoch
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, epoch)

    def log_final(self, metrics: dict[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
        for name, value in finite.items():
            self._writer.add_scalar(name, value, self._step)
        # The HParams tab: one row per run, its settings beside its final figures.
        for summary in hparams(self._params, finite):
            self._writer.file_writer.add_summary(summary)

    def log_artifacts(self, folder: Path) -> None:
        import numpy as np
        from PIL import Image

        for path in _plots(folder):
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            self._writer.add_image(f"plots/{path.stem}", pixels, self._step, dataformats="HWC")
        card = folder / "MODEL_CARD.md"
        if card.is_file():
            self._writer.add_text("model_card", card.read_text(encoding="utf-8"), self._step)

    def end(self, status: str) -> None:
        if self._writer is None:
            return
        self._writer.add_text("status", status, self._step)
        self._writer.close()
        self._writer = None
