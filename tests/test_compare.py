"""``fusion compare``: the table, the files, paired differences and their absence, errors;
and the per-row predictions a run folder keeps for it."""

import csv
import json
import shutil

import numpy as np
import pytest

from fusion.__main__ import main as fusion_main
from fusion.compare import METRICS, compare_runs, csv_text, main, markdown, read_run
from fusion.errors import ModelFolderError
from fusion.evaluation import classification_metrics
from fusion.evaluation.predictions import read_predictions


def _train(out, *extra):
    from fusion.train import main as train

    args = ["--modalities", "tabular", "--model", "xgboost", "--synthetic-n", "120", "--out", str(out), "--quiet"]
    assert train([*args, *extra]) == 0
    return out


@pytest.fixture(scope="module")
def other_data(tmp_path_factory):
    """An XGBoost run on a larger synthetic cohort: other rows than the tiny runs'."""
    return _train(tmp_path_factory.mktemp("other") / "bigger", "--synthetic-n", "150")


@pytest.fixture()
def copied(tmp_path, tiny_runs):
    """A copy of a tiny run, to change without touching the session's."""

    def copy(name: str, as_name: str):
        return shutil.copytree(tiny_runs[name], tmp_path / as_name)

    return copy


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def _cell(value, interval):
    return f"{value:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def test_table_holds_every_run_with_its_intervals(tiny_runs):
    names = ["fused", "image", "tabular", "xgboost"]
    cmp = compare_runs([tiny_runs[n] for n in names])
    text = markdown(cmp)
    for n in names:
        test = _metrics(tiny_runs[n])["test"]
        row = next(line for line in text.splitlines() if line.startswith(f"| {n} "))
        for key, _ in METRICS.values():
            assert _cell(test[key], test["intervals"][key]) in row, (n, key)
    assert [r.modalities for r in cmp.runs] == [("image", "tabular"), ("image",), ("tabular",), ("tabular",)]
    assert [r.strategy for r in cmp.runs] == ["joint", "joint", "joint", "xgboost"]
    assert cmp.runs[0].head == "concat" and cmp.runs[3].head == "-"
    assert {r.n for r in cmp.runs} == {_metrics(tiny_runs["fused"])["n_test"]}


def test_command_writes_markdown_csv_and_png(tiny_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = [str(tiny_runs["fused"]), str(tiny_runs["xgboost"]), "--metric", "macro_auroc", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "macro AUROC" in printed and "macro-F1" not in printed  # only the metric asked for
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.md", "comparison.png"]
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| fused " in (out / "comparison.md").read_text() and "comparison.png" in (out / "comparison.md").read_text()
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["run"] for r in rows] == ["fused", "xgboost"]
    test = _metrics(tiny_runs["xgboost"])["test"]
    assert float(rows[1]["macro_auroc"]) == test["auroc_macro"]
    assert float(rows[1]["macro_auroc_low"]) == test["intervals"]["auroc_macro"]["low"]
    assert rows[0]["diff_macro_auroc"] == "" and rows[1]["diff_macro_auroc"] != ""
    # outputs never replace a file
    assert main(args) == 2
    assert "already holds comparison.md" in capsys.readouterr().err


def test_paired_differences_for_runs_on_the_same_rows(tiny_runs):
    cmp = compare_runs([tiny_runs["fused"], tiny_runs["image"], tiny_runs["xgboost"]])
    assert sorted(cmp.differences) == [1, 2] and not cmp.notes
    ref = _metrics(tiny_runs["fused"])["test"]
    for i, name in ((1, "image"), (2, "xgboost")):
        mine = _metrics(tiny_runs[name])["test"]
        d = cmp.differences[i]
        assert d["rows"] == _metrics(tiny_runs[name])["n_test"]
        for key, _ in METRICS.values():
            # the difference of the run's own figures: the file holds what it scored
            assert d[key]["point"] == pytest.approx(mine[key] - ref[key], abs=1e-9), (name, key)
            assert d[key]["low"] <= d[key]["point"] <= d[key]["high"]
    assert "Δ macro AUROC" in markdown(cmp) and "reference" in markdown(cmp)


def test_a_run_against_itself_differs_by_exactly_zero(tiny_runs):
    run = tiny_runs["tabular"]
    cmp = compare_runs([run, run])
    for key, _ in METRICS.values():
        assert cmp.differences[1][key] == {"point": 0.0, "low": 0.0, "high": 0.0}


def test_the_paired_bootstrap_is_seeded(tiny_runs):
    runs = [tiny_runs["fused"], tiny_runs["tabular"]]
    assert compare_runs(runs, seed=3).differences == compare_runs(runs, seed=3).differences


def test_no_paired_difference_for_runs_on_other_rows(tiny_runs, other_data):
    cmp = compare_runs([tiny_runs["xgboost"], other_data])
    assert not cmp.differences
    assert "no paired difference" in cmp.notes[1] and "other rows" in cmp.notes[1]
    assert "other rows" in markdown(cmp)
    assert "Δ" not in markdown(cmp)  # no column of differences when nothing is paired


def test_pairs_on_the_shared_rows_when_a_few_differ(tiny_runs, copied):
    run = copied("xgboost", "fewer")
    lines = (run / "predictions_test.csv").read_text().splitlines(keepends=True)
    (run / "predictions_test.csv").write_text("".join(lines[:-1]))  # one row less (of ~20)
    cmp = compare_runs([tiny_runs["xgboost"], run])
    assert cmp.differences[1]["rows"] == len(lines) - 2
    assert "paired on the rows both scored" in cmp.notes[1]


def test_an_old_run_without_predictions_compares_without_pairing(tiny_runs, copied):
    old = copied("xgboost", "old")
    for name in ("predictions_test.csv", "predictions_val.csv"):
        (old / name).unlink()
    cmp = compare_runs([tiny_runs["fused"], old])
    assert not cmp.differences
    assert "no predictions_test.csv" in cmp.notes[1]
    assert _cell(_metrics(old)["test"]["auroc_macro"], _metrics(old)["test"]["intervals"]["auroc_macro"]) in (
        markdown(cmp)
    )


def test_runs_with_other_classes_are_shown_with_a_warning_never_paired(tiny_runs, copied):
    renamed = copied("xgboost", "renamed")
    metrics = _metrics(renamed)
    metrics["classes"] = ["a", "b", "c"]
    (renamed / "metrics.json").write_text(json.dumps(metrics))
    cmp = compare_runs([tiny_runs["xgboost"], renamed])
    assert not cmp.differences and "other classes" in cmp.notes[1]
    text = markdown(cmp)
    assert "| classes " in text and "a / b / c" in text
    assert "warning: renamed: other classes than the reference" in text and "not comparable" in text


def test_a_folder_without_metrics_is_a_clear_error(tiny_runs, tmp_path, capsys):
    empty = tmp_path / "unfinished"
    empty.mkdir()
    with pytest.raises(ModelFolderError, match=r"unfinished.*holds no metrics\.json") as err:
        read_run(empty)
    assert err.value.file == str(empty / "metrics.json")
    assert main([str(tiny_runs["fused"]), str(empty), "--out", str(tmp_path / "cmp")]) == 2
    message = capsys.readouterr().err
    assert message.startswith("error: run folder") and "metrics.json" in message and "Traceback" not in message
    assert not (tmp_path / "cmp").exists()
    with pytest.raises(ModelFolderError, match="does not exist"):
        read_run(tmp_path / "nowhere")


def test_a_run_without_the_split_names_the_other(tiny_runs, copied):
    run = copied("xgboost", "no_test")
    metrics = _metrics(run)
    metrics["test"] = None
    (run / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ModelFolderError, match=r"no test split; it has a val split \(--split val\)"):
        read_run(run)
    assert read_run(run, "val").n == metrics["n_val"]


def test_the_output_is_never_inside_a_run_folder(tiny_runs, capsys):
    assert main([str(tiny_runs["xgboost"]), "--out", str(tiny_runs["xgboost"] / "cmp")]) == 2
    assert "inside the run folder" in capsys.readouterr().err
    assert not (tiny_runs["xgboost"] / "cmp").exists()


def test_an_evaluation_output_compares_too(tiny_runs, tmp_path):
    from fusion.evaluate import main as evaluate

    scores = tmp_path / "scores.json"
    assert evaluate(["--model", str(tiny_runs["xgboost"]), "--out", str(scores)]) == 0
    cmp = compare_runs([tiny_runs["xgboost"], scores])
    run = cmp.runs[1]
    assert run.name == "scores" and run.strategy == "xgboost" and run.seconds is None
    assert run.values["auroc_macro"] == json.loads(scores.read_text())["auroc_macro"]
    assert "no per-row predictions" in cmp.notes[1]
    assert "scores" in csv_text(cmp)


def test_reference_flag_chooses_the_run_compared_with(tiny_runs):
    runs = [tiny_runs["fused"], tiny_runs["xgboost"]]
    cmp = compare_runs(runs, reference=tiny_runs["xgboost"])
    assert cmp.reference == 1 and sorted(cmp.differences) == [0]


def test_help_through_the_fusion_command(capsys):
    with pytest.raises(SystemExit) as done:
        fusion_main(["compare", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fusion compare ") and "--metric" in out and "--reference" in out


def test_predictions_file_holds_every_test_row(tiny_runs):
    for name in ("fused", "xgboost"):
        run = tiny_runs[name]
        metrics = _metrics(run)
        predictions = read_predictions(run / "predictions_test.csv")
        assert len(predictions) == metrics["n_test"] and len(set(predictions.keys)) == len(predictions)
        assert predictions.classes == tuple(metrics["classes"])
        np.testing.assert_allclose(predictions.proba.sum(axis=1), 1.0, atol=1e-6)
        assert predictions.groups is not None and all(predictions.groups)
        # the file's probabilities and labels give the run's own figures
        again = classification_metrics(
            predictions.labels, predictions.proba, predictions.classes, pred=predictions.predicted
        )
        for key in ("accuracy", "macro_f1", "auroc_macro"):
            assert again[key] == pytest.approx(metrics["test"][key], abs=1e-12), (name, key)
        assert len(read_predictions(run / "predictions_val.csv")) == metrics["n_val"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("key,label\nx,a\n", "header"),
        ("row_key,group,label,predicted,p_a,p_b\nx,P1,a,a,0.5,high\n", "row"),
        ("row_key,group,label,predicted,p_a,p_b\nx,P1,c,a,0.5,0.5\n", "row"),
    ],
)
def test_a_malformed_predictions_file_is_refused_naming_it(tmp_path, text, field):
    path = tmp_path / "predictions_test.csv"
    path.write_text(text)
    with pytest.raises(ModelFolderError, match=r"predictions_test\.csv") as err:
        read_predictions(path)
    assert err.value.file == str(path) and err.value.field == field


def test_quiet_prints_where_the_files_went_and_warnings_go_to_stderr(tiny_runs, copied, tmp_path, capsys):
    renamed = copied("xgboost", "renamed")
    metrics = _metrics(renamed)
    metrics["classes"] = ["a", "b", "c"]
    (renamed / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "cmp"
    assert main([str(tiny_runs["xgboost"]), str(renamed), "-q", "--out", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert printed.strip() == f"written to {out}: comparison.md, comparison.csv, comparison.png"
    assert err.startswith("warning: renamed: other classes than the reference") and err.count("\n") == 1
    assert "warning: renamed" in (out / "comparison.md").read_text()


def test_the_footnote_names_the_unit_the_intervals_resampled(tiny_runs, copied):
    lesions = copied("fused", "lesions")
    metrics = _metrics(lesions)
    metrics["test"]["intervals"]["unit"] = "lesion"
    (lesions / "metrics.json").write_text(json.dumps(metrics))
    assert "bootstrap over lesions" in markdown(compare_runs([lesions, tiny_runs["image"]]))
    assert "bootstrap over patients" in markdown(compare_runs([tiny_runs["fused"], tiny_runs["image"]]))
