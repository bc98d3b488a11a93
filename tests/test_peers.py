"""experiments/peers.py: peers on fusion's folds, scored with fusion's metrics; a peer
whose package is missing is skipped with the reason (the peers' own packages are not
installed in CI: the in-environment HistGradientBoosting peer is what runs here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_peers_on_the_same_folds_with_paired_differences(tmp_path):
    out = tmp_path / "peers.json"
    cmd = [sys.executable, str(ROOT / "experiments" / "peers.py"), "--synthetic-n", "150", "--folds", "3"]
    cmd += ["--peers", "hgb", "widedeep", "fusilli_concat", "autogluon_mm", "--fusion-models", "xgboost"]
    cmd += ["--n-boot", "50", "--out", str(out)]
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
    for peer, package in (("widedeep", "pytorch_widedeep"), ("fusilli_concat", "fusilli")):
        if importlib.util.find_spec(package) is None:
            assert report["models"][peer]["skipped"].startswith(f"skipped: {package} is not installed")
    if importlib.util.find_spec("autogluon") is None:
        assert report["models"]["autogluon_mm"]["skipped"].startswith("skipped: autogluon.multimodal is not installed")


def runner(name: str, folder: str = "experiments/peer_runners"):
    """A peer runner's module (or, with ``folder``, another script's), imported here: its
    helpers need numpy and pandas only."""
    sys.path.insert(0, str(ROOT / folder))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.pop(0)


def test_fusilli_gets_the_record_as_numbers_filled_by_hand_on_the_training_part():
    import numpy as np
    import pandas as pd

    records = pd.DataFrame({"age": [30.0, np.nan, 50.0, 70.0], "sex": pd.array(["m", None, "f", "x"], dtype="string")})
    table = runner("fusilli_runner").numeric_table(records, ["age"], ["sex"], fit_rows=[0, 1, 2])
    assert list(table.columns) == ["age_missing", "age", "sex=f", "sex=m", "sex=missing"]
    assert not table.isna().any().any()
    # the gap takes the training part's median (40); standardised on that part (mean 40, sd 10)
    assert np.allclose(table["age"], [-1.0, 0.0, 1.0, 3.0])
    assert np.allclose(table.iloc[:3].mean(), 0.0)
    # a level never seen in training (x) gets no column: it reads as none of the known levels
    seen = table.loc[3, ["sex=f", "sex=m", "sex=missing"]].to_numpy()
    # (each level is 1 in one of the three training rows: mean 1/3, sd 1/sqrt(3))
    assert np.allclose(seen, -((1 / 3) ** 0.5))


def test_the_table_over_seeds_gives_each_seeds_figure_and_the_means():
    tables = runner("peers_table", folder="experiments")

    def report(seed, fused, hgb):
        figure = lambda point, delta=None: {"point": point, **({"difference": {"point": delta}} if delta else {})}  # noqa: E731
        return {
            "data": "covid", "n": 10, "folds": 5, "budget_s_per_fold": 60.0, "seed": seed,
            "reference": "fusion:fused",
            "models": {
                "fusion:fused": {"macro_auroc": figure(fused)},
                "hgb": {"macro_auroc": figure(hgb, hgb - fused)},
                "widedeep": {"skipped": "skipped: not installed"},
            },
        }  # fmt: skip

    text = tables.over_seeds([report(0, 0.60, 0.70), report(1, 0.70, 0.60)])
    assert "| hgb | 0.700 | 0.600 | 0.650 | +0.100, -0.100 | +0.000 |" in text
    assert "| fusion:fused | 0.600 | 0.700 | 0.650 | reference, reference |  |" in text
    assert "widedeep" not in text  # scored on no seed
    with pytest.raises(SystemExit, match="one report per seed"):
        tables.over_seeds([report(0, 0.6, 0.7), report(0, 0.6, 0.7)])
