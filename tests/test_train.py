"""End to end: tiny training runs through the CLI, evaluation, save and load."""

import importlib.util
import json
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusion import FusionClassifier, load_dataset
from fusion.evaluate import main as evaluate_main
from fusion.train import main as train_main

ROOT = Path(__file__).parents[1]
TINY = ["--synthetic-n", "90", "--image-size", "32", "--epochs", "2", "--quiet"]
METRIC_KEYS = {"accuracy", "macro_f1", "auroc_macro", "ece", "per_class", "confusion_matrix"}


@pytest.fixture(scope="module")
def fused_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "fused"
    assert train_main(["--modalities", "image,tabular", "--out", str(out), *TINY]) == 0
    return out


def test_run_folder_holds_model_metrics_and_plots(fused_run):
    names = {p.name for p in fused_run.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "preprocessing.json",
        "schema.toml",
        "manifest.json",
        "metrics.json",
        "plots",
    } <= names
    assert {p.name for p in (fused_run / "plots").iterdir()} >= {
        "confusion_test.png",
        "roc_test.png",
        "training_curves.png",
    }
    metrics = json.loads((fused_run / "metrics.json").read_text())
    for key in (
        "task",
        "classes",
        "modalities",
        "model",
        "backbone",
        "n_train",
        "n_val",
        "n_test",
        "epochs_run",
        "seconds",
        "skipped",
        "val",
        "test",
    ):
        assert key in metrics, key
    assert metrics["modalities"] == ["image", "tabular"] and metrics["epochs_run"] == 2
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 90
    assert set(metrics["test"]) >= METRIC_KEYS
    per_class = metrics["test"]["per_class"]["covid"]
    assert {"precision", "recall", "sensitivity", "specificity", "f1", "auroc", "support"} <= set(per_class)
    assert not any(p.suffix in (".pkl", ".pt", ".pth", ".pickle") for p in fused_run.rglob("*"))


def test_save_load_round_trip_gives_identical_probabilities(fused_run, tmp_path):
    clf = FusionClassifier.load(fused_run)
    ds = load_dataset(None, image_size=32, synthetic_n=30, seed=99)
    proba = clf.predict_dataset(ds)
    assert proba.shape == (30, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    clf.save(tmp_path / "copy")
    np.testing.assert_array_equal(FusionClassifier.load(tmp_path / "copy").predict_dataset(ds), proba)


def test_evaluate_cli_scores_another_folder(fused_run, folder_dataset, tmp_path, capsys):
    out = tmp_path / "scores.json"
    assert evaluate_main(["--model", str(fused_run), "--data", str(folder_dataset), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 90 and set(result) >= METRIC_KEYS
    assert "macro-F1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args", [["--modalities", "image"], ["--modalities", "tabular"], ["--modalities", "tabular", "--model", "xgboost"]]
)
def test_ablations_run_and_round_trip(args, tmp_path):
    out = tmp_path / "run"
    assert train_main([*args, "--out", str(out), *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    clf = FusionClassifier.load(out)
    assert tuple(metrics["modalities"]) == clf.modalities_
    ds = load_dataset(None, image_size=32, synthetic_n=20, seed=5)
    np.testing.assert_array_equal(clf.predict_dataset(ds), FusionClassifier.load(out).predict_dataset(ds))


def test_skipped_rows_reach_metrics_json(folder_dataset, tmp_path, capsys):
    table = (folder_dataset / "metadata.csv").read_text().splitlines()
    header = table[0].split(",")
    row = table[1].split(",")
    row[header.index("age")] = "abc"
    table[1] = ",".join(row)
    (folder_dataset / "metadata.csv").write_text("\n".join(table) + "\n")
    out = tmp_path / "run"
    args = ["--data", str(folder_dataset), "--schema", "synthetic", "--modalities", "tabular", "--epochs", "1"]
    assert train_main([*args, "--out", str(out), "--quiet"]) == 0
    # the command shows the warning as one line (fusion.cli.log_to_terminal)
    assert "warning: 1 row(s) of cohort skipped" in capsys.readouterr().err
    skipped = json.loads((out / "metrics.json").read_text())["skipped"]
    assert len(skipped) == 1 and skipped[0]["row"] == 0 and "'age'" in skipped[0]["reason"]


def test_values_a_schema_declares_not_known_are_kept_and_counted_in_metrics_and_card(folder_dataset, tmp_path):
    table = pd.read_csv(folder_dataset / "metadata.csv", dtype=str, keep_default_na=False)
    table.loc[[0, 5, 9], "sex"] = "unknown"
    table.to_csv(folder_dataset / "metadata.csv", index=False)
    schema = tmp_path / "schema.toml"
    text = (ROOT / "data" / "schema" / "synthetic.toml").read_text()
    schema.write_text(text.replace('categories = ["F", "M"]', 'categories = ["F", "M"]\nmissing_tokens = ["unknown"]'))
    out = tmp_path / "run"
    args = ["--data", str(folder_dataset), "--schema", str(schema), "--modalities", "tabular", "--epochs", "1"]
    assert train_main([*args, "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert not metrics["skipped"] and metrics["missing_tokens"] == {"sex": {"unknown": 3}}
    card = (out / "MODEL_CARD.md").read_text()
    assert "kept as missing: sex 'unknown' 3" in card and "'unknown' taken as not known" in card
    # The saved folder's schema keeps the tokens: a record saying "unknown" is a missing value.
    clf = FusionClassifier.load(out)
    assert clf.predict_proba({"sex": "unknown", "age": 50}).shape == (1, 3)
    scores = tmp_path / "scores.json"
    assert evaluate_main(["--model", str(out), "--data", str(folder_dataset), "--out", str(scores)]) == 0
    assert json.loads(scores.read_text())["missing_tokens"] == {"sex": {"unknown": 3}}
    if all(importlib.util.find_spec(m) for m in ("fastapi", "httpx", "python_multipart")):  # the serve extra
        from fastapi.testclient import TestClient

        from fusion.serve import create_app

        with TestClient(create_app(out), base_url="http://127.0.0.1:8000") as client:
            sex = {f["name"]: f for f in client.get("/schema").json()["features"]}["sex"]
            assert sex["missing_tokens"] == ["unknown"]
            answers = [
                client.post("/predict", files={"record": (None, json.dumps(record))}).json()
                for record in ({"sex": "unknown", "age": 50}, {"age": 50})
            ]
        assert answers[0]["probabilities"] == pytest.approx(answers[1]["probabilities"])


def test_non_empty_out_is_refused(fused_run, capsys):
    assert train_main(["--out", str(fused_run), *TINY]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--modalities", "image,xray"], "modalities must be"),
        (["--model", "xgboost"], "tabular only"),
        (["--data", "/nonexistent"], "does not exist"),
        (["--lr", "0"], "train.lr must be a finite number > 0; got 0.0 (flag: --lr)"),
    ],
)
def test_cli_errors_are_clear(args, message, tmp_path, capsys):
    assert train_main([*args, "--out", str(tmp_path / "r"), *TINY]) == 2
    assert message in capsys.readouterr().err


def test_a_learning_rate_that_is_not_finite_is_refused_by_the_flag(tmp_path, capsys):
    """``--lr inf`` trained, then diverged; argparse now refuses it before anything runs."""
    with pytest.raises(SystemExit) as exit_:
        train_main(["--lr", "inf", "--out", str(tmp_path / "r"), *TINY])
    assert exit_.value.code == 2
    assert "--lr: must be a finite decimal number; got 'inf'" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:'fusion.train' found in sys.modules:RuntimeWarning")
def test_module_entry_point_runs(tmp_path, monkeypatch, capsys):
    """``python -m fusion.train`` runs the module as ``__main__`` and exits with main's
    code. Run in this process (runpy does what ``-m`` does): a fresh interpreter
    would add ~6 s of torch imports and prove nothing more; the CLI runs as a real
    subprocess in tests/test_reliability.py."""
    out = tmp_path / "cli"
    monkeypatch.setattr(sys, "argv", ["fusion.train", "--modalities", "tabular", "--out", str(out), *TINY])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("fusion.train", run_name="__main__", alter_sys=True)
    assert exit_.value.code == 0
    assert "test macro-F1" in capsys.readouterr().out


# ------------------------------------------------------------------ issue 21
def test_a_diverging_training_stops_with_a_sentence_and_no_run_claims_success(tmp_path, capsys):
    from fusion.training.checkpoint import read_progress

    out = tmp_path / "run"
    args = ["--modalities", "image,tabular", "--synthetic-n", "60", "--image-size", "32", "--epochs", "2"]
    assert train_main([*args, "--lr", "1e30", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"the (validation )?loss became (NaN|infinite) at epoch 1\b", err), err
    assert "lower the learning rate" in err and "(flag: --lr)" in err
    assert "Traceback" not in err and "JSON" not in err and len(err.strip().splitlines()) == 1
    assert not (out / "metrics.json").exists() and not (out / "manifest.json").exists()
    progress = read_progress(out)
    assert progress is None or not progress["complete"]


def test_training_stops_at_the_first_batch_whose_loss_is_not_finite(monkeypatch):
    """The check runs on every batch's loss, not only on the epoch's mean."""
    from fusion import Config
    from fusion.training import loop

    ds = load_dataset(None, synthetic_n=90, modalities=("tabular",), seed=0)
    parts = ds.split(seed=0)
    cfg = Config(modalities="tabular")
    cfg.train.epochs, cfg.train.batch_size = 3, 16
    calls = []
    cross_entropy = loop._cross_entropy

    def nan_on_the_third_batch(*args):
        calls.append(1)
        loss = cross_entropy(*args)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(loop, "_cross_entropy", nan_on_the_third_batch)
    with pytest.raises(ValueError, match=r"the loss became NaN at epoch 1 \(batch 3 of \d+\); lower the learning"):
        FusionClassifier(cfg).fit(parts["train"], parts["val"])
    assert len(calls) == 3


def test_a_dangling_symlink_as_out_is_refused_in_one_line(tmp_path, capsys):
    link = tmp_path / "run"
    link.symlink_to(tmp_path / "nowhere" / "run")
    assert train_main(["--modalities", "tabular", "--out", str(link), *TINY]) == 2
    err = capsys.readouterr().err
    assert "is a symlink to" in err and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "nowhere").exists()


def test_the_skipped_rows_warning_cuts_a_long_file_name(folder_dataset, tmp_path, capsys):
    import pandas as pd

    table = pd.read_csv(folder_dataset / "metadata.csv")
    table.loc[0, "image"] = "x" * 5000 + ".png"  # no such file: the row is skipped
    table.to_csv(folder_dataset / "metadata.csv", index=False)
    args = ["--data", str(folder_dataset), "--schema", "synthetic", "--epochs", "1", "--quiet"]
    train_main([*args, "--image-size", "32", "--out", str(tmp_path / "run")])
    # the command shows the warning as one line (fusion.cli.log_to_terminal)
    message = next(line for line in capsys.readouterr().err.splitlines() if "skipped" in line)
    assert re.search(r"^warning: 1 row\(s\) of .* skipped.*first: row 0, file '", message)
    assert len(message) < 600
