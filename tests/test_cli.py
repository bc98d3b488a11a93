"""Every command's output options: never over an input, exactly the path reported, and a
failure to write that still leaves the answer printed."""

import json
import os
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
    assert "is an input of the analysis" in capsys.readouterr().err
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


# ------------------------------------------------------------ output paths and flags
def test_a_dangling_symlink_is_refused_like_an_existing_file(tiny_runs, patient_files, tmp_path, capsys):
    image_path, record_path = patient_files
    target = tmp_path / "elsewhere" / "planted.png"  # where the link points: nothing there yet
    link = tmp_path / "why.png"
    link.symlink_to(target)
    code = predict_main(_predict(tiny_runs["fused"], image_path, record_path, "--explain", str(link)))
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert link.is_symlink() and not os.path.exists(target)


@pytest.mark.parametrize("flag", ["--explain", "--out", "--onnx"])
def test_every_output_file_refuses_a_dangling_symlink(tmp_path, flag):
    from fusion.cli import output_file

    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "nowhere.json")
    with pytest.raises(ValueError, match=f"{flag} .* already exists"):
        output_file(str(link), flag)
    with pytest.raises(ValueError, match="already exists"):
        output_file(str(link), flag, suffix=".json")


def _raised(make) -> BaseException:
    """The error ``make()`` raises."""
    with pytest.raises((ValueError, FileNotFoundError)) as caught:
        make()
    return caught.value


def _bad_config(**settings):
    from fusion.config import Config

    return lambda: Config().with_params(**settings).validate()


def _no_schema(tmp_path):
    from fusion.data.loaders import load_dataset

    (tmp_path / "metadata.csv").write_text("file,label\n")
    return lambda: load_dataset(tmp_path)


def _onnx_name(tmp_path):
    from fusion.cli import output_file

    return lambda: output_file(str(tmp_path / "model.safetensors"), "--onnx", suffix=".onnx")


def _out_is_input(tmp_path):
    from fusion.cli import output_file

    return lambda: output_file(str(tmp_path), "--out", inputs=[tmp_path])


@pytest.mark.parametrize(
    "make, flags, expected",
    [
        # A user's value, a path or a model folder is no setting however it is spelt.
        (_onnx_name, ("--model", "--onnx"), None),
        (_out_is_input, ("--model", "--out"), None),
        # Settings the library refuses are translated to the command's own flags.
        (lambda tmp: _bad_config(model="x"), ("--model",), "--model"),
        (lambda tmp: _bad_config(train__epochs=0), ("--epochs",), "--epochs"),
        (lambda tmp: _bad_config(model="xgboost"), None, "--model, --modalities"),
        (lambda tmp: _bad_config(fusion="gbm", image__backbone="densenet169"), ("--fusion",), "--fusion"),
        (_no_schema, ("--schema",), "--schema"),
        # A field whose flag the command does not have is not named.
        (lambda tmp: _bad_config(train__epochs=0), ("--model", "--onnx"), None),
    ],
    ids=["onnx-suffix", "out-is-input", "model", "epochs", "xgboost-modalities", "gbm", "schema", "not-this-command"],
)
def test_errors_name_the_flag_at_fault_and_no_other(tmp_path, make, flags, expected):
    """Each case raises the library's real error (before issue 22 these fed bare
    messages to a regular expression; the flag now comes from the error's fields)."""
    from fusion.cli import in_flags

    err = _raised(make(tmp_path))
    got = in_flags(err, flags)
    if expected is None:
        assert got == str(err)
    else:
        assert got.startswith(str(err)) and got.endswith(f": {expected})")


def test_a_model_folder_error_names_no_flag(tiny_runs):
    from fusion.classifier import FusionClassifier
    from fusion.cli import in_flags
    from fusion.export import check_exportable

    run = tiny_runs["xgboost"]
    err = _raised(lambda: check_exportable(FusionClassifier.load(run), run))
    assert in_flags(err, ("--model", "--onnx")) == str(err)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--image-size", "9" * 5000], "--image-size"),
        (["--per-class", "-3"], "--per-class"),
        (["--seed", "1" * 5000], "--seed"),
        (["--seed", "\uff13"], "--seed"),  # a full-width digit: int() takes it
        (["--per-class", "2_0"], "--per-class"),
    ],
    ids=["5000-digit-size", "negative", "5000-digit-seed", "full-width-digit", "underscore"],
)
def test_a_bad_number_flag_is_named_and_cut(folder_dataset, tmp_path, capsys, argv, flag):
    with pytest.raises(SystemExit) as exit_:
        eda_main(["--data", str(folder_dataset), "--out", str(tmp_path / "eda"), *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}:" in err and len(err) < 600
    assert "Exceeds the limit" not in err


@pytest.mark.parametrize(
    "value",
    ["9" * 5000, "1e400", "inf", "nan", "-1", "0", "1_0", "0x10", " "],
    ids=["5000-digits", "1e400", "inf", "nan", "-1", "0", "1_0", "0x10", "blank"],
)
def test_number_types_refuse_what_they_should_with_the_value_cut(value):
    import argparse

    from fusion.cli import positive_int, positive_number

    for convert in (positive_int, positive_number):
        with pytest.raises(argparse.ArgumentTypeError) as err:
            convert(value)
        assert len(str(err.value)) < 200


def test_number_types_take_plain_numbers():
    from fusion.cli import port_number, positive_int, positive_number, whole_number

    assert positive_int(" 7 ") == 7 and whole_number("0") == 0 and port_number("8080") == 8080
    assert positive_number("1e-3") == 0.001 and positive_number("2") == 2.0
    with pytest.raises(Exception, match="65535"):
        port_number("70000")


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--epochs", "5" * 5000], "--epochs"),
        (["--batch-size", "\u0664"], "--batch-size"),  # an Arabic-Indic 4: int() takes it
        (["--lr", "1e400"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--seed", "1_0"], "--seed"),
    ],
    ids=["5000-digit-epochs", "arabic-indic-batch", "lr-1e400", "lr-inf", "lr-nan", "underscore-seed"],
)
def test_train_number_flags_are_named_with_the_value_cut(capsys, argv, flag):
    with pytest.raises(SystemExit) as exit_:
        train_main(["--synthetic-n", "60", *argv])
    err = capsys.readouterr().err
    # the usage lines, then one error line whose value is cut (not 5,000 digits)
    line = err.rstrip().splitlines()[-1]
    assert exit_.value.code == 2 and f"argument {flag}:" in line and len(line) < 300
    assert "Exceeds the limit" not in err


@pytest.mark.parametrize(
    "value", ["a" * 100_000 + ".png", "x/" * 3000 + "a.png", "a\x00b.png"], ids=["long", "deep", "nul"]
)
def test_an_unusable_output_path_is_a_short_value_error(value):
    from fusion.cli import output_file

    with pytest.raises(ValueError, match="--explain") as err:
        output_file(value, "--explain", suffix=".png")
    assert len(str(err.value)) < 200
