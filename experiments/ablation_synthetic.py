"""Fused model against its ablations on the embedded synthetic cohort.

Trains, on the same patient-grouped split: the fused network (image + tabular), the
image-only and tabular-only networks, and the XGBoost baseline, for each seed, and
prints a table of test macro-F1 and run time (the synthetic results of docs/results.md).

    python experiments/ablation_synthetic.py [--seeds 0 1 2] [--out runs/ablation]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fusion.train import main as train

RUNS = {
    "fused (image + tabular)": ["--modalities", "image,tabular"],
    "image only": ["--modalities", "image"],
    "tabular MLP": ["--modalities", "tabular"],
    "XGBoost (tabular)": ["--modalities", "tabular", "--model", "xgboost"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default="runs/ablation_synthetic")
    args = p.parse_args()
    rows = []
    for seed in args.seeds:
        for name, flags in RUNS.items():
            out = Path(args.out) / f"seed{seed}" / name.split(" ")[0].lower()
            if train([*flags, "--seed", str(seed), "--out", str(out), "--quiet"]) != 0:
                raise SystemExit(f"run {name} (seed {seed}) failed")
            m = json.loads((out / "metrics.json").read_text())
            rows.append((seed, name, m["test"]["macro_f1"], m["test"]["auroc_macro"], m["seconds"]))
    print(f"\n{'seed':>4}  {'model':<26}{'test macro-F1':>14}{'test AUROC':>12}{'seconds':>9}")
    for seed, name, f1, auc, sec in rows:
        print(f"{seed:>4}  {name:<26}{f1:>14.3f}{auc:>12.3f}{sec:>9.1f}")


if __name__ == "__main__":
    main()
