"""The shipped schemas against the real cohorts in ../shared/data (skipped where absent):
every row loads, and a model trained on one folder is scored on another of the same
layout, as a withheld test folder would be."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from fusion import load_dataset
from fusion.evaluate import main as evaluate_main
from fusion.train import main as train_main
from tests.conftest import SHARED_DATA

COVID = SHARED_DATA / "covid-chestxray"
NIH = SHARED_DATA / "nih-pneumonia"
KERMANY = SHARED_DATA / "kermany-cxr"
HAM = SHARED_DATA / "ham10000"


@pytest.mark.skipif(not NIH.is_dir(), reason="../shared/data/nih-pneumonia is not on this machine")
def test_nih_schema_loads_every_row_and_keeps_the_shortcuts_out():
    ds = load_dataset(NIH, "nih_pneumonia", modalities=("tabular",))
    table = pd.read_csv(NIH / "metadata.csv")
    assert len(ds) == len(table) and ds.classes == ("no_finding", "pneumonia")
    columns = {f.name for f in ds.schema.features}
    assert {"age", "sex", "view", "follow_up"} <= columns
    assert not columns & {"finding_labels", "original_width", "original_height", "pixel_spacing_x"}


@pytest.mark.skipif(not HAM.is_dir(), reason="../shared/data/ham10000 is not on this machine")
def test_ham10000_schema_keeps_every_row_and_counts_the_values_not_known():
    ds = load_dataset(HAM, "ham10000", modalities=("tabular",))
    table = pd.read_csv(HAM / "metadata.csv", dtype=str, keep_default_na=False)
    # Every row kept: "unknown" (sex, body site) and age 0 are missing values, not reasons to skip.
    assert len(ds) == len(table) == 7511 and not ds.skipped
    assert ds.classes == ("nv", "mel", "bkl", "bcc", "akiec", "vasc", "df")
    assert len(set(ds.groups)) == table["lesion_id"].nunique()
    unknown = {c: int((table[c] == "unknown").sum()) for c in ("sex", "localization")}
    assert ds.missing_tokens == {
        "age": {"0": int((table["age"] == "0.0").sum())},
        "sex": {"unknown": unknown["sex"]},
        "localization": {"unknown": unknown["localization"]},
    }
    assert ds.records.isna().sum().to_dict() == {
        "age": int(table["age"].isin(["", "0.0"]).sum()),
        **unknown,
    }
    # Every column has a role; the leak and the id are excluded with their reasons.
    assert not ds.schema.undeclared_columns(table.columns)
    assert "follow_up occurs only for naevi" in ds.schema.excluded["dx_type"] and "image_id" in ds.schema.excluded
    assert all((HAM / "images" / name).is_file() for name in table["filename"].iloc[::500])


@pytest.mark.skipif(not KERMANY.is_dir(), reason="../shared/data/kermany-cxr is not on this machine")
def test_kermany_schema_names_the_label_and_patient_columns_of_the_table():
    from fusion.schema import load_schema

    schema = load_schema("kermany_cxr")
    table = pd.read_csv(KERMANY / "metadata.csv", nrows=50)
    assert schema.label.column in table.columns and schema.group in table.columns
    accepted = {v for values in schema.label.values.values() for v in values}
    assert set(table[schema.label.column]) <= accepted


@pytest.mark.skipif(not COVID.is_dir(), reason="../shared/data/covid-chestxray is not on this machine")
def test_a_covid_model_is_scored_on_another_folder_of_the_same_layout(tmp_path, capsys):
    # The other folder: forty of the films, their rows, and the same layout (a hospital's
    # new export, or a withheld test folder).
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    table = pd.read_csv(COVID / "metadata.csv").iloc[::10].head(40)
    for name in table["filename"]:
        (other / "images" / name).symlink_to(COVID / "images" / name)
    table.to_csv(other / "metadata.csv", index=False)
    run = tmp_path / "run"
    schema = "data/schema/covid_chestxray.toml"
    # The films are links to the shared folder: the schema that scores them says so.
    linked = tmp_path / "linked.toml"
    linked.write_text(Path(schema).read_text().replace('folder = "images"', 'folder = "images"\nallow_outside = true'))
    # The default command but for one epoch (the suite's time): no other flag.
    args = ["--data", str(COVID), "--schema", schema, "--modalities", "image,tabular", "--epochs", "1"]
    assert train_main([*args, "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "scores.json"
    assert evaluate_main(["--model", str(run), "--data", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err  # the warning as the command shows it: one line
    assert re.search(r"^warning: .*40 row.* outside the dataset folder.*allow_outside = true", err, flags=re.M)
    assert "no valid rows to score (40 skipped)" in err
    assert evaluate_main(["--model", str(run), "--data", str(other), "--schema", str(linked), "--out", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert scores["n"] + len(scores["skipped"]) == 40 and scores["n"] >= 35
    assert 0.0 <= scores["accuracy"] <= 1.0 and "intervals" in scores
