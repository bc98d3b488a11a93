"""What importing fusion costs: only what the call needs is imported."""

import json
import subprocess
import sys

import pytest

HEAVY = ("xgboost", "matplotlib", "captum", "sklearn", "scipy", "pandas", "torchvision")
# The serve extra's libraries: only fusion.serve and fusion.export import them, when used.
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
