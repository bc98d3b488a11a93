"""Schema drafts from a folder's metadata.csv (fusion.schema.draft, python -m fusion.schema)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fusion.data import load_dataset
from fusion.schema import load_schema, parse_schema
from fusion.schema.__main__ import main
from fusion.schema.draft import draft_schema
from tests.conftest import SHARED_DATA

# folder, shipped schema, label, group, columns that must be excluded (known leaks)
REAL = [
    ("ham10000", "ham10000", "dx", "lesion_id", {"dx_type", "image_id"}),
    ("nih-pneumonia", "nih_pneumonia", "finding", "patientid", {"finding_labels"}),
    (
        "covid-chestxray",
        "covid_chestxray",
        "finding",
        "patientid",
        {"date", "url", "doi", "clinical_notes", "survival", "license", "Unnamed: 28"},
    ),
    ("kermany-cxr", "kermany_cxr", "finding", "patientid", {"subtype"}),
]


def _table(n: int = 40) -> pd.DataFrame:
    """A small table with one column of each trap the draft must handle."""
    label = list(np.random.default_rng(0).choice(["yes", "no"], n))
    return pd.DataFrame(
        {
            "patient": [f"P{i // 2}" for i in range(n)],
            "outcome": label,
            "age": [str(20 + i) if i % 7 else "unknown" for i in range(n)],
            "score": [str(i % 9 + 1) if i % 5 else "-1" for i in range(n)],
            "smoker": ["Y", "N", "N", "?"] * (n // 4),
            "site": ["A", "A", "B", "C"] * (n // 4),
            "how_known": ["biopsy" if v == "yes" else "follow-up" for v in label],
            "ward": ["icu"] * n,
            "survived": ["Y", "N"] * (n // 2),
            "credit": ["Case courtesy of a long list of contributors, thank you"] * (n - 1) + ["x"],
            "note": [f"patient seen on day {i} with a long free text note" for i in range(n)],
        }
    )


@pytest.fixture()
def small_folder(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    _table().to_csv(folder / "metadata.csv", index=False)
    return folder


def test_draft_of_a_small_table_declares_kinds_tokens_and_exclusions(small_folder):
    schema = parse_schema(draft_schema(small_folder))
    assert schema.label.column == "outcome" and set(schema.classes) == {"yes", "no"}
    assert schema.group == "patient" and schema.image_column is None
    kinds = {f.name: f for f in schema.features}
    assert set(kinds) == {"age", "score", "smoker", "site"}
    assert kinds["age"].type == "numeric" and kinds["age"].missing_tokens == ("unknown",)
    assert kinds["age"].range[0] == 0 and kinds["age"].range[1] > 59  # observed 21 to 59, widened
    assert kinds["score"].missing_tokens == ("-1",)  # -1 where every other value is positive
    assert kinds["smoker"].type == "binary" and kinds["smoker"].categories == ("N", "Y")
    assert kinds["smoker"].missing_tokens == ("?",)
    assert kinds["site"].categories == ("A", "B", "C")  # in order of frequency
    assert schema.excluded["how_known"].startswith("leak")
    assert schema.excluded["ward"].startswith("constant")
    assert schema.excluded["note"].startswith("free text")
    assert schema.excluded["survived"].startswith("outcome") and schema.excluded["credit"].startswith("provenance")
    assert "patient" not in schema.excluded and "patient" not in kinds  # the group is never a feature


def test_the_missing_count_includes_the_rows_a_token_makes_missing(small_folder):
    text = draft_schema(small_folder)
    score = text.split("[features.score]", 1)[1].split("[features.", 1)[0]
    age = text.split("[features.age]", 1)[1].split("[features.", 1)[0]
    assert "# 8 of 40 rows missing" in score  # every fifth score is -1, the column's token
    assert "# 6 of 40 rows missing" in age  # every seventh age is 'unknown'


def test_draft_label_flag_and_errors(small_folder, tmp_path):
    assert parse_schema(draft_schema(small_folder, label="smoker")).label.column == "smoker"
    with pytest.raises(ValueError, match="'nope' is not a column"):
        draft_schema(small_folder, label="nope")
    with pytest.raises(FileNotFoundError, match=r"metadata\.csv"):
        draft_schema(tmp_path / "empty")


def test_command_prints_writes_and_refuses_to_overwrite(small_folder, tmp_path, capsys):
    assert main(["draft", "--data", str(small_folder)]) == 0
    printed = capsys.readouterr().out
    parse_schema(printed)
    out = tmp_path / "draft.toml"
    assert main(["draft", "--data", str(small_folder), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == printed
    out.write_text("kept", encoding="utf-8")
    assert main(["draft", "--data", str(small_folder), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text(encoding="utf-8") == "kept"
    assert main(["draft", "--data", str(tmp_path / "missing")]) == 2


def test_draft_of_the_synthetic_folder_matches_its_schema(folder_dataset):
    schema = parse_schema(draft_schema(folder_dataset))
    shipped = load_schema("synthetic")
    raws = {raw for values in schema.label.values.values() for raw in values}
    assert schema.label.column == "diagnosis" and raws == {raw for v in shipped.label.values.values() for raw in v}
    assert (schema.group, schema.image_column, schema.image_folder) == ("patient_id", "image", "images")
    assert {f.name for f in schema.features} >= {"age", "temperature", "spo2", "wbc", "lymphocytes", "crp"}
    features = {f.name: f for f in schema.features}
    assert features["age"].type == "numeric" and features["spo2"].range[1] == 100  # a percentage stops at 100


def test_train_runs_right_after_the_draft(folder_dataset, tmp_path):
    from fusion.train import main as train

    path = tmp_path / "draft.toml"
    assert main(["draft", "--data", str(folder_dataset), "--out", str(path)]) == 0
    out = tmp_path / "run"
    argv = ["--data", str(folder_dataset), "--schema", str(path), "--image-size", "32", "--epochs", "1"]
    assert train([*argv, "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(("folder", "shipped", "label", "group", "leaks"), REAL, ids=[r[0] for r in REAL])
def test_draft_of_a_real_folder(folder, shipped, label, group, leaks):
    path = SHARED_DATA / folder
    if not (path / "metadata.csv").is_file():
        pytest.skip(f"{path} is absent (real data lie in ../shared/data)")
    schema = parse_schema(draft_schema(path), origin=f"draft of {folder}")
    assert (schema.label.column, schema.group, schema.image_column) == (label, group, "filename")
    assert leaks <= set(schema.excluded)
    assert group not in {f.name for f in schema.features}
    kept = load_dataset(path, schema, image_size=16, modalities=("tabular",))
    assert len(kept.labels) == len(load_dataset(path, shipped, image_size=16, modalities=("tabular",)).labels)
