"""The experiment scripts run (tiny sizes): they use only the public API, so a change
there that breaks them must fail here, not in the next person's benchmark."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_bench_writes_every_figure_it_promises(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "experiments/bench.py", "--n-train", "64", "--epochs", "2", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
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
    assert "predict_ms_p50" in proc.stdout  # the printed table
