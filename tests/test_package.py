"""What importing fusion costs: only what the call needs is imported."""

import json
import subprocess
import sys

import pytest

HEAVY = ("xgboost", "matplotlib", "captum", "sklearn", "scipy", "pandas", "torchvision")
# The serve and export extras' libraries and the test tools that drive them: only
# fusion.serve and fusion.export import them, when used.
SERVING = ("fastapi", "starlette", "uvicorn", "python_multipart", "onnx", "onnxruntime", "httpx", "selenium")


def _imported_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {name.split(".")[0] for name in json.loads(out.splitlines()[-1])}


def test_import_fusion_imports_nothing_heavy():
    loaded = _imported_after("import fusion; fusion.__version__")
    assert not loaded & {*HEAVY, *SERVING, "torch"}, loaded & {*HEAVY, *SERVING, "torch"}


def test_one_prediction_imports_torch_but_not_the_rest(tiny_runs, tmp_path):
    """The command-line prediction path: load a network model, predict one patient
    from a file. xgboost, matplotlib, captum, scikit-learn, scipy, pandas and
    torchvision would each add to the wait for one answer."""
    from fusion import synthetic

    record, image = synthetic.example(seed=2, image_size=48)
    path = tmp_path / "film.png"
    image.save(path)
    code = (
        "from fusion import FusionClassifier\n"
        f"clf = FusionClassifier.load({str(tiny_runs['fused'])!r})\n"
        f"print(clf.predict({record!r}, {str(path)!r}))"
    ).replace("nan", "None")
    loaded = _imported_after(code)
    assert "torch" in loaded
    assert not loaded & {*HEAVY, *SERVING}, loaded & {*HEAVY, *SERVING}


@pytest.mark.parametrize("name", ["FusionClassifier", "Config", "load_dataset", "synthetic", "tune_allocator"])
def test_public_names_resolve(name):
    import fusion

    assert getattr(fusion, name) is not None and name in fusion.__all__


def test_a_missing_extra_names_the_extra_to_install(tiny_runs, tmp_path, monkeypatch, capsys):
    """The service and the export each say which extra brings what they lack."""
    from fusion.export import export_onnx
    from fusion.serve.__main__ import main as serve_main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed: importing it fails
    assert serve_main(["--model", str(tiny_runs["fused"])]) == 2
    assert "pip install 'fusion[serve]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'fusion\[export\]'"):
        export_onnx(tiny_runs["fused"], tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()
