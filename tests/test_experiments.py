"""The experiment scripts run (tiny sizes): they use only the public API, so a change
there that breaks them must fail here, not in the next person's benchmark."""

import argparse
import hashlib
import json
import os
import platform
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion import load_dataset
from tests.conftest import SHARED_DATA

ROOT = Path(__file__).parents[1]
KERMANY = SHARED_DATA / "kermany-cxr"
SHORT_PRETRAIN = ["--limit", "256", "--image-size", "32", "--epochs", "2"]
# experiments/pretrain_cxr.py SHORT_PRETRAIN on kermany-cxr, pinned to AVX2, 2 threads, seed 0: recorded on
# an AVX-512 (AMD EPYC) machine with torch 2.14.1. Another torch (or its bundled oneDNN and MKL) may round
# differently: then rerun the script and record the new digest, as the shipped weights must be remade.
SHORT_PRETRAIN_SHA256 = {"2.14.1": "ece1ad018840ed08ec343978da5b484858cc85df1fb8371f1dc135441c4510ef"}


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


@pytest.fixture(scope="module")
def short_pretrains(tmp_path_factory):
    """The short pretraining run twice, each in its own process (the instruction set is
    pinned before torch loads); oneDNN's verbose header names the ISA it ran with."""
    if not KERMANY.is_dir():
        pytest.skip("../shared/data/kermany-cxr is not on this machine")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the AVX2 pinning is for x86-64 CPUs")
    runs = []
    for i in range(2):
        out = tmp_path_factory.mktemp(f"pretrain{i}")
        done = subprocess.run(
            [
                sys.executable,
                "experiments/pretrain_cxr.py",
                "--data",
                str(KERMANY),
                *SHORT_PRETRAIN,
                "--ship",
                str(out),
            ],
            cwd=ROOT,
            env={**os.environ, "ONEDNN_VERBOSE": "check"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        record = json.loads((out / "custom_cxr.json").read_text())
        digest = hashlib.sha256((out / "custom_cxr.safetensors").read_bytes()).hexdigest()
        runs.append({"stdout": done.stdout, "record": record, "sha256": digest})
    return runs


def test_pretrain_cxr_gives_the_same_weights_twice_on_avx2_kernels(short_pretrains):
    first, second = short_pretrains
    assert first["sha256"] == first["record"]["sha256"] == second["sha256"] == second["record"]["sha256"]
    assert "isa:Intel AVX2" in first["stdout"]  # oneDNN took the cap set from within the script
    record = first["record"]
    assert record["deterministic"] == {"threads": 2, "isa": "AVX2", "seed": 0}
    assert record["validation"]["cpu_capability"] == "AVX2"
    assert record["validation"]["limit"] == record["validation"]["n_train"] == 256
    assert record["validation"]["epochs"] == 2 and record["image_size"] == 32
    assert " ".join(SHORT_PRETRAIN) in record["command"]  # the command that remakes the file
    assert "bit for bit" in record["note"] and "vary slightly" not in record["note"]


def test_pretrain_cxr_gives_the_recorded_weights(short_pretrains):
    version = torch.__version__.split("+")[0]
    if version not in SHORT_PRETRAIN_SHA256:
        pytest.skip(f"digest recorded for torch {sorted(SHORT_PRETRAIN_SHA256)}, not {version}")
    assert short_pretrains[0]["sha256"] == SHORT_PRETRAIN_SHA256[version]


def _films(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    films = rng.integers(0, 200, (n, 32, 32)) + 50 * labels[:, None, None]  # the second class brighter
    return films.astype(np.uint8), labels


def test_pretrain_cxr_training_is_a_function_of_its_seed(tmp_path, capsys):
    pretrain = runpy.run_path(str(ROOT / "experiments" / "pretrain_cxr.py"), run_name="pretrain")
    (x_train, y_train), (x_val, y_val) = _films(40, 0), _films(12, 1)
    parts = pretrain["Parts"](x_train, y_train, x_val, y_val, np.arange(40), np.arange(12), ["a", "b"])
    args = argparse.Namespace(epochs=2, batch_size=16, lr=3e-3, weight_decay=5e-4, patience=10, seed=0, limit=None)
    trained = []
    for _ in range(2):
        with torch.random.fork_rng():  # train_probe seeds torch's global generator
            trained.append(pretrain["train_probe"](parts, args))
    (first, summary, stats), (second, _, _) = trained
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert summary["n_train"] == 40 and summary["epochs_run"] == 2 and len(capsys.readouterr().out.splitlines()) == 4
    # The normalisation from exact integer sums is numpy's, to rounding.
    assert np.allclose(stats, (x_train.mean() / 255, x_train.std() / 255), rtol=1e-12, atol=0)
    # The record keeps every field it had and says how the file reproduces.
    args.name, args.image_size = "probe", 32
    deterministic = {"threads": 2, "isa": "AVX2", "seed": 0}
    pretrain["ship"](first.backbone, *stats, parts.classes, tmp_path, args, summary, deterministic)
    record = json.loads((tmp_path / "probe.json").read_text())
    assert record["sha256"] == hashlib.sha256((tmp_path / "probe.safetensors").read_bytes()).hexdigest()
    assert {"backbone", "image_size", "mean", "std", "classes", "validation", "command", "torch_version"} <= set(record)
    assert record["deterministic"] == deterministic and "pinned to AVX2" in record["note"]


def test_pretrain_cxr_limit_keeps_each_stratum_in_proportion():
    subset = runpy.run_path(str(ROOT / "experiments" / "pretrain_cxr.py"), run_name="pretrain")["stratified_subset"]
    index = np.arange(10, 1010)
    strata = np.zeros(1010, dtype=int)
    strata[10:760], strata[760:910] = 1, 2  # 750 / 150 / 100 of the thousand
    picked = subset(index, strata, 100, 0)
    assert len(set(picked)) == 100 and set(picked) <= set(index) and (np.diff(picked) > 0).all()
    assert np.bincount(strata[picked], minlength=3).tolist() == [10, 75, 15]
    assert (subset(index, strata, 100, 0) == picked).all() and not (subset(index, strata, 100, 1) == picked).all()
    assert subset(index, strata, None, 0) is index and subset(index, strata, 5000, 0) is index


def test_pretrain_cxr_refuses_to_run_unpinned_once_torch_is_loaded(monkeypatch):
    # Here torch is loaded before the script's first lines: its kernels cannot be pinned any more.
    for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_CBWR"):
        monkeypatch.delenv(name, raising=False)
    message = _run_script("pretrain_cxr.py", ["--data", "nowhere"], monkeypatch)
    assert isinstance(message, str) and "pinning did not take" in message and "--native-isa" in message
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ  # nothing set in this process


def test_cxr_shift_finds_the_film_a_small_centre_crop_was_made_from():
    """PneumoniaMNIST's films are centre crops of kermany-cxr's originals, shrunk to 28 px;
    kermany-cxr squashed the whole original. The matcher undoes that: a small image made
    from a centre crop of a film is matched to that film, among look-alikes."""
    import torch
    from torch.nn import functional as F

    shift = runpy.run_path(str(ROOT / "experiments" / "cxr_shift.py"), run_name="cxr_shift")
    rng = np.random.default_rng(0)
    smooth = torch.from_numpy(rng.random((12, 1, 14, 14), dtype=np.float32))
    films = (F.interpolate(smooth, size=(112, 112), mode="bilinear") * 255).squeeze(1).byte().numpy()
    middle = films[:, :, 22:90]  # a landscape original's centre square: the middle 60 % of the columns
    small = F.interpolate(torch.from_numpy(middle).float().unsqueeze(1), size=(28, 28), mode="bilinear", antialias=True)
    index, score = shift["match_films"](small.squeeze(1).round().byte().numpy()[[3, 7, 0]], films)
    assert index.tolist() == [3, 7, 0] and (score > 0.98).all()
    labels, proba = np.array([0, 0, 1, 1]), np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    assert shift["figures"](labels, proba) == {
        "auroc": 1.0,
        "accuracy": 0.75,
        "sensitivity": 1.0,
        "specificity": 0.5,
        "n": 4,
    }
