"""Every command's output options: never over an input, exactly the path reported, and a
failure to write that still leaves the answer printed."""

import json
from pathlib import Path

import pytest

from fusion import synthetic
from fusion.eda import main as eda_main
from fusion.evaluate import main as evaluate_main
from fusion.predict import main as predict_main
from fusion.predict import read_record
from fusion.train import main as train_main


@pytest.fixture()
def patient_files(tmp_path):
    record, image = synthetic.example(seed=4, image_size=64)
    image_path = tmp_path / "film.png"
    image.save(image_path)
    record_path = tmp_path / "record.json"
    record_path.write_text(json.dumps(record))
    return image_path, record_path


def _predict(run, image_path, record, *extra) -> list[str]:
    return ["--model", str(run), "--image", str(image_path), "--record", str(record), *extra]


def test_predict_explain_never_overwrites_its_inputs(tiny_runs, patient_files, capsys):
    image_path, record_path = patient_files
    film = image_path.read_bytes()
    weights = (tiny_runs["fused"] / "model.safetensors").read_bytes()
    for target in (image_path, record_path, tiny_runs["fused"] / "model.safetensors"):
        code = predict_main(_predict(tiny_runs["fused"], image_path, record_path, "--explain", str(target)))
        out, err = capsys.readouterr()
        assert code == 2 and "error: --explain" in err
        assert "covid" in out  # the answer is printed all the same
    assert image_path.read_bytes() == film
    assert (tiny_runs["fused"] / "model.safetensors").read_bytes() == weights


@pytest.mark.parametrize(
    "name, message",
    [
        ("folder", "is a folder"),
        ("existing.png", "already exists"),
        ("missing/why.png", "does not exist"),
        ("why.jpg", "ending in .png"),
        ("why", "ending in .png"),
    ],
)
def test_predict_explain_bad_paths_are_clear_errors_after_the_answer(
    tiny_runs, patient_files, tmp_path, capsys, name, message
):
    image_path, record_path = patient_files
    (tmp_path / "folder").mkdir()
    (tmp_path / "existing.png").write_bytes(b"keep me")
    code = predict_main(_predict(tiny_runs["fused"], image_path, record_path, "--explain", str(tmp_path / name)))
    out, err = capsys.readouterr()
    assert code == 2 and message in err and "Traceback" not in err
    assert out.splitlines()[0].split()[0] in ("covid", "pneumonia", "normal")
    assert (tmp_path / "existing.png").read_bytes() == b"keep me"
    assert not (tmp_path / "folder.png").exists() and not (tmp_path / "why.png").exists()


def test_predict_explain_that_cannot_be_written_is_an_error_after_the_answer(
    tiny_runs, patient_files, tmp_path, capsys, monkeypatch
):
    from fusion.explain import Explanation

    def refuse(self, path):
        raise PermissionError(13, "Permission denied")

    image_path, record_path = patient_files
    monkeypatch.setattr(Explanation, "save", refuse)  # a read-only folder, even for root
    code = predict_main(_predict(tiny_runs["fused"], image_path, record_path, "--explain", str(tmp_path / "why.png")))
    out, err = capsys.readouterr()
    assert code == 2 and "could not write the figure" in err and "Permission denied" in err
    assert "covid" in out and "figure written" not in out


def test_predict_explain_reports_exactly_the_path_written(tiny_runs, patient_files, tmp_path, capsys):
    image_path, record_path = patient_files
    target = tmp_path / "why.png"
    assert predict_main(_predict(tiny_runs["fused"], image_path, record_path, "--explain", str(target), "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["explanation"]["figure"] == str(target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["film.png", "record.json", "why.png"]


def test_long_inline_record_and_missing_record_file(tiny_runs, patient_files, tmp_path, capsys):
    image_path, _ = patient_files
    record = {"age": 61, "spo2": 89, **{f"{k}": None for k in ("temperature", "wbc", "lymphocytes", "crp")}}
    inline = json.dumps(record, indent=40)
    assert len(inline) > 300
    assert read_record(inline)["age"] == 61
    assert predict_main(["--model", str(tiny_runs["fused"]), "--image", str(image_path), "--record", inline]) == 0
    capsys.readouterr()
    assert predict_main(["--model", str(tiny_runs["fused"]), "--record", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        read_record(str(tmp_path / "list.json"))


def test_evaluate_out_never_overwrites_an_input_and_says_where_it_wrote(tiny_runs, folder_dataset, tmp_path, capsys):
    run = tiny_runs["fused"]
    config = (run / "config.json").read_bytes()
    csv = (folder_dataset / "metadata.csv").read_bytes()
    for target in (run / "config.json", folder_dataset / "metadata.csv", folder_dataset):
        code = evaluate_main(["--model", str(run), "--data", str(folder_dataset), "--out", str(target)])
        out, err = capsys.readouterr()
        assert code == 2 and "error: --out" in err and "macro-F1" in out
    assert (run / "config.json").read_bytes() == config and (folder_dataset / "metadata.csv").read_bytes() == csv
    code = evaluate_main(
        ["--model", str(run), "--data", str(folder_dataset), "--out", str(tmp_path / "no" / "scores.json")]
    )
    assert code == 2 and "does not exist" in capsys.readouterr().err
    target = tmp_path / "scores.json"
    assert evaluate_main(["--model", str(run), "--data", str(folder_dataset), "--out", str(target)]) == 0
    assert f"metrics written to {target}" in capsys.readouterr().out
    assert json.loads(target.read_text())["n"] > 0


def test_evaluate_lists_rows_it_could_not_score(tiny_runs, folder_dataset, tmp_path, capsys):
    lines = (folder_dataset / "metadata.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = lines[2].split(",")
    row[header.index("diagnosis")] = "Tuberculosis"
    lines[2] = ",".join(row)
    (folder_dataset / "metadata.csv").write_text("\n".join(lines) + "\n")
    cache = tmp_path / "cache"
    assert (
        evaluate_main(["--model", str(tiny_runs["fused"]), "--data", str(folder_dataset), "--cache-dir", str(cache)])
        == 0
    )
    out = capsys.readouterr().out
    assert "1 row(s) not scored" in out and "row 1" in out and "'Tuberculosis'" in out
    assert any(cache.iterdir())  # --cache-dir is honoured


def test_train_out_refuses_the_data_folder_and_reports_the_run_folder(folder_dataset, tmp_path, capsys):
    before = sorted(p.name for p in folder_dataset.iterdir())
    code = train_main(
        [
            "--data",
            str(folder_dataset),
            "--schema",
            "synthetic",
            "--modalities",
            "tabular",
            "--epochs",
            "1",
            "--out",
            str(folder_dataset),
            "--quiet",
        ]
    )
    assert code == 2 and "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in folder_dataset.iterdir()) == before
    out = tmp_path / "run"
    assert (
        train_main(
            [
                "--data",
                str(folder_dataset),
                "--schema",
                "synthetic",
                "--modalities",
                "tabular",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert f"run saved to {out}" in capsys.readouterr().out


def test_eda_out_refuses_the_data_folder(folder_dataset, capsys):
    before = sorted(p.name for p in folder_dataset.iterdir())
    assert eda_main(["--data", str(folder_dataset), "--schema", "synthetic", "--out", str(folder_dataset)]) == 2
    assert "holds no earlier report.md" in capsys.readouterr().err
    assert sorted(p.name for p in folder_dataset.iterdir()) == before
    assert Path(folder_dataset / "metadata.csv").is_file()


def test_predict_says_when_an_input_is_not_used_and_still_checks_it(tiny_runs, patient_files, tmp_path, capsys):
    image_path, record_path = patient_files
    assert predict_main(_predict(tiny_runs["tabular"], image_path, record_path, "--json")) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["ignored"] == ["image"] and json.loads(out)["modalities"] == ["tabular"]
    assert "note: --image was checked but not used: this model has no image modality" in err
    assert predict_main(_predict(tiny_runs["tabular"], image_path, record_path)) == 0
    assert "not used" in capsys.readouterr().err
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a film at all")
    assert predict_main(_predict(tiny_runs["tabular"], garbage, record_path)) == 2
    assert "garbage.png" in capsys.readouterr().err
    assert predict_main(_predict(tiny_runs["fused"], image_path, record_path, "--json")) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["ignored"] == [] and "not used" not in err


def test_predict_with_a_model_of_nan_weights_is_an_error_not_a_label(tiny_runs, patient_files, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    from fusion.persistence import write_manifest

    folder = tmp_path / "nan_model"
    shutil.copytree(tiny_runs["fused"], folder)
    state = load_file(folder / "model.safetensors")
    state["head.1.weight"].fill_(float("nan"))
    save_file(state, folder / "model.safetensors")
    manifest = json.loads((folder / "manifest.json").read_text())
    write_manifest(folder, list(manifest["sha256"]), manifest["fusion_version"])
    image_path, record_path = patient_files
    assert predict_main(_predict(folder, image_path, record_path, "--json")) == 2
    out, err = capsys.readouterr()
    assert out == "" and "model.safetensors: tensor 'head.1.weight'" in err and "not finite" in err
