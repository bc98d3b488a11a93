"""Choose a cohort's defaults on its validation split: several configurations trained on
the same grouped train/validation/test split of the development data, each scored on
validation (what is chosen by) and on the split's test part (a check, never a choice),
under the argmax decision and under decisions that correct for the class priors.

A decision rule with strength ``a`` reads the label off ``p / prior ** a``: 0 is argmax,
1 the balanced rule (``calibration.decision = "balanced"``), which maximises balanced
accuracy at the cost of accuracy on a skewed cohort. Priors are the training part's.

    python experiments/select_defaults.py --data ../shared/data/ham10000 --schema ham10000 \\
        --models "fused=fused" "fused_none=fused,train.balance=none" \\
        "image_none=image_network,image.pretrained=null,train.balance=none" --out runs/select_ham.json

Models are written as in ``experiments/cv.py`` (``LABEL=BASE,SETTING=VALUE,...``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cv import model_configs, parse_models, resolved_with_data

from fusion import FusionClassifier, grouped_split
from fusion.evaluation import balanced_accuracy, macro_auroc

STRENGTHS = (0.0, 0.5, 1.0)


def scores(labels: np.ndarray, proba: np.ndarray, prior: np.ndarray) -> dict:
    """Macro AUROC, and accuracy and balanced accuracy under each decision strength."""
    out = {"macro_auroc": round(macro_auroc(labels, proba), 4)}
    for a in STRENGTHS:
        pred = (proba / prior**a).argmax(axis=1)
        out[f"a={a}"] = {
            "accuracy": round(float((pred == labels).mean()), 4),
            "balanced_accuracy": round(balanced_accuracy(labels, pred), 4),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--schema", required=True)
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    configs = parse_models(args.models, model_configs())
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    datasets = {}
    for name, cfg in configs.items():
        cfg.train.seed = args.seed
        cfg, ds = resolved_with_data(cfg, args.data, args.schema, datasets)
        split = grouped_split(ds.labels, ds.groups, seed=args.seed)
        prior = np.bincount(ds.labels[split["train"]], minlength=len(ds.classes)) / len(split["train"])
        start = time.perf_counter()
        clf = FusionClassifier(cfg).fit(ds.subset(split["train"]), ds.subset(split["val"]))
        seconds = time.perf_counter() - start
        results[name] = {"seconds": round(seconds, 1), "epochs_run": clf.history_.get("epochs_run")}
        for part in ("val", "test"):
            proba = clf.predict_dataset(ds.subset(split[part]))
            results[name][part] = scores(ds.labels[split[part]], proba, prior)
        print(name, json.dumps(results[name]), flush=True)
        out_path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
