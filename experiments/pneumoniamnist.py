"""PneumoniaMNIST: the image branch against the MedMNIST v2 published results.

Trains the command of docs/results.md (custom CNN, 28 px images upsampled to 64 px, class-weighted
loss, one-cycle AdamW, augmentation) on the official train split, early-stopping on the
official validation split, once per precision, and prints validation figures next to
the published *test* figures. The official test split is withheld from this project:
validation figures are optimistic (MedMNIST's val and test differ), so the comparison
is indicative only. The fp32 run checks that bf16 autocast does not change accuracy.

    python experiments/pneumoniamnist.py [--data ../shared/data/pneumoniamnist/pneumoniamnist_trainval.npz]
        [--precisions bf16 fp32] [--out runs/pneumoniamnist]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fusion.train import main as train

PUBLISHED = [  # MedMNIST v2 (Yang et al. 2023), PneumoniaMNIST test split
    ("ResNet-18 (28 px)", 0.854, 0.944),
    ("ResNet-50 (224 px)", 0.884, 0.962),
    ("Google AutoML Vision", 0.946, 0.991),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/pneumoniamnist/pneumoniamnist_trainval.npz")
    p.add_argument("--precisions", nargs="+", default=["bf16", "fp32"])
    p.add_argument("--out", default="runs/pneumoniamnist")
    p.add_argument("extra", nargs="*", help="further fusion.train options, after --")
    args = p.parse_args()
    rows = []
    for precision in args.precisions:
        out = Path(args.out) if precision == args.precisions[0] else Path(f"{args.out}_{precision}")
        if (
            train(
                [
                    "--data",
                    args.data,
                    "--modalities",
                    "image",
                    "--precision",
                    precision,
                    "--out",
                    str(out),
                    "--quiet",
                    *args.extra,
                ]
            )
            != 0
        ):
            raise SystemExit(f"training with {precision} failed")
        m = json.loads((out / "metrics.json").read_text())
        rows.append(
            (
                f"fusion custom CNN 64 px, {precision} (validation)",
                m["val"]["accuracy"],
                m["val"]["auroc_macro"],
                m["seconds"],
                str(out),
            )
        )
    print("\n| model | ACC | AUC | training s | split |\n|---|---|---|---|---|")
    for name, acc, auc, sec, out in rows:
        print(f"| {name} | {acc:.3f} | {auc:.3f} | {sec:.0f} | val ({out}) |")
    for name, acc, auc in PUBLISHED:
        print(f"| {name} | {acc:.3f} | {auc:.3f} | | test (published) |")


if __name__ == "__main__":
    main()
