"""experiments/peers.py: peers on fusion's folds, scored with fusion's metrics; a peer
whose package is missing is skipped with the reason (the peers' own packages are not
installed in CI: the in-environment HistGradientBoosting peer is what runs here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_peers_on_the_same_folds_with_paired_differences(tmp_path):
    out = tmp_path / "peers.json"
    cmd = [sys.executable, str(ROOT / "experiments" / "peers.py"), "--synthetic-n", "150", "--folds", "3"]
    cmd += ["--peers", "hgb", "widedeep", "--fusion-models", "xgboost", "--n-boot", "50", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["reference"] == "fusion:xgboost" and report["folds"] == 3 and report["n"] == 150
    assert {"cpu_capability", "bf16", "cores"} <= set(report["machine"])
    hgb = report["models"]["hgb"]
    for metric in ("balanced_accuracy", "macro_auroc", "macro_f1"):
        figure = hgb[metric]
        assert figure["low"] <= figure["point"] <= figure["high"]
        assert "difference" in figure and "difference" not in report["models"]["fusion:xgboost"][metric]
    assert hgb["peak_rss_mb"] > 0 and len(hgb["fit_seconds"]) == 3 and hgb["notes"]["by_hand"]
    if importlib.util.find_spec("pytorch_widedeep") is None:
        assert report["models"]["widedeep"]["skipped"].startswith("skipped: pytorch_widedeep is not installed")
