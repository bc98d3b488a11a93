"""What every peer runner shares: reading the harness's payload, writing its answer.
Imports numpy and pandas only, so that it runs in any peer's environment."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

MISSING = 3  # the exit status that tells the harness the peer's package is not installed


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--payload", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--budget-s", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embedding")
    p.add_argument("--peer", help="the peer's name in the harness (a runner may serve several)")
    return p.parse_args()


def require(module: str, install: str):
    """The peer's package, or exit with :data:`MISSING` saying how to install it."""
    try:
        return __import__(module)
    except ImportError as err:
        print(f"skipped: {module} is not installed here ({err}); pip install {install}", flush=True)
        sys.exit(MISSING)


class Payload:
    """The folds and data the harness wrote (see experiments/peers.py)."""

    def __init__(self, folder: str):
        folder = Path(folder)
        with np.load(folder / "data.npz", allow_pickle=False) as data:
            self.images = data["images"]
            self.labels = data["labels"]
            self.groups = data["groups"]
            self.classes = [str(c) for c in data["classes"]]
        self.features = json.loads((folder / "features.json").read_text())
        records = folder / "records.csv"
        self.records = pd.read_csv(records, keep_default_na=True) if records.exists() else None
        if self.records is not None:
            for f in self.features:
                if f["kind"] != "numeric":
                    self.records[f["name"]] = self.records[f["name"]].astype("string")
        self.folds = json.loads((folder / "folds.json").read_text())

    @property
    def numeric(self) -> list[str]:
        return [f["name"] for f in self.features if f["kind"] == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [f["name"] for f in self.features if f["kind"] != "numeric"]


def by_class(frame: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """A predictor's probability table (one column per class it saw) as an array in the
    harness's class order; a class it never saw gets probability 0."""
    return np.column_stack([frame[c].to_numpy() if c in frame.columns else np.zeros(len(frame)) for c in classes])


def log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log probability of the true class (clipped at 1e-7): how the runners
    choose among the settings they try on the inner split."""
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-7, 1))))


def write(out: str, proba: np.ndarray, seconds: list[float], notes: dict) -> None:
    np.savez(out, proba=proba, seconds=np.asarray(seconds))
    Path(out).with_suffix(".json").write_text(json.dumps(notes))
