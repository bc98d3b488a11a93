"""The experiment scripts run (tiny sizes): they use only the public API, so a change
there that breaks them must fail here, not in the next person's benchmark."""

import json
import runpy
import sys
from pathlib import Path

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
