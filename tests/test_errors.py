"""Errors that carry their field (fusion.errors): the family, its raise sites, and the
service and the command lines reading the attributes rather than the message text."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest

from fusion.errors import (
    MISSING,
    ConfigError,
    FusionError,
    ImageError,
    InputError,
    MissingFileError,
    ModelFolderError,
    SchemaError,
)

FAMILY = (FusionError, InputError, ImageError, SchemaError, ConfigError, ModelFolderError)


# ------------------------------------------------------------------ the family
@pytest.mark.parametrize("cls", FAMILY)
def test_every_error_is_a_value_error_and_its_message_is_unchanged(cls):
    err = cls("'age' must be a number in [0, 120] years; got 'abc'", field="age", value="abc", accepted="a number")
    assert isinstance(err, ValueError) and isinstance(err, FusionError)
    assert str(err) == "'age' must be a number in [0, 120] years; got 'abc'"
    assert (err.field, err.value, err.accepted, err.file, err.related) == ("age", "abc", "a number", None, ())
    with pytest.raises(ValueError, match="got 'abc'"):
        raise err


def test_defaults_and_fields():
    err = InputError("no field")
    assert err.field is None and err.value is MISSING and err.accepted is None and err.fields == ()
    assert ImageError("image x: no such file").field == "image"
    assert ImageError("about a film", field="image").fields == ("image",)
    both = ConfigError("m", field="model", related=["modalities", "model"])
    assert both.related == ("modalities", "model") and both.fields == ("model", "modalities")
    missing = MissingFileError("weights absent", field="image.weights", file="/x.pth")
    assert isinstance(missing, FileNotFoundError) and not isinstance(missing, ValueError)
    assert missing.field == "image.weights" and missing.file == "/x.pth" and str(missing) == "weights absent"
    assert "field='image.weights'" in repr(missing) and "value" not in repr(missing)


@pytest.mark.parametrize("cls", [*FAMILY, MissingFileError])
def test_pickling_keeps_the_class_message_and_attributes(cls):
    """Errors cross processes (rank 0's error is raised on every rank of a job)."""
    err = cls("msg", field="train.lr", value=[0.0], accepted="> 0", file="c.json", related=("a",))
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and str(back) == "msg"
    assert (back.field, back.value, back.accepted, back.file, back.related) == (
        "train.lr",
        [0.0],
        "> 0",
        "c.json",
        ("a",),
    )
    assert pickle.loads(pickle.dumps(cls("m"))).value is MISSING


def test_the_family_is_public_and_cheap():
    import fusion

    for name in ("FusionError", "InputError", "ImageError", "SchemaError", "ConfigError", "ModelFolderError"):
        assert getattr(fusion, name) is getattr(__import__("fusion.errors").errors, name) and name in fusion.__all__


# ------------------------------------------------------------------ raise sites
def test_a_bad_record_value_names_the_feature_the_value_and_what_is_accepted():
    from fusion.schema import load_schema

    schema = load_schema("synthetic")
    with pytest.raises(InputError) as caught:
        schema.validate_record({"spo2": "abc"})
    err = caught.value
    assert (err.field, err.value, err.accepted) == ("spo2", "abc", schema.feature("spo2").accepted)
    assert str(err) == f"'spo2' must be {schema.feature('spo2').accepted}; got 'abc'"
    with pytest.raises(InputError) as caught:
        schema.validate_record({"sex": "X"})
    assert caught.value.field == "sex" and caught.value.accepted == "one of 'F', 'M'"


def test_an_unknown_record_field_and_a_record_that_is_no_json_name_the_record():
    from fusion.schema import MAX_RECORD_BYTES, RecordTooLarge, load_schema, parse_record_json

    with pytest.raises(InputError) as caught:
        load_schema("synthetic").validate_record({"height": 180})
    assert caught.value.field == "record" and caught.value.value == ["height"]
    with pytest.raises(InputError) as caught:
        parse_record_json("[1, 2]")
    assert caught.value.field == "record"
    with pytest.raises(RecordTooLarge) as caught:
        parse_record_json(b" " * (MAX_RECORD_BYTES + 1))
    assert isinstance(caught.value, InputError) and caught.value.field == "record"


def test_a_bad_image_is_an_image_error(tmp_path):
    from fusion.data.images import load_image

    for source in (b"not a film at all", tmp_path / "absent.png", tmp_path):
        with pytest.raises(ImageError) as caught:
            load_image(source, 32)
        assert caught.value.field == "image" and str(caught.value).startswith("image ")


def test_a_bad_config_field_is_a_config_error():
    from fusion.config import Config

    with pytest.raises(ConfigError) as caught:
        Config().with_params(train__lr=0.0).validate()
    err = caught.value
    assert (err.field, err.value, err.accepted) == ("train.lr", 0.0, "a finite number > 0")
    assert str(err) == "train.lr must be a finite number > 0; got 0.0"
    with pytest.raises(ConfigError) as caught:
        Config(model="xgboost")
    assert caught.value.fields == ("model", "modalities")


def test_a_hand_edited_model_folder_names_the_file_and_the_key(tiny_runs, tmp_path):
    from fusion import FusionClassifier
    from fusion.persistence import write_manifest

    folder = tmp_path / "edited"
    shutil.copytree(tiny_runs["tabular"], folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["train"]["lr"] = -1.0
    (folder / "config.json").write_text(json.dumps(meta))
    manifest = json.loads((folder / "manifest.json").read_text())
    write_manifest(folder, list(manifest["sha256"]), manifest["fusion_version"])
    with pytest.raises(ModelFolderError) as caught:
        FusionClassifier.load(folder)
    err = caught.value
    assert err.file == str(folder / "config.json") and err.field == "config.train.lr" and err.value == -1.0
    assert str(err).startswith(f"{folder / 'config.json'}: config.train.lr must be a finite number > 0")
    (folder / "calibration.json").write_text("{}")  # changed after saving: the hash no longer matches
    with pytest.raises(ModelFolderError) as caught:
        FusionClassifier.load(folder)
    assert caught.value.file == str(folder / "calibration.json") and "SHA-256" in str(caught.value)


def test_a_bad_schema_key_names_the_table_the_key_and_the_file():
    from fusion.schema import parse_schema

    text = '[label]\ncolumn = "y"\nclasses = {a = ["a"], b = ["b"]}\n[features.age]\ntype = "numeric"\nrange = [5, 1]\n'
    with pytest.raises(SchemaError) as caught:
        parse_schema(text, origin="s.toml")
    err = caught.value
    assert (err.field, err.file, err.value) == ("[features.age] range", "s.toml", (5.0, 1.0))
    assert str(err).startswith("s.toml: [features.age]: feature 'age': range must be")
    with pytest.raises(SchemaError) as caught:
        parse_schema(text.replace("range = [5, 1]", "rnage = [1, 5]"), origin="s.toml")
    assert caught.value.field == "[features.age]" and caught.value.value == ["rnage"]


def test_a_bad_environment_variable_names_it_and_no_flag():
    from fusion.cli import in_flags
    from fusion.training.distributed import DistributedEnv

    with pytest.raises(ConfigError) as caught:
        DistributedEnv.from_env({"WORLD_SIZE": "two"})
    err = caught.value
    assert (err.field, err.value, err.accepted) == ("WORLD_SIZE", "two", "a positive integer")
    assert in_flags(err) == str(err)


# ------------------------------------------------------------------ consumers
def test_the_command_lines_read_the_flag_from_the_error_not_its_text():
    from fusion.cli import in_flags

    # The message names no field; the attribute does (the old text matching found none).
    assert in_flags(ConfigError("the learning rate is too high", field="train.lr")).endswith(" (flag: --lr)")
    assert in_flags(ConfigError("x", field="model", related=("modalities",))).endswith("(flags: --model, --modalities)")
    # A message that reads like a field is not one: a plain error, a record feature named
    # like a setting, a key of a saved file.
    for err in (
        ValueError("train.lr must be > 0"),
        InputError("'model' must be one of 'a', 'b'; got 'c'", field="model"),
        ModelFolderError("c.json: config.train.lr must be > 0", field="config.train.lr"),
    ):
        assert in_flags(err) == str(err)
    assert in_flags(ConfigError("x", field="train.lr"), ("--model",)) == "x"  # not this command's flag


def test_the_service_reads_the_form_field_from_the_error_not_its_text(tiny_runs, monkeypatch):
    pytest.importorskip("fastapi")
    pytest.importorskip("python_multipart")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from fusion.serve import create_app

    app = create_app(tiny_runs["fused"])
    clf = app.state.service.clf
    answers = {}
    cases = {
        "feature": InputError("a value the model cannot use", field="spo2"),
        "record": InputError("these fields do not go together", field="record"),
        "image": ImageError("the film is upside down"),
        "text-only": ValueError("image x: a message that only looks like an image's"),
    }
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        for name, err in cases.items():

            def refuse(record, image, err=err):
                raise err

            monkeypatch.setattr(clf, "predict", refuse)
            files = {"image": ("film.png", b"bytes", "image/png"), "record": (None, json.dumps({"age": 50}))}
            response = client.post("/predict", files=files)
            assert response.status_code == 422
            answers[name] = response.json()
    assert answers["feature"] == {"detail": "a value the model cannot use", "field": "spo2", "file": None}
    assert answers["record"]["field"] == "record"
    assert answers["image"] == {"detail": "the film is upside down", "field": "image", "file": "film.png"}
    assert answers["text-only"]["field"] is None and answers["text-only"]["file"] is None
