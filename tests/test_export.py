"""ONNX export: onnxruntime's probabilities equal the library's (calibration included),
with and without a missing modality; models the export does not cover are refused.

The ONNX inputs are built here from the model folder's JSON alone (preprocessing.json,
schema.toml), the way docs/serving.md tells a consumer outside Python to build them, so the
recipe is checked too.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from fusion import FusionClassifier, synthetic
from fusion.export import main as export_main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXTRA = "ONNX export is tested with the export extra: pip install '.[export]'"
ort = pytest.importorskip("onnxruntime", reason=EXTRA)
pytest.importorskip("onnx", reason=EXTRA)

MISSING = {"", "na", "n/a", "nan", "none", "null"}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip().lower() in MISSING


def preprocess(record: dict, folder) -> list[float]:
    """One record as the ONNX ``tabular`` input, from preprocessing.json and schema.toml."""
    state = json.loads((folder / "preprocessing.json").read_text())["tabular"]
    features = tomllib.loads((folder / "schema.toml").read_text())["features"]
    row = []
    for column in state["columns"]:
        name, _, category = column.partition("=")
        if column.endswith("__missing"):
            row.append(float(_missing(record.get(column[: -len("__missing")]))))
        elif category:
            value = record.get(name)
            row.append(float(not _missing(value) and value == category))
        elif features[name]["type"] == "binary":
            value = record.get(name)
            positive = features[name]["categories"][1]
            row.append(float((state["stats"][name]["mode"] if _missing(value) else value) == positive))
        else:
            stats, value = state["stats"][name], record.get(name)
            row.append(((stats["median"] if _missing(value) else float(value)) - stats["mean"]) / stats["std"])
    return row


@pytest.fixture(scope="module")
def exported(tiny_runs, tmp_path_factory):
    folder = tiny_runs["fused"]
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert export_main(["--model", str(folder), "--onnx", str(out)]) == 0
    return folder, out


@pytest.fixture(scope="module")
def cohort100():
    table, images = synthetic.make_cohort(100, seed=11, image_size=32)
    records = table[list(synthetic.FEATURES)].to_dict("records")
    return records, images


def test_onnx_probabilities_equal_the_library_with_and_without_a_modality(exported, cohort100):
    folder, path = exported
    clf = FusionClassifier.load(folder)
    assert clf.calibration_.method != "none"  # the graph must carry the calibration
    records, images = cohort100
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "tabular", "presence"]
    n = len(records)
    pixels = (images.astype(np.float32) / 255.0)[:, None]
    tabular = np.array([preprocess(r, folder) for r in records], dtype=np.float32)
    # Every third record is emptied: those rows answer from their film alone.
    mixed = [r if i % 3 else {} for i, r in enumerate(records)]
    mixed_tabular = np.array([preprocess(r, folder) for r in mixed], dtype=np.float32)
    presence_mixed = np.ones((n, 2), dtype=np.float32)
    presence_mixed[::3, 1] = 0.0
    cases = {
        "both": (clf.predict_proba(records, list(images)), pixels, tabular, np.ones((n, 2), np.float32)),
        "image only": (clf.predict_proba(None, list(images)), pixels, np.zeros_like(tabular), _flags(n, 1, 0)),
        "record only": (clf.predict_proba(records, None), np.zeros_like(pixels), tabular, _flags(n, 0, 1)),
        "some records empty": (clf.predict_proba(mixed, list(images)), pixels, mixed_tabular, presence_mixed),
    }
    # The library runs bf16 where the CPU has bf16 units; the export is float32.
    tolerance = 1e-4 if clf.backend_.runtime().precision == "fp32" else 2e-2
    for name, (expected, image_in, tabular_in, presence) in cases.items():
        got = session.run(["probabilities"], {"image": image_in, "tabular": tabular_in, "presence": presence})[0]
        assert got.shape == (n, len(clf.classes_)), name
        assert np.abs(got - expected).max() <= tolerance, (name, float(np.abs(got - expected).max()))


def _flags(n: int, image: float, tabular: float) -> np.ndarray:
    return np.tile(np.array([[image, tabular]], dtype=np.float32), (n, 1))


def test_onnx_metadata_names_classes_and_columns(exported):
    import onnx

    folder, path = exported
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    clf = FusionClassifier.load(folder)
    assert json.loads(meta["classes"]) == list(clf.classes_)
    assert json.loads(meta["tabular_columns"]) == clf.preprocessor_.columns_
    assert int(meta["image_size"]) == clf.image_size_


def test_single_modality_network_exports_without_presence(tiny_runs, tmp_path, cohort100):
    records, _ = cohort100
    folder = tiny_runs["tabular"]
    out = tmp_path / "tabular.onnx"
    assert export_main(["--model", str(folder), "--onnx", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["tabular"]
    tabular = np.array([preprocess(r, folder) for r in records[:20]], dtype=np.float32)
    expected = FusionClassifier.load(folder).predict_proba(records[:20])
    assert np.abs(session.run(None, {"tabular": tabular})[0] - expected).max() <= 1e-4


def test_a_detail_limit_is_in_the_graph(tmp_path, cohort100):
    """image.detail (average down, bring back) is part of the network, so the graph
    carries it and answers as the library does: a one-pixel checkerboard as its flat
    mean."""
    from fusion import Config, load_dataset
    from fusion.config import ImageConfig
    from fusion.export import export_onnx

    parts = load_dataset(None, image_size=32, synthetic_n=120, seed=2).split(seed=0)
    cfg = Config(modalities=("image",), image=ImageConfig(image_size=32, detail=16))
    cfg.train.epochs, cfg.train.precision = 1, "fp32"
    clf = FusionClassifier(cfg).fit(parts["train"], parts["val"])
    assert clf.network_.branches["image"].detail == 16
    session = ort.InferenceSession(str(export_onnx(clf, tmp_path / "detail.onnx")), providers=["CPUExecutionProvider"])
    _, images = cohort100
    got = session.run(None, {"image": (images.astype(np.float32) / 255.0)[:, None]})[0]
    assert np.abs(got - clf.predict_proba(None, list(images))).max() <= 1e-4
    board = (np.indices((32, 32)).sum(axis=0) % 2).astype(np.float32)
    pair = np.stack([board, np.full_like(board, 0.5)])[:, None]
    board_p, flat_p = session.run(None, {"image": pair})[0]
    np.testing.assert_allclose(board_p, flat_p, atol=1e-6)


def test_xgboost_model_is_refused_with_its_json_named(tiny_runs, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert export_main(["--model", str(tiny_runs["xgboost"]), "--onnx", str(out)]) == 2
    err = capsys.readouterr().err
    assert "XGBoost" in err and "xgboost.json" in err and "pickle" in err
    assert not out.exists()


def test_other_strategies_are_refused_naming_the_strategy(tiny_runs):
    from fusion.export import check_exportable

    clf = FusionClassifier.load(tiny_runs["fused"])
    # The refusal reads the backend's own description (its name, whether it exports),
    # never a list of names kept in export.py.
    clf.backend_.name, clf.backend_.exportable = "stacked", False
    clf.config_.fusion = "stacked"
    with pytest.raises(ValueError, match="'stacked' fusion model"):
        check_exportable(clf, "RUN")


def test_export_refuses_a_bad_output_path(exported, tmp_path, capsys):
    folder, path = exported
    assert export_main(["--model", str(folder), "--onnx", str(path)]) == 2  # exists
    assert export_main(["--model", str(folder), "--onnx", str(tmp_path / "model.txt")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_dangling_symlink_as_onnx_is_refused(exported, tmp_path, capsys):
    folder, _ = exported
    link = tmp_path / "model.onnx"
    link.symlink_to(tmp_path / "nowhere" / "planted.onnx")
    assert export_main(["--model", str(folder), "--onnx", str(link)]) == 2
    assert "already exists" in capsys.readouterr().err and link.is_symlink()


def test_a_wrong_onnx_name_names_onnx_not_model(exported, capsys):
    folder, _ = exported
    assert export_main(["--model", str(folder), "--onnx", str(folder / "model.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "--onnx" in err and "(flag" not in err


def test_a_full_disk_is_one_sentence_naming_the_folder(exported, tmp_path, monkeypatch, capsys):
    import errno

    import onnx

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    folder, _ = exported
    monkeypatch.setattr(onnx, "save", full)
    out = tmp_path / "m.onnx"
    assert export_main(["--model", str(folder), "--onnx", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(tmp_path) in err and "No space left on device" in err and "free" in err
    assert list(tmp_path.iterdir()) == []  # no partial file left
