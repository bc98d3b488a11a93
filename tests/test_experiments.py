"""The experiment scripts run (tiny sizes): they use only the public API, so a change
there that breaks them must fail here, not in the next person's benchmark."""

import json
import re
import runpy
import sys
from pathlib import Path

import pytest

from fusion import load_dataset

ROOT = Path(__file__).parents[1]


def _run_script(name: str, args: list[str], monkeypatch) -> int:
    """Run an experiment script as ``python experiments/NAME ARGS`` would, in this
    process (a fresh interpreter would add seconds of imports and test nothing more);
    its exit status."""
    monkeypatch.setattr(sys, "argv", [name, *args])
    try:
        runpy.run_path(str(ROOT / "experiments" / name), run_name="__main__")
    except SystemExit as exit_:
        return exit_.code or 0
    return 0


def test_bench_writes_every_figure_it_promises(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench.json"
    assert _run_script("bench.py", ["--n-train", "64", "--epochs", "2", "--quick", "--out", str(out)], monkeypatch) == 0
    stdout = capsys.readouterr().out
    result = json.loads(out.read_text())
    timings = [
        "train_images_per_s",
        "bare_step_images_per_s",
        "pipeline_efficiency",
        "predict_ms_p50",
        "predict_ms_p95",
        "decode_ms_p50",
        "bare_forward_ms_p50",
        "sequence_ms_p50",
        "forward_after_decode_ms_p50",
        "predict_batch_images_per_s",
        "explain_s_p50",
        "image_branch_mflops",
        "peak_rss_mb",
    ]
    for key in timings:
        assert isinstance(result[key], (int, float)) and result[key] > 0, key
    assert result["predict_ms_p95"] >= result["predict_ms_p50"]
    assert result["sequence_ms_p50"] >= result["decode_ms_p50"] * 0.5  # decode is part of the sequence
    assert {"cpu", "cpu_capability", "bf16", "cores", "threads", "torch", "device"} <= set(result["machine"])
    assert isinstance(result["predict_within_target"], bool)
    assert "predict_ms_p50" in stdout  # the printed table


def test_make_folder_writes_a_folder_the_loaders_read(tmp_path, monkeypatch, capsys):
    out = tmp_path / "films"
    args = ["--n", "30", "--out", str(out), "--film-size", "40", "--render-size", "32"]
    assert _run_script("make_folder.py", args, monkeypatch) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["films"] == 30 and len(list((out / "images").glob("*.png"))) == 30
    ds = load_dataset(out, image_size=32, cache_dir=False)  # schema.toml beside metadata.csv
    assert len(ds) == 30 and not ds.skipped and ds.images.shape == (30, 32, 32)
    assert len(set(ds.groups)) < 30  # follow-up films share their patient's id
    assert _run_script("make_folder.py", args, monkeypatch) == 2  # never over a folder that has files
    assert "exists and is not empty" in capsys.readouterr().err


def test_cv_compares_configurations_given_as_settings_with_balanced_accuracy_and_per_class_sensitivity(
    folder_dataset, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "cv.json"
    spec = tmp_path / "models.txt"
    # A configuration the script has no name for, as a new option of the library would be.
    spec.write_text("# tiny models\nxgb=xgboost,tuning.inner_folds=2,tuning.xgb_rounds=[5]  # the record alone\n")
    models = [
        "fused_wide=fused,head.hidden=16,train.epochs=1",
        "image_only=image_network,image.pretrained=null,train.epochs=1",
    ]
    args = ["--data", str(folder_dataset), "--schema", "synthetic", "--folds", "2", "--seeds", "0", "--n-boot", "20"]
    args += ["--image-size", "32", "--out", str(out), "--spec", str(spec), "--models", *models]
    args += ["--oof-dir", str(tmp_path / "oof")]
    assert _run_script("cv.py", args, monkeypatch) == 0
    summary = json.loads(out.read_text())
    assert sorted(p.name for p in (tmp_path / "oof").iterdir()) == [
        "fused_wide_seed0.npz",
        "image_only_seed0.npz",
        "xgb_seed0.npz",
    ]
    assert list(summary["results"]) == ["fused_wide", "image_only", "xgb"]
    assert summary["models"]["fused_wide"]["head"]["hidden"] == 16 and summary["group_column"] == "patient_id"
    for result in summary["results"].values():
        assert {"macro_auroc", "balanced_accuracy", "accuracy", "macro_f1", "sensitivity"} <= set(result)
        assert result["balanced_accuracy"]["low"] <= result["balanced_accuracy"]["high"]
    for metric in ("macro_auroc", "balanced_accuracy"):
        assert set(summary["paired_differences"][metric]) == {"fused_wide - image_only", "fused_wide - xgb"}
    assert summary["paired_differences_macro_auroc"] == summary["paired_differences"]["macro_auroc"]
    beside = summary["per_class_sensitivity"]
    assert beside["reference"] == "image_only"  # the image-only model, whatever its rank
    drop = beside["fused"]["fused_wide"]
    assert drop["largest_drop"]["difference"] == min(drop["difference"].values())
    stdout = capsys.readouterr().out
    assert "balanced accuracy difference" in stdout and "Per-class sensitivity beside image_only" in stdout
    # A rerun reads the saved predictions back: the same figures, nothing trained.
    monkeypatch.setattr("fusion.FusionClassifier.fit", lambda *a, **k: pytest.fail("retrained"))
    assert _run_script("cv.py", args, monkeypatch) == 0
    assert json.loads(out.read_text())["results"] == summary["results"]


def test_cv_refuses_a_configuration_it_cannot_read(monkeypatch, capsys):
    cv = runpy.run_path(str(ROOT / "experiments" / "cv.py"), run_name="cv")
    builtins = cv["model_configs"]()
    parsed = cv["parse_models"](["fused", "deep=tabular_mlp,tabular.hidden=[8, 4],image.pretrained=null"], builtins)
    assert parsed["deep"].tabular.hidden == (8, 4) and parsed["deep"].modalities == ("tabular",)
    for entry, message in [
        ("x=nosuch", "unknown model 'nosuch'"),
        ("x=fused,head.nosuch=1", "no setting 'head__nosuch'"),
        ("x=fused,head.hidden", "is not SETTING=VALUE"),
        ("x=fused,train.lr=-1", "train.lr"),
    ]:
        with pytest.raises(SystemExit, match=re.escape(message)):
            cv["parse_models"]([entry], builtins)
    with pytest.raises(SystemExit, match="given twice"):
        cv["parse_models"](["fused", "fused"], builtins)
