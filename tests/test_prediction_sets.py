"""Prediction sets through the classifier, the run folder, the commands and old folders
(the conformal arithmetic itself: tests/test_conformal.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fusion import FusionClassifier, synthetic
from fusion.cli import FIELD_FLAGS
from fusion.predict import main as predict_main
from fusion.train import main as train

OLD = Path(__file__).parent / "data" / "old_format"


@pytest.fixture(scope="module")
def fused(tiny_runs):
    return FusionClassifier.load(tiny_runs["fused"])


@pytest.fixture(scope="module")
def patients():
    table, images = synthetic.make_cohort(12, seed=11, image_size=32)
    return table, list(images)


def test_a_fused_model_has_sets_for_each_input_it_answers_from(tiny_runs):
    saved = json.loads((tiny_runs["fused"] / "calibration.json").read_text())["conformal"]
    assert saved["coverage"] == 0.9 and saved["method"] == "marginal"
    assert set(saved["minimum"]) == {"image+tabular", "image", "tabular"}
    assert all(0 <= m <= 1 for values in saved["minimum"].values() for m in values)
    single = json.loads((tiny_runs["image"] / "calibration.json").read_text())["conformal"]
    assert set(single["minimum"]) == {"image"}


def test_the_run_reports_coverage_and_set_size_on_test(tiny_runs):
    metrics = json.loads((tiny_runs["fused"] / "metrics.json").read_text())
    sets = metrics["test"]["prediction_sets"]
    assert sets["target"] == 0.9 and sets["inputs"] == "image+tabular" and sets["n"] == metrics["n_test"]
    assert 0 <= sets["coverage"]["low"] <= sets["coverage"]["value"] <= sets["coverage"]["high"] <= 1
    assert 1 <= sets["set_size"]["value"] <= 3
    assert sum(sets["sizes"].values()) == metrics["n_test"]
    card = (tiny_runs["fused"] / "MODEL_CARD.md").read_text()
    assert "## Prediction sets (test split)" in card and "| all | " in card


def test_one_answer_says_what_cannot_be_ruled_out(fused, patients):
    table, images = patients
    record = table.iloc[0].to_dict()
    answer = fused.predict(record, images[0])
    assert answer.coverage == 0.9 and answer.prediction_set
    assert set(answer.prediction_set) <= set(fused.classes_)
    assert answer.label in answer.prediction_set  # argmax decision: the most probable class is never ruled out
    assert "cannot rule out at 90% coverage" in str(answer)
    assert answer.to_dict()["prediction_set"] == list(answer.prediction_set)


def test_many_rows_give_the_sets_of_one_row_each(fused, patients):
    table, images = patients
    many = fused.predict_set(table, images)
    one = [fused.predict(table.iloc[i].to_dict(), images[i]).prediction_set for i in range(len(table))]
    assert many == one


def test_a_missing_modality_gets_the_set_calibrated_for_what_was_given(fused, patients):
    table, images = patients
    sets = fused.calibration_.conformal
    proba = fused.predict_proba(None, images)
    expected = sets.contains(proba, ["image"])
    assert fused.predict_set(None, images) == [
        tuple(c for c, k in zip(fused.classes_, row, strict=True) if k) for row in expected
    ]
    # rows whose record holds no known value answer from their image, with the image's sets
    empty = table.copy()
    features = list(fused.schema_.feature_names)
    empty.loc[:, features] = np.nan
    empty[features] = empty[features].astype(object)
    assert fused.predict_set(empty, images) == fused.predict_set(None, images)
    only_record = fused.predict(table.iloc[0].to_dict())
    assert only_record.modalities == ("tabular",) and only_record.prediction_set


def test_sets_survive_save_and_load(fused, patients, tmp_path):
    table, images = patients
    fused.save(tmp_path / "again")
    again = FusionClassifier.load(tmp_path / "again")
    assert again.calibration_.conformal == fused.calibration_.conformal
    assert again.predict_set(table, images) == fused.predict_set(table, images)


def test_an_old_folder_loads_without_sets(tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(OLD / "xgboost", folder)
    clf = FusionClassifier.load(folder)
    assert clf.calibration_.conformal is None
    record = dict.fromkeys(clf.schema_.feature_names) | {"age": 60}
    assert clf.predict(record).prediction_set is None
    with pytest.raises(ValueError, match="no prediction sets"):
        clf.predict_set(record)


def test_coverage_and_method_are_settings_with_flags(tmp_path, capsys):
    assert FIELD_FLAGS["calibration.coverage"] == "--coverage"
    args = ["--modalities", "tabular", "--model", "xgboost", "--synthetic-n", "120", "--quiet"]
    assert train([*args, "--coverage", "0.8", "--conformal", "class", "--out", str(tmp_path / "run")]) == 0
    saved = json.loads((tmp_path / "run" / "calibration.json").read_text())["conformal"]
    assert saved["coverage"] == 0.8 and saved["method"] == "class"
    assert train([*args, "--coverage", "1.5", "--out", str(tmp_path / "bad")]) == 2
    assert "--coverage" in capsys.readouterr().err


def test_the_predict_command_prints_the_set(tiny_runs, capsys):
    record, _ = synthetic.example(seed=2, image_size=32)
    record = {k: v for k, v in record.items() if not (isinstance(v, float) and np.isnan(v))}
    assert predict_main(["--model", str(tiny_runs["tabular"]), "--record", json.dumps(record)]) == 0
    assert "cannot rule out (90% prediction set): " in capsys.readouterr().out
    assert predict_main(["--model", str(tiny_runs["tabular"]), "--record", json.dumps(record), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["coverage"] == 0.9 and answer["prediction_set"]
