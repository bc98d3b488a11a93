"""Experiment tracking (fusion.tracking, ``--track``): tiny runs tracked in MLflow and
TensorBoard, read back with each one's own reader; the clear refusal when a package is
absent; nothing tracked by default."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest

from fusion.config import Config, TrackingConfig
from fusion.errors import ConfigError
from fusion.tracking import NoTracker, final_metrics, mlflow_store, tracker_for
from fusion.train import main as train_main

# Tiny and fast: 120 synthetic rows at 32 px; the network trains 2 epochs.
TINY = ["--synthetic-n", "120", "--image-size", "32", "--quiet"]
NETWORK = ["--modalities", "image,tabular", "--epochs", "2", *TINY]
XGBOOST = ["--modalities", "tabular", "--model", "xgboost", *TINY]
ARTIFACTS = {"MODEL_CARD.md", "metrics.json", "config.json", "predictions_val.csv", "predictions_test.csv"}


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


# ------------------------------------------------------------------ MLflow
@pytest.fixture(scope="module")
def mlflow_runs(tmp_path_factory):
    """A network run and an XGBoost run tracked in one MLflow store (a folder: SQLite
    file and artifacts). One store per test process."""
    pytest.importorskip("mlflow", reason="the track extra (mlflow) is not installed")
    root = tmp_path_factory.mktemp("mlflow")
    store = root / "store"
    for name, flags in (("network", NETWORK), ("xgboost", XGBOOST)):
        argv = [*flags, "--track", "mlflow", "--track-uri", str(store), "--out", str(root / name)]
        assert train_main(argv) == 0
    return root, store


def _mlflow_run(store: Path, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("synthetic")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    return client, run


def test_mlflow_holds_the_parameters_epochs_final_metrics_and_files(mlflow_runs):
    root, store = mlflow_runs
    client, run = _mlflow_run(store, "network")
    metrics = _metrics(root / "network")
    assert run.info.status == "FINISHED"
    assert run.data.tags["fusion.run_folder"] == str((root / "network").resolve())
    params = run.data.params
    assert params["modalities"] == "image,tabular" and params["strategy"] == "joint"
    assert params["train.epochs"] == "2" and params["train.lr"] == "0.002" and params["image.image_size"] == "32"
    assert params["n_train"] == str(metrics["n_train"]) and params["version.fusion"] == metrics["fusion_version"]
    assert not any(name.startswith("tracking.") for name in params)  # where it went, not what it is
    # Per epoch: one step per epoch, the numbers of metrics.json's history.
    history = client.get_metric_history(run.info.run_id, "epoch_train_loss")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["train_loss"]) for r in metrics["history"]]
    assert len(client.get_metric_history(run.info.run_id, "epoch_val_macro_f1")) == 2
    # Final: each figure and its interval.
    logged = run.data.metrics
    for split in ("val", "test"):
        assert logged[f"{split}_macro_f1"] == pytest.approx(metrics[split]["macro_f1"])
        bounds = metrics[split]["intervals"]["auroc_macro"]
        assert logged[f"{split}_auroc_macro_low"] == pytest.approx(bounds["low"])
        assert logged[f"{split}_auroc_macro_high"] == pytest.approx(bounds["high"])
    assert logged["test_covid_auroc_low"] == pytest.approx(
        metrics["test"]["intervals"]["per_class"]["covid"]["auroc"]["low"]
    )
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert files == ARTIFACTS | {"plots"}
    assert "plots/training_curves.png" in plots and "plots/roc_test.png" in plots


def test_mlflow_tracks_a_model_without_epochs_with_its_final_metrics(mlflow_runs):
    root, store = mlflow_runs
    _, run = _mlflow_run(store, "xgboost")
    assert run.info.status == "FINISHED" and run.data.params["strategy"] == "xgboost"
    assert not any(name.startswith("epoch_") for name in run.data.metrics)
    assert run.data.metrics["test_macro_f1"] == pytest.approx(_metrics(root / "xgboost")["test"]["macro_f1"])


def test_mlflow_prints_nothing_of_its_own(mlflow_runs, tmp_path, capfd):
    """A run tracked into a new store prints nothing of MLflow's: no database
    migrations, no deprecation warnings, no run links (file descriptors captured:
    MLflow's handlers write there). Every MLflow call of a run is the tracker's."""
    from fusion.tracking import epoch_metrics, run_params

    root, _ = mlflow_runs
    metrics = _metrics(root / "network")
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would fail the test, not pass unseen
        tracker = tracker_for(TrackingConfig(backend="mlflow", uri=str(tmp_path / "new")))
        tracker.start(root / "network", "quiet", run_params(metrics["config"], {}))
        tracker.log_epoch(1, epoch_metrics(metrics["history"][0]))
        tracker.log_final(final_metrics(metrics))
        tracker.log_artifacts(root / "network")
        tracker.end("FINISHED")
    assert capfd.readouterr() == ("", "")
    assert (tmp_path / "new" / "mlflow.db").is_file()


@pytest.mark.parametrize("error, status", [(ValueError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_a_run_that_fails_ends_its_tracked_run_so(mlflow_runs, monkeypatch, error, status):
    from fusion.classifier import FusionClassifier

    root, store = mlflow_runs

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(FusionClassifier, "fit", fail)
    name = f"failed-{status}"
    code = train_main([*XGBOOST, "--track", "mlflow", "--track-uri", str(store), "--out", str(root / name)])
    assert code == (130 if status == "KILLED" else 2)
    _, run = _mlflow_run(store, name)
    assert run.info.status == status
    assert run.data.params["strategy"] == "xgboost"  # opened before the training failed


# ------------------------------------------------------------------ TensorBoard
def _events(logdir: Path):
    pytest.importorskip("tensorboard", reason="the track extra (tensorboard) is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def test_tensorboard_holds_epochs_final_metrics_plots_and_card(tmp_path):
    pytest.importorskip("tensorboard", reason="the track extra (tensorboard) is not installed")
    run, logs = tmp_path / "run", tmp_path / "tb"
    assert train_main([*NETWORK, "--track", "tensorboard", "--track-uri", str(logs), "--out", str(run)]) == 0
    metrics = _metrics(run)
    events = _events(logs / "run")  # one log folder per run, named as the run folder
    loss = events.Scalars("epoch_train_loss")
    assert [(e.step, e.value) for e in loss] == [
        (r["epoch"], pytest.approx(r["train_loss"])) for r in metrics["history"]
    ]
    low = metrics["test"]["intervals"]["macro_f1"]["low"]
    assert events.Scalars("test_macro_f1_low")[-1].value == pytest.approx(low)
    assert {"plots/roc_test", "plots/training_curves"} <= set(events.Tags()["images"])
    texts = set(events.Tags()["tensors"])
    assert {"model_card/text_summary", "parameters/text_summary", "status/text_summary"} <= texts
    card = events.Tensors("model_card/text_summary")[0].tensor_proto.string_val[0].decode()
    assert card == (run / "MODEL_CARD.md").read_text()
    assert not (run / "tensorboard").exists()


def test_tensorboard_logs_in_the_run_folder_by_default_and_the_model_still_loads(tmp_path):
    pytest.importorskip("tensorboard", reason="the track extra (tensorboard) is not installed")
    from fusion.classifier import FusionClassifier

    run = tmp_path / "run"
    assert train_main([*XGBOOST, "--track", "tensorboard", "--out", str(run)]) == 0
    events = _events(run / "tensorboard")
    assert "test_macro_f1" in events.Tags()["scalars"]
    assert not any(tag.startswith("epoch_") for tag in events.Tags()["scalars"])
    FusionClassifier.load(run)  # a log folder beside the model's files is no stray file of it


# ------------------------------------------------------------------ without the packages
@pytest.mark.parametrize("backend", ["mlflow", "tensorboard"])
def test_an_absent_package_is_refused_before_anything_is_written(backend, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, backend, None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r'pip install "fusion\[track\]"') as err:
        tracker_for(TrackingConfig(backend=backend))
    assert err.value.field == "tracking.backend"
    run = tmp_path / "run"
    assert train_main([*XGBOOST, "--track", backend, "--out", str(run)]) == 2
    message = capsys.readouterr().err
    assert f"needs the {backend} package" in message and 'pip install "fusion[track]"' in message
    assert "(flag: --track)" in message
    assert not run.exists() and list(tmp_path.iterdir()) == []


def test_nothing_is_tracked_by_default(tiny_runs):
    assert Config().tracking == TrackingConfig(backend="none", uri=None, experiment=None)
    assert isinstance(tracker_for(Config().tracking), NoTracker)
    run = tiny_runs["fused"]
    assert not (run / "tensorboard").exists()
    assert not {"mlflow.db", "mlartifacts", "mlruns"} & {p.name for p in run.parent.iterdir()}


# ------------------------------------------------------------------ the parts
def test_final_metrics_give_each_figure_and_its_interval_bounds():
    metrics = {
        "seconds": 1.5,
        "epochs_run": 0,
        "best_epoch": None,
        "val": None,
        "test": {
            "macro_f1": 0.5,
            "confusion_matrix": [[1]],
            "per_class": {"pleural effusion?": {"auroc": 0.7, "support": 3}},
            "intervals": {
                "macro_f1": {"low": 0.4, "high": 0.6},
                "per_class": {"pleural effusion?": {"auroc": {"low": 0.6, "high": 0.8}}},
                "level": 0.95,
            },
            "prediction_sets": {
                "target": 0.9,
                "coverage": {"value": 0.92, "low": 0.85, "high": 0.97},
                "set_size": {"value": 1.4, "low": None, "high": None},
            },
        },
    }
    assert final_metrics(metrics) == {
        "seconds": 1.5,
        "epochs_run": 0.0,
        "test_macro_f1": 0.5,
        "test_macro_f1_low": 0.4,
        "test_macro_f1_high": 0.6,
        "test_pleural effusion__auroc": 0.7,
        "test_pleural effusion__auroc_low": 0.6,
        "test_pleural effusion__auroc_high": 0.8,
        "test_pleural effusion__support": 3.0,
        "test_prediction_coverage": 0.92,
        "test_prediction_coverage_low": 0.85,
        "test_prediction_coverage_high": 0.97,
        "test_prediction_set_size": 1.4,
    }


def test_the_mlflow_store_is_a_sqlite_file_in_a_folder_unless_a_uri_is_given(tmp_path):
    run = tmp_path / "runs" / "r1"
    uri, artifacts = mlflow_store(None, run)
    assert uri == f"sqlite:///{(tmp_path / 'runs').resolve() / 'mlflow.db'}"
    assert artifacts == str((tmp_path / "runs").resolve() / "mlartifacts")
    assert mlflow_store(str(tmp_path / "s"), run)[0] == f"sqlite:///{(tmp_path / 's').resolve() / 'mlflow.db'}"
    assert mlflow_store("http://localhost:5000", run) == ("http://localhost:5000", None)
    db = tmp_path / "x" / "m.db"
    assert mlflow_store(f"sqlite:///{db}", run) == (f"sqlite:///{db}", str(db.parent / "mlartifacts"))


def test_an_empty_experiment_name_is_refused():
    with pytest.raises(ConfigError, match=r"tracking\.experiment") as err:
        Config(tracking=TrackingConfig(backend="mlflow", experiment=" "))
    assert err.value.field == "tracking.experiment"
