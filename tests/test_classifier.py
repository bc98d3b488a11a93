"""The Python API for one patient: inputs of every kind, missing modalities, bad input."""

import io
import math

import numpy as np
import pandas as pd
import pytest

from fusion import FusionClassifier, NotFittedError, synthetic


@pytest.fixture(scope="module")
def fused(tiny_runs):
    return FusionClassifier.load(tiny_runs["fused"])


@pytest.fixture(scope="module")
def patient():
    return synthetic.example(seed=11, image_size=80)  # larger than the model's 32 px


def test_fitted_attributes(fused):
    assert fused.classes_ == ("covid", "pneumonia", "normal")
    assert fused.modalities_ == ("image", "tabular")
    assert fused.schema_.name == "synthetic"


def test_prediction_has_label_probabilities_and_inputs_used(fused, patient):
    record, image = patient
    p = fused.predict(record, image)
    assert p.label in fused.classes_
    assert set(p.probabilities) == set(fused.classes_)
    assert math.isclose(sum(p.probabilities.values()), 1.0, abs_tol=1e-6)
    assert p.label == max(p.probabilities, key=p.probabilities.get)
    assert p.modalities == ("image", "tabular")


def test_same_image_as_path_pil_array_bytes_agree(fused, patient, tmp_path):
    record, image = patient
    path = tmp_path / "x.png"
    image.save(path)
    reference = fused.predict(record, path).probabilities
    for source in (
        str(path),
        image,
        np.asarray(image),
        path.read_bytes(),
        np.asarray(image).astype(np.float32) / 255.0,
    ):
        got = fused.predict(record, source).probabilities
        assert all(abs(got[c] - reference[c]) < 1e-3 for c in reference), type(source)


def test_record_as_series_and_missing_keys(fused, patient):
    record, image = patient
    a = fused.predict(pd.Series(record), image).probabilities
    b = fused.predict(record, image).probabilities
    assert a == b
    partial = {"age": 70, "spo2": 88}
    assert fused.predict(partial, image).label in fused.classes_


def test_missing_modality_still_answers(fused, patient):
    record, image = patient
    assert fused.predict(None, image).modalities == ("image",)
    assert fused.predict(record, None).modalities == ("tabular",)
    with pytest.raises(ValueError, match="none was given"):
        fused.predict(None, None)


def test_single_modality_model_needs_its_modality(tiny_runs, patient):
    record, image = patient
    image_only = FusionClassifier.load(tiny_runs["image"])
    assert image_only.predict(record, image).modalities == ("image",)  # the record is not used
    with pytest.raises(ValueError, match=r"trained on \['image'\] and needs an image"):
        image_only.predict(record, None)
    tab_only = FusionClassifier.load(tiny_runs["tabular"])
    with pytest.raises(ValueError, match="needs a record"):
        tab_only.predict(None, image)


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"age": "abc"}, r"'age' must be a number in \[0, 120\] years; got 'abc'"),
        ({"spo2": 140}, r"'spo2' must be a number in \[50, 100\] %; got 140"),
        ({"sex": "unknown"}, r"'sex' must be one of 'F', 'M'; got 'unknown'"),
        ({"height_cm": 180}, r"unknown field\(s\) \['height_cm'\]"),
    ],
)
def test_bad_record_values_raise_naming_field_value_and_accepted(fused, patient, change, pattern):
    record, image = patient
    with pytest.raises(ValueError, match=pattern):
        fused.predict({**record, **change}, image)


def test_corrupt_image_raises_naming_the_file(fused, patient, tmp_path):
    record, _ = patient
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(ValueError, match=r"broken\.png"):
        fused.predict(record, bad)
    with pytest.raises(ValueError, match="no such file"):
        fused.predict(record, tmp_path / "absent.png")


def test_predict_proba_batches_many_rows(fused):
    table, images = synthetic.make_cohort(10, seed=4, image_size=48)
    features = table[list(synthetic.FEATURES)]
    proba = fused.predict_proba(features, list(images))
    assert proba.shape == (10, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    record = {k: (None if pd.isna(v) else v) for k, v in features.iloc[3].items()}
    single = fused.predict(record, images[3]).probabilities
    np.testing.assert_allclose(proba[3], list(single.values()), atol=1e-5)
    with pytest.raises(ValueError, match="record 2"):
        bad = features.copy().astype(object)
        bad.loc[2, "age"] = "old"
        fused.predict_proba(bad, list(images))


def test_xgboost_baseline_predicts_and_explains(tiny_runs, patient):
    record, _ = patient
    clf = FusionClassifier.load(tiny_runs["xgboost"])
    p = clf.predict(record)
    assert p.modalities == ("tabular",)
    e = clf.explain(record)
    assert e.modality_share == {"tabular": 1.0} and set(e.tabular_attribution) == set(synthetic.FEATURES)


def _dicom(pixels: np.ndarray, photometric: str, **extra) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_dicom_monochrome2_monochrome1_and_voi_window(fused, patient, tmp_path):
    from fusion.data.images import load_image

    record, image = patient
    gray = np.asarray(image).astype(np.float64)
    pixels12 = np.round(gray / 255.0 * 4095).astype(np.uint16)
    mono2 = tmp_path / "film.dcm"
    mono2.write_bytes(_dicom(pixels12, "MONOCHROME2"))
    mono1 = tmp_path / "inverted.dcm"
    mono1.write_bytes(_dicom(4095 - pixels12, "MONOCHROME1"))
    a, b = load_image(mono2, 32).astype(int), load_image(mono1, 32).astype(int)
    assert np.abs(a - b).max() <= 1  # MONOCHROME1 is inverted back
    assert np.abs(a - load_image(image, 32).astype(int)).mean() < 2  # same picture as the PNG
    # A VOI window of the upper half of the range: everything below it is black.
    windowed = tmp_path / "window.dcm"
    windowed.write_bytes(_dicom(pixels12, "MONOCHROME2", WindowCenter=3072, WindowWidth=2048))
    w = load_image(windowed, 32)
    assert (w[a < 100] <= 10).all()
    bright = a > 160
    assert np.ptp(w[bright]) > 1.8 * np.ptp(a[bright])  # the window stretches what it covers
    p_png, p_dcm = fused.predict(record, image).probabilities, fused.predict(record, mono2).probabilities
    assert all(abs(p_png[c] - p_dcm[c]) < 0.05 for c in p_png)
    # raw DICOM bytes are recognised without a file name
    assert fused.predict(record, mono2.read_bytes()).probabilities == p_dcm


def test_corrupt_dicom_raises_value_error(tmp_path):
    from fusion.data.images import load_image

    path = tmp_path / "bad.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + b"\x01\x02")
    with pytest.raises(ValueError, match=r"bad\.dcm"):
        load_image(path, 32)


def test_fit_from_python_and_save_every_model_kind(tmp_path, small_tuning):
    from fusion import Config, load_dataset

    ds = load_dataset(None, image_size=32, synthetic_n=80, seed=2)
    parts = ds.split(seed=0)
    for cfg in (Config(modalities="tabular", model="xgboost", tuning=small_tuning), Config(modalities="tabular")):
        cfg.train.epochs, cfg.train.device = 1, "cpu"  # load() puts models on the CPU: compare like with like
        clf = FusionClassifier(cfg).fit(parts["train"], parts["val"])
        assert clf.config is cfg
        folder = clf.save(tmp_path / cfg.model)
        np.testing.assert_array_equal(
            FusionClassifier.load(folder).predict_dataset(parts["test"]), clf.predict_dataset(parts["test"])
        )
    with pytest.raises(NotFittedError, match="not fitted"):
        FusionClassifier().predict({"age": 50})


def test_predictions_follow_weights_changed_in_place(tiny_runs, patient):
    """predict runs a cached inference copy of network_: an edit of network_'s weights
    (fine-tuning, load_state_dict) must reach the next prediction."""
    import torch

    clf = FusionClassifier.load(tiny_runs["fused"])
    record, image = patient
    clf.predict(record, image)
    last = clf.network_.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 4.0, 0.0]))
    answer = clf.predict(record, image)
    # What the edited network now says, through the model's calibration.
    expected = clf.calibration_.apply(torch.softmax(torch.tensor([0.0, 4.0, 0.0]), 0).numpy()[None])[0]
    assert answer.label == "pneumonia"
    np.testing.assert_allclose(list(answer.probabilities.values()), expected, atol=2e-2)
    np.testing.assert_allclose(clf.predict_proba([record], [image])[0], expected, atol=2e-2)


# ------------------------------------------------------------------ issue 10
def test_a_record_without_a_known_value_is_a_missing_modality(fused, patient):
    _, image = patient
    alone = fused.predict(None, image)
    for empty in ({}, {"age": None, "spo2": "NA"}, pd.Series({"crp": float("nan")})):
        p = fused.predict(empty, image)
        assert p.modalities == ("image",)
        assert p.probabilities == alone.probabilities
    with pytest.raises(ValueError, match="needs an image or a record; none was given"):
        fused.predict({}, None)


def test_batch_rows_without_a_known_value_answer_from_the_image(fused, patient):
    record, image = patient
    proba = fused.predict_proba([record, {}, {"age": None}], [image, image, image])
    alone = fused.predict(None, image).probabilities
    assert np.allclose(proba[1], list(alone.values()), atol=1e-6)
    assert np.allclose(proba[2], proba[1])
    assert np.allclose(proba[0], list(fused.predict(record, image).probabilities.values()), atol=1e-6)
    with pytest.raises(ValueError, match="record 1 has no known value"):
        fused.predict_proba([record, {}], None)


@pytest.mark.parametrize(
    "n_steps, error", [(0, ValueError), (-3, ValueError), (10**6, ValueError), (2.5, TypeError), ("50", TypeError)]
)
def test_explain_steps_are_checked(fused, patient, n_steps, error):
    record, image = patient
    with pytest.raises(error, match="n_steps"):
        fused.explain(record, image, n_steps=n_steps)


@pytest.mark.parametrize("record", [["age", 50], "age=50", 42])
def test_a_record_of_the_wrong_type_is_a_type_error(fused, patient, record):
    with pytest.raises(TypeError, match="record must be a dict"):
        fused.predict(record, patient[1])


@pytest.mark.parametrize("image", [42, 3.5, ["x.png"]])
def test_an_image_of_the_wrong_type_is_a_type_error(fused, patient, image):
    with pytest.raises(TypeError, match="image must be a path, PIL image, numpy array or bytes"):
        fused.predict(patient[0], image)


# ------------------------------------------------------------------ issue 21
def _with_weights(source, folder, change):
    """A copy of the model folder ``source`` whose weights ``change(state)`` edits, with
    the manifest's hashes recomputed (so only the weights' values are at fault)."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from fusion.persistence import write_manifest

    shutil.copytree(source, folder)
    state = load_file(folder / "model.safetensors")
    change(state)
    save_file(state, folder / "model.safetensors")
    manifest = json.loads((folder / "manifest.json").read_text())
    write_manifest(folder, list(manifest["sha256"]), manifest["fusion_version"])
    return folder


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_model_with_non_finite_weights_is_refused_on_load_naming_file_and_tensor(tiny_runs, tmp_path, value):
    def poison(state):
        name = sorted(k for k, v in state.items() if v.is_floating_point())[-1]
        state[name].view(-1)[0] = value
        poison.name = name

    folder = _with_weights(tiny_runs["fused"], tmp_path / "model", poison)
    with pytest.raises(ValueError, match=r"model\.safetensors") as err:
        FusionClassifier.load(folder)
    assert poison.name in str(err.value) and "not finite" in str(err.value)


def test_a_non_finite_tensor_is_refused_by_the_one_tensor_reader(tmp_path):
    """Every backend's tensors (the network's weights, the stacked and gbm models'
    frozen embedder, --init-from) are read by persistence.ModelFiles.tensors."""
    import torch

    from fusion.persistence import state_dict_bytes, verify_folder, write_manifest
    from fusion.version import __version__

    state = {"a": torch.ones(3), "steps": torch.arange(3), "b": torch.tensor([1.0, float("nan")])}
    (tmp_path / "w.safetensors").write_bytes(state_dict_bytes(state))
    write_manifest(tmp_path, ["w.safetensors"], __version__)
    with pytest.raises(ValueError, match=r"w\.safetensors: tensor 'b' holds 1 non-finite value"):
        verify_folder(tmp_path).tensors("w.safetensors")


@pytest.mark.parametrize("run", ["fused", "xgboost"])
def test_non_finite_probabilities_are_refused_rather_than_answered(tiny_runs, patient, run, monkeypatch):
    clf = FusionClassifier.load(tiny_runs[run])
    record, image = patient
    image = image if "image" in clf.modalities_ else None

    def nan_proba(batch, **kwargs):
        return np.full((len(batch), len(clf.classes_)), np.nan)

    monkeypatch.setattr(clf.backend_, "predict_proba", nan_proba)
    for call in (
        lambda: clf.predict(record, image),
        lambda: clf.predict_proba(record, image),
        lambda: clf.predict_proba([record, record], None if image is None else [image, image]),
        lambda: clf.predict([record, record], None if image is None else [image, image]),
        lambda: clf.explain(record, image),
    ):
        with pytest.raises(ValueError, match="not finite"):
            call()


def test_weights_that_become_nan_after_loading_are_refused_at_predict_time(tiny_runs, patient):
    import torch

    clf = FusionClassifier.load(tiny_runs["fused"])
    record, image = patient
    with torch.no_grad():
        clf.network_.head[-1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"probabilities are not finite.*row 0"):
        clf.predict(record, image)


def test_an_image_given_to_a_record_only_model_is_validated_and_reported_unused(tiny_runs, patient):
    record, image = patient
    tab_only = FusionClassifier.load(tiny_runs["tabular"])
    p = tab_only.predict(record, image)
    assert p.modalities == ("tabular",) and p.ignored == ("image",)
    assert "image ignored" in str(p)
    assert p.probabilities == tab_only.predict(record).probabilities
    assert tab_only.predict(record).ignored == ()
    with pytest.raises(ValueError, match="not a readable image"):
        tab_only.predict(record, b"definitely not a film")
    with pytest.raises(TypeError, match="image must be"):
        tab_only.predict(record, 42)
    assert tab_only.explain(record, image).ignored == ("image",)
    with pytest.raises(ValueError, match="not a readable image"):
        tab_only.explain(record, b"garbage")
    with pytest.warns(UserWarning, match=r"image\(s\) not used: this model has no image modality") as caught:
        tab_only.predict_proba(record, image)
    assert caught[0].filename == __file__  # the warning points at the caller, not at fusion
    with pytest.warns(UserWarning, match=r"image\(s\) not used"):
        tab_only.predict_proba([record, record], [image, image])
    with pytest.raises(ValueError, match="not a readable image"):
        tab_only.predict_proba([record, record], [image, b"garbage"])


def test_a_record_given_to_an_image_only_model_is_validated_and_reported_unused(tiny_runs, patient):
    import warnings

    record, image = patient
    image_only = FusionClassifier.load(tiny_runs["image"])
    p = image_only.predict(record, image)
    assert p.modalities == ("image",) and p.ignored == ("tabular",)
    assert p.probabilities == image_only.predict(None, image).probabilities
    with pytest.raises(ValueError, match="'age'"):
        image_only.predict({**record, "age": "old"}, image)
    with pytest.raises(ValueError, match="unknown field"):
        image_only.predict({"shoe_size": 44}, image)
    with pytest.raises(TypeError, match="record must be a dict"):
        image_only.predict("age=50", image)
    # A record without a known value is no record: nothing was ignored.
    assert image_only.predict({"age": None}, image).ignored == ()
    with pytest.warns(UserWarning, match=r"record\(s\) not used: this model has no tabular modality"):
        image_only.predict_proba([record], [image])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image_only.predict_proba(None, [image])
        FusionClassifier.load(tiny_runs["fused"]).predict_proba([record], [image])


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_save_refuses_a_folder_that_is_not_empty(fused, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"notes.*is not empty.*overwrite=True"):
        fused.save(notes)
    assert _listing(notes) == ["todo.txt"]
    # Not even overwrite=True deletes a folder that is not a model folder.
    with pytest.raises(ValueError, match=r"not a fusion model folder"):
        fused.save(notes, overwrite=True)
    assert _listing(notes) == ["todo.txt"] and (notes / "todo.txt").read_text() == "mine"
    assert _listing(tmp_path) == ["notes"]  # no temporary folder left behind


def test_save_over_another_model_needs_overwrite_and_replaces_the_whole_folder(fused, tiny_runs, tmp_path):
    folder = fused.save(tmp_path / "m1")
    (folder / "metrics.json").write_text("{}")  # what described the old model
    booster = FusionClassifier.load(tiny_runs["xgboost"])
    with pytest.raises(ValueError, match=r"m1.*is not empty"):
        booster.save(folder)
    assert FusionClassifier.load(folder).backend_.name == "joint"  # untouched
    assert booster.save(folder, overwrite=True) == folder
    assert "model.safetensors" not in _listing(folder) and "metrics.json" not in _listing(folder)
    again = FusionClassifier.load(folder)
    assert again.backend_.name == "xgboost" and again.modalities_ == ("tabular",)
    assert _listing(tmp_path) == ["m1"]
    # An empty folder, or none, needs no overwrite.
    (tmp_path / "empty").mkdir()
    booster.save(tmp_path / "empty")
    booster.save(tmp_path / "a" / "b")
    assert FusionClassifier.load(tmp_path / "a" / "b").classes_ == booster.classes_


def test_an_interrupted_save_leaves_the_old_model_whole(fused, tiny_runs, tmp_path, monkeypatch):
    from fusion import persistence

    folder = fused.save(tmp_path / "m1")
    before = {name: (folder / name).read_bytes() for name in _listing(folder)}
    write, calls = persistence._write_new_file, []

    def crash_on_third(path, data):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        write(path, data)

    monkeypatch.setattr(persistence, "_write_new_file", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        FusionClassifier.load(tiny_runs["xgboost"]).save(folder, overwrite=True)
    assert {name: (folder / name).read_bytes() for name in _listing(folder)} == before
    assert _listing(tmp_path) == ["m1"]


def test_saved_folders_and_files_get_the_mode_the_umask_gives(fused, tmp_path):
    import os
    import stat

    old = os.umask(0o027)
    try:
        folder = fused.save(tmp_path / "shared")
        fused.save(folder, overwrite=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path.name


def test_save_through_a_symlink_replaces_the_folder_it_points_to(fused, tmp_path):
    import os

    real = fused.save(tmp_path / "real")
    os.symlink("real", tmp_path / "link")
    fused.save(tmp_path / "link", overwrite=True)
    assert (tmp_path / "link").is_symlink() and FusionClassifier.load(real).classes_ == fused.classes_
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(ValueError, match="symlink loop"):
        fused.save(tmp_path / "loop")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        fused.save(tmp_path / "file", overwrite=True)
