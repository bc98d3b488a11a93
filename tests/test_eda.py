import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusion.data import load_dataset, read_table
from fusion.eda import (
    class_balance,
    duplicate_images,
    leak_candidates,
    main,
    missingness_by_class,
    predictive_missingness,
    run_eda,
    skipped_summary,
)
from fusion.schema import load_schema
from tests.conftest import SHARED_DATA

COVID = SHARED_DATA / "covid-chestxray"
PMNIST = SHARED_DATA / "pneumoniamnist" / "pneumoniamnist_trainval.npz"


def _summary(report):
    return json.loads((report.parent / "summary.json").read_text())


def _links(report):
    return set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text()))


# ------------------------------------------------------------------ folder data


@pytest.fixture
def quick_figures(monkeypatch):
    """The report's figures as one-pixel PNGs: the tests of the output folder check which
    files are written, replaced and kept, not what the figures show (drawing them costs
    about a second per analysis)."""
    from PIL import Image

    from fusion.eda import sections

    def draw(*args, **kwargs):
        path = next(a for a in (*args, *kwargs.values()) if isinstance(a, Path) and a.suffix == ".png")
        Image.new("L", (1, 1)).save(path)

    for name in dir(sections):
        if name.startswith("plot_"):
            monkeypatch.setattr(sections, name, draw)


def test_report_links_every_png_it_writes(folder_dataset, tmp_path):
    report = run_eda(folder_dataset, "synthetic", tmp_path / "eda", image_size=32)
    assert report == tmp_path / "eda" / "report.md" and report.is_file()
    pngs = {p.name for p in report.parent.glob("*.png")}
    assert pngs == _links(report)
    assert {"class_balance.png", "missingness.png", "features.png", "images_per_patient.png", "samples.png"} <= pngs
    summary = _summary(report)
    assert summary["n_rows"] == 90 and summary["n_skipped"] == 0
    assert summary["classes"] == ["covid", "pneumonia", "normal"]
    assert "## Warnings" in report.read_text()


def test_rerun_replaces_an_earlier_report_but_never_a_foreign_folder(folder_dataset, tmp_path, quick_figures):
    out = tmp_path / "eda"
    run_eda(folder_dataset, "synthetic", out, image_size=16)
    (out / "notes.txt").write_text("my notes")  # a file of the user's, beside the analysis
    report = run_eda(folder_dataset, "synthetic", out, image_size=16)
    assert {p.name for p in out.glob("*.png")} == _links(report)
    assert (out / "notes.txt").read_text() == "my notes"
    foreign = tmp_path / "other"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        run_eda(folder_dataset, "synthetic", foreign, image_size=16)


def test_a_rerun_leaves_no_stale_figure_of_the_earlier_analysis(folder_dataset, tmp_path, quick_figures):
    """The first analysis draws the image figures; the second (an image-free table)
    does not, and the first run's image figures must not survive beside the new report."""
    out = tmp_path / "eda"
    first = run_eda(folder_dataset, "synthetic", out, image_size=16)
    assert {"samples.png", "intensity.png"} <= _links(first)
    (tmp_path / "table").mkdir()
    csv = tmp_path / "table" / "metadata.csv"
    table = read_table(folder_dataset / "metadata.csv").drop(columns=["image"])
    table.to_csv(csv, index=False)
    schema = tmp_path / "table" / "schema.toml"
    text = load_schema("synthetic").text
    schema.write_text(text.replace('[image]\ncolumn = "image"\nfolder = "images"\n', ""))
    second = run_eda(csv, schema, out, image_size=16)
    assert "samples.png" not in _links(second)
    assert {p.name for p in out.glob("*.png")} == _links(second)


def _films(folder):
    return sorted((p.name, p.read_bytes()) for p in (folder / "images").iterdir())


def test_out_at_the_image_folder_holding_a_report_md_deletes_no_film(folder_dataset):
    """The reported data loss: --out at the dataset's images/ folder, which held a note
    called report.md, deleted every film."""
    images = folder_dataset / "images"
    (images / "report.md").write_text("notes on the films")
    (images / "summary.json").write_text("{}")
    before = _films(folder_dataset)
    with pytest.raises(ValueError, match="input"):
        run_eda(folder_dataset, "synthetic", images, image_size=16)
    assert _films(folder_dataset) == before


def test_a_folder_with_a_report_md_but_no_record_of_an_analysis_is_refused(folder_dataset, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "report.md").write_text("my report")
    (out / "figure.png").write_bytes(b"my figure")
    with pytest.raises(ValueError, match="not empty"):
        run_eda(folder_dataset, "synthetic", out, image_size=16)
    assert (out / "report.md").read_text() == "my report" and (out / "figure.png").read_bytes() == b"my figure"


@pytest.mark.parametrize("where", ["dataset", "parent", "symlink", "inside", "csv", "schema"])
def test_out_that_is_contains_or_lies_inside_an_input_is_refused(folder_dataset, tmp_path, where):
    schema = folder_dataset.parent / "mine.toml"
    schema.write_text(load_schema("synthetic").text)
    link = tmp_path / "link"
    link.symlink_to(folder_dataset, target_is_directory=True)
    out = {
        "dataset": folder_dataset,
        "parent": folder_dataset.parent,
        "symlink": link,
        "inside": folder_dataset / "eda",
        "csv": folder_dataset / "metadata.csv",
        "schema": schema,
    }[where]
    (folder_dataset / "report.md").write_text("about this dataset")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="input"):
        run_eda(folder_dataset, schema, out, image_size=16)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_tampered_record_of_written_files_deletes_nothing_else(folder_dataset, tmp_path, quick_figures):
    """The record of what an earlier analysis wrote decides what a rerun deletes; it
    names files inside the folder only, and only regular files are removed."""
    out = tmp_path / "eda"
    run_eda(folder_dataset, "synthetic", out, image_size=16)
    keep = tmp_path / "keep.png"
    keep.write_bytes(b"outside")
    (out / "linked.png").symlink_to(keep)
    record = out / ".fusion-eda.json"
    written = json.loads(record.read_text())
    written["files"] += ["../keep.png", str(keep), "linked.png", "notes.txt"]
    record.write_text(json.dumps(written))
    (out / "notes.txt").write_text("mine")
    run_eda(folder_dataset, "synthetic", out, image_size=16)
    assert keep.read_bytes() == b"outside" and (out / "notes.txt").read_text() == "mine"
    assert (out / "linked.png").is_symlink()


def test_a_file_of_the_users_is_never_replaced_by_a_figure(folder_dataset, tmp_path, quick_figures):
    out = tmp_path / "eda"
    run_eda(folder_dataset, "synthetic", out, image_size=16)
    record = out / ".fusion-eda.json"
    written = json.loads(record.read_text())
    written["files"].remove("samples.png")  # as if the user had put samples.png there
    record.write_text(json.dumps(written))
    (out / "samples.png").write_bytes(b"the user's own")
    with pytest.raises(ValueError, match=r"samples\.png"):
        run_eda(folder_dataset, "synthetic", out, image_size=16)
    assert (out / "samples.png").read_bytes() == b"the user's own"


def test_a_full_disk_names_the_output_folder(folder_dataset, tmp_path, monkeypatch, capsys):
    import errno

    from fusion.eda import sections

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sections, "plot_missingness", full)
    out = tmp_path / "eda"
    assert main(["--data", str(folder_dataset), "--schema", "synthetic", "--out", str(out), "--image-size", "16"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(out) in err and "No space left on device" in err and "free" in err


def test_missingness_by_class_is_exact_on_a_hand_made_table():
    schema = load_schema("synthetic")
    table = pd.DataFrame(
        {
            "diagnosis": [
                "COVID-19",
                "COVID-19",
                "COVID-19",
                "Bacterial pneumonia",
                "Bacterial pneumonia",
                "No Finding",
                "Tuberculosis",
            ],
            "age": ["", "50", "NA", "40", "30", "", "20"],
            "spo2": ["90", "91", "92", "", "n/a", "99", ""],
        }
    )
    got = missingness_by_class(table, schema, columns=["age", "spo2"])
    # The Tuberculosis row has no class in this schema and is left out.
    expected = pd.DataFrame(
        {"covid": [2 / 3, 0.0], "pneumonia": [0.0, 1.0], "normal": [1.0, 0.0], "all": [3 / 6, 2 / 6]},
        index=pd.Index(["age", "spo2"], name="column"),
    )
    pd.testing.assert_frame_equal(got, expected)
    # Parsed records (NaN / None) with explicit labels give the same numbers.
    parsed = pd.DataFrame(
        {"age": [math.nan, 50.0, math.nan, 40.0, 30.0, math.nan], "sex": [None, "F", "M", None, None, "F"]}
    )
    got = missingness_by_class(parsed, schema, labels=[0, 0, 0, 1, 1, 2], columns=["age", "sex"])
    assert got.loc["age"].tolist() == [2 / 3, 0.0, 1.0, 0.5]
    assert got.loc["sex"].tolist() == [1 / 3, 1.0, 0.0, 0.5]


def test_missingness_by_class_names_a_bad_label_array():
    table = pd.DataFrame({"age": ["1", "2"]})
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        missingness_by_class(table, load_schema("synthetic"), labels=[0, 1, 2])
    with pytest.raises(ValueError, match="label column 'diagnosis'"):
        missingness_by_class(table, load_schema("synthetic"))


def test_planted_class_dependent_missingness_is_flagged(folder_dataset, tmp_path, quick_figures):
    table = read_table(folder_dataset / "metadata.csv")
    table.loc[table["diagnosis"] == "COVID-19", "crp"] = ""  # never measured for one class
    table.to_csv(folder_dataset / "metadata.csv", index=False)
    summary = _summary(run_eda(folder_dataset, "synthetic", tmp_path / "eda", image_size=16))
    assert "crp" in summary["missingness_flagged"]
    assert any("'crp'" in w and "never filled for covid" in w for w in summary["warnings"])


def test_missingness_independent_of_class_is_not_flagged():
    labels = np.repeat([0, 1, 2], 40)
    table = pd.DataFrame({"lab": np.where(np.arange(120) % 4 == 0, np.nan, 1.0)})  # 25% missing in every class
    got = predictive_missingness(table, labels, ["a", "b", "c"])
    assert not got.loc["lab", "flagged"] and got.loc["lab", "spread"] == 0.0
    assert got.loc["lab", "indicator_auroc"] == 0.5
    # A rare value (too few filled rows to judge) is not flagged even if it sits in one class.
    rare = pd.DataFrame({"lab": [1.0] * 3 + [np.nan] * 117})
    assert not predictive_missingness(rare, labels, ["a", "b", "c"]).loc["lab", "flagged"]


@pytest.mark.parametrize("per", ["row", "label"])
def test_planted_leak_column_is_flagged(folder_dataset, tmp_path, per, quick_figures):
    table = read_table(folder_dataset / "metadata.csv")
    slug = table["diagnosis"].str.replace(" ", "-").str.lower()
    # A URL that names the source: unique per row, or one per label.
    table["url"] = "https://" + slug + ".example.org" + (("/case/" + table.index.astype(str)) if per == "row" else "")
    table["scanner"] = np.where(np.arange(len(table)) % 2 == 0, "A", "B")  # unrelated to the label
    table.to_csv(folder_dataset / "metadata.csv", index=False)
    with pytest.warns(UserWarning, match="url"):
        report = run_eda(folder_dataset, "synthetic", tmp_path / "eda", image_size=16)
    summary = _summary(report)
    assert summary["leak_flagged"]["url"] == "undeclared"
    assert "scanner" not in summary["leak_flagged"]
    assert set(summary["undeclared_columns"]) == {"url", "scanner"}
    assert any("'url' looks like a leak" in w for w in summary["warnings"])


def test_leak_candidates_rules_on_small_tables():
    labels = np.repeat([0, 1], 20)
    groups = np.arange(40) // 2  # two films per patient
    table = pd.DataFrame(
        {
            "hospital": np.where(labels == 0, "North", "South"),  # a source per class
            "sex": np.tile(["F", "M"], 20),  # independent of the label
            "offset": np.where(labels == 0, -20.0, 5.0) + np.arange(40) % 3,  # separates the classes
            "note": [f"case {g}" for g in groups],  # one per patient: an identifier
            "survival": np.where(labels == 0, "Y", ""),  # filled only for one class
            "constant": "X-ray",
        }
    )
    got = leak_candidates(table, labels, ["a", "b"], groups=groups, numeric=["offset"])
    assert got.loc["hospital", "flagged"] and got.loc["hospital", "across_patients"] == pytest.approx(1.0)
    assert got.loc["note", "flagged"] and got.loc["note", "across_patients"] == pytest.approx(0.0)
    assert got.loc["offset", "flagged"] and got.loc["offset", "value_auroc"] == 1.0
    assert got.loc["survival", "presence_flagged"] and got.loc["survival", "flagged"]
    assert not got.loc["sex", "flagged"] and got.loc["sex", "label_U"] == pytest.approx(0.0)
    assert got.loc["constant", "kind"] == "constant" and not got.loc["constant", "flagged"]
    assert list(got.index[: got["flagged"].sum()]) == list(got.index[got["flagged"]])  # flagged first


def test_skipped_rows_are_counted_by_reason(folder_dataset, tmp_path, quick_figures):
    table = read_table(folder_dataset / "metadata.csv")
    table.loc[0, "age"] = "abc"
    table.loc[1, "age"] = "200"
    table.loc[2, "image"] = "missing.png"
    table.to_csv(folder_dataset / "metadata.csv", index=False)
    report = run_eda(folder_dataset, "synthetic", tmp_path / "eda", image_size=16)
    summary = _summary(report)
    assert summary["n_skipped"] == 3 and summary["n_rows"] == 87
    assert summary["skipped_reasons"] == {"age: invalid value": 2, "image: no such file": 1}
    assert "3 rows were not loaded" in report.read_text()
    frame = skipped_summary(
        [
            {
                "row": 7,
                "file": None,
                "reason": "'age' must be a number in [0, 120] years; got 'x'; label 'diagnosis' is missing",
            }
        ]
    )
    assert frame["rows"].to_dict() == {"age: invalid value": 1, "label: missing": 1}


def test_values_declared_not_known_are_counted_not_skipped(folder_dataset, tmp_path, quick_figures):
    table = read_table(folder_dataset / "metadata.csv")
    table.loc[[0, 1], "sex"] = "unknown"
    table.to_csv(folder_dataset / "metadata.csv", index=False)
    schema = tmp_path / "schema.toml"
    text = (Path(__file__).parents[1] / "data" / "schema" / "synthetic.toml").read_text()
    schema.write_text(text.replace('categories = ["F", "M"]', 'categories = ["F", "M"]\nmissing_tokens = ["unknown"]'))
    report = run_eda(folder_dataset, str(schema), tmp_path / "eda", image_size=16)
    summary = _summary(report)
    assert summary["n_skipped"] == 0 and summary["missing_tokens"] == {"sex": {"unknown": 2}}
    assert "kept as missing: sex 'unknown' (2)" in report.read_text()


def test_class_balance_counts_images_patients_and_splits():
    got = class_balance([0, 0, 1, 1, 1], ["a", "b"], groups=["p", "p", "p", "q", "r"])
    assert got["images"].tolist() == [2, 3] and got["patients"].tolist() == [1, 3]
    got = class_balance([0, 1, 1, 0], ["a", "b"], splits={"train": np.array([0, 1, 2]), "val": np.array([3])})
    assert got["train"].tolist() == [1, 2] and got["val"].tolist() == [1, 0]


# ---------------------------------------------------------------------- .npz
def test_npz_in_medmnist_layout(tmp_path):
    rng = np.random.default_rng(0)
    parts = {}
    for split, n in [("train", 30), ("val", 10), ("test", 10)]:
        parts[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        parts[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    parts["val_images"][0] = parts["train_images"][0]  # the same image in two splits
    path = tmp_path / "mini.npz"
    np.savez(path, **parts)
    report = run_eda(path, "pneumoniamnist", tmp_path / "eda")
    text = report.read_text()
    assert (
        {p.name for p in report.parent.glob("*.png")}
        == _links(report)
        == {"class_balance.png", "intensity.png", "samples.png"}
    )
    assert "Missing values" not in text and "leaks" not in text  # no table, no tabular sections
    assert "| normal | 15 | 5 | 5 | 25 |" in text  # per-split class balance
    summary = _summary(report)
    assert summary["classes"] == ["normal", "pneumonia"] and summary["duplicate_image_sets"] == 1
    assert any("spanning several splits" in w for w in summary["warnings"])


def test_duplicate_images_reports_conflicting_labels():
    images = np.zeros((4, 3, 3), np.uint8)
    images[3] = 9
    got = duplicate_images(images, [0, 0, 1, 1], ["a", "b"], groups=["p", "p", "q", "r"])
    assert len(got) == 1 and got.loc[0, "rows"] == [0, 1, 2]
    assert got.loc[0, "conflict"] and got.loc[0, "crosses"] and got.loc[0, "patients"] == ["p", "q"]


# ---------------------------------------------------------------------- CLI
def test_cli_writes_report_and_prints_warnings(folder_dataset, tmp_path, capsys):
    assert (
        main(
            [
                "--data",
                str(folder_dataset),
                "--schema",
                "synthetic",
                "--out",
                str(tmp_path / "eda"),
                "--image-size",
                "16",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "90 rows loaded, 0 skipped" in out and "report written to" in out
    assert main(["--data", str(tmp_path / "nowhere"), "--schema", "synthetic", "--out", str(tmp_path / "eda2")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ real data
def test_covid_schema_excludes_every_column_with_a_reason():
    schema = load_schema("covid_chestxray")
    assert schema.classes == ("covid", "pneumonia", "normal")
    assert schema.label.encode("COVID-19, ARDS") == 0 and schema.label.encode("Pneumocystis") == 1
    assert schema.label.encode("No Finding") == 2
    assert schema.group == "patientid" and schema.image_column == "filename"
    outcomes = {
        "survival",
        "intubated",
        "intubation_present",
        "went_icu",
        "in_icu",
        "needed_supplemental_O2",
        "extubated",
    }
    provenance = {
        "date",
        "location",
        "folder",
        "doi",
        "url",
        "license",
        "clinical_notes",
        "other_notes",
        "modality",
        "Unnamed: 28",
    }
    assert set(schema.excluded) == outcomes | provenance
    assert all(isinstance(r, str) and r.strip() for r in schema.excluded.values())
    assert schema.feature("pO2_saturation").out_of_range == "missing"


@pytest.mark.skipif(not COVID.is_dir(), reason="../shared/data/covid-chestxray is not on this machine")
def test_covid_loads_nearly_every_row_and_declares_every_column():
    schema = load_schema("covid_chestxray")
    assert schema.undeclared_columns(read_table(COVID / "metadata.csv").columns) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # an undeclared column would warn
        ds = load_dataset(COVID, "covid_chestxray", image_size=32)
    assert len(ds.skipped) <= 5 and len(ds) + len(ds.skipped) == 421
    assert set(np.unique(ds.labels)) == {0, 1, 2}
    # Values that are not saturations (partial pressures from one source) become missing, reported.
    assert any("pO2_saturation='340.0'" in n["reason"] for n in ds.notes)


@pytest.mark.skipif(not COVID.is_dir(), reason="../shared/data/covid-chestxray is not on this machine")
def test_eda_on_covid_chestxray_flags_provenance_leaks(tmp_path):
    report = run_eda(COVID, "covid_chestxray", tmp_path / "eda", image_size=32)
    summary = _summary(report)
    assert {p.name for p in report.parent.glob("*.png")} == _links(report)
    for column in ("url", "doi", "location", "date"):
        assert summary["leak_flagged"].get(column) == "excluded", column
    assert "pO2_saturation" in summary["missingness_flagged"]
    assert summary["undeclared_columns"] == []


@pytest.mark.skipif(not PMNIST.is_file(), reason="../shared/data/pneumoniamnist is not on this machine")
def test_eda_on_pneumoniamnist(tmp_path):
    summary = _summary(run_eda(PMNIST, "pneumoniamnist", tmp_path / "eda"))
    assert summary["n_rows"] == 5231 and summary["classes"] == ["normal", "pneumonia"]
