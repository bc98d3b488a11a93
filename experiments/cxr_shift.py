"""Validation of the pneumonia-vs-normal image branch that can see shift.

A patient-grouped split of kermany-cxr cannot tell a model that reads the lungs from one
that reads how this one collection was filmed: both score AUROC 0.99+ on it, and the
official test split (withheld) tells them apart. This script scores a candidate recipe
on three views, none of them a test split:

- ``held_out_224``: kermany-cxr films of the patients whose films make PneumoniaMNIST's
  validation split (found by matching pixels, :func:`pneumoniamnist_val_files`); the
  candidate is trained on every other patient, so these are unseen patients, at the
  training data's own 224 px: the internal figure.
- ``pneumoniamnist_val_28``: the same patients' films as PneumoniaMNIST holds them,
  centre-cropped and shrunk to 28 px, brought up to the model's size. Fine detail is
  gone. In kermany-cxr normal films are sharper than pneumonia films (larger originals,
  an acquisition trait); a model that learnt sharpness as a sign of health calls these
  normal films pneumonia. Its *specificity* here is the shortcut's measure.
- ``nih_dev``: the nih-pneumonia development part, pneumonia vs no finding: adults, another
  hospital, another disease mix. Pediatric films teach little about adults (every recipe
  measured scores near chance); reported so that nobody reads the pediatric figure as an
  adult one.

    python experiments/cxr_shift.py --shared ../shared/data \\
        --recipe default= --recipe "detail_off=--detail 0" --seeds 0 1 --out runs/cxr_shift.json

Each recipe is a name and the extra flags of ``python -m fusion.train`` (on top of
``--modalities image`` and the kermany schema); each seed is one training. The JSON
holds every figure per recipe and seed and their means.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
# PneumoniaMNIST centre-crops each original to its short side; kermany-cxr squashed the
# whole original to 224 x 224. A centre crop of a landscape original is the middle
# `fraction` of a squashed film's columns (of its rows for a portrait one).
CROP_FRACTIONS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)
MATCH_SIDE = 28
PATIENTS = Path(__file__).resolve().parent / "splits" / "kermany_pneumoniamnist_val_patients.txt"
PATIENTS_HEADER = (
    "# kermany-cxr patients whose films make PneumoniaMNIST's validation split (MedMNIST v2), found by\n"
    "# matching pixels (experiments/cxr_shift.py --write-patients; every matched film has the small image's label).\n"
    "# The shift-aware validation part of experiments/pretrain_cxr.py and experiments/cxr_shift.py.\n"
)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Each image as a zero-mean, unit-norm row: a dot product is then a correlation."""
    rows = x.reshape(len(x), -1).astype(np.float32)
    rows -= rows.mean(axis=1, keepdims=True)
    return rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-6)


def match_films(small: np.ndarray, films: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each 28 px image of ``small`` (n, 28, 28), the index of the film of ``films``
    (m, S, S) it was made from, and the correlation of the match.

    Every film is centre-cropped at each of :data:`CROP_FRACTIONS` (columns, and rows for
    portrait originals), shrunk to 28 px and compared with every small image; the best
    correlation wins. On PneumoniaMNIST's validation split the median correlation is
    0.99 and every matched film has the small image's label.
    """
    x = torch.from_numpy(np.ascontiguousarray(films)).float().unsqueeze(1)
    side = x.shape[-1]
    target = _unit_rows(small)
    best = np.full(len(small), -np.inf)
    index = np.zeros(len(small), dtype=np.int64)
    for fraction in CROP_FRACTIONS:
        width = round(side * fraction)
        start = (side - width) // 2
        crops = [x[..., start : start + width]] + ([x[..., start : start + width, :]] if fraction < 1 else [])
        for crop in crops:
            shrunk = F.interpolate(crop, size=(MATCH_SIDE, MATCH_SIDE), mode="bilinear", antialias=True)
            scores = target @ _unit_rows(shrunk.squeeze(1).numpy()).T
            top = scores.argmax(axis=1)
            value = scores[np.arange(len(small)), top]
            better = value > best
            best[better], index[better] = value[better], top[better]
    return index, best


def read_films(folder: Path, files, side: int = 224) -> np.ndarray:
    """Gray uint8 films (n, side, side), resized (aspect ratio not kept, as kermany-cxr)."""
    out = np.empty((len(files), side, side), dtype=np.uint8)
    for i, name in enumerate(files):
        with Image.open(folder / name) as image:
            gray = image.convert("L")
            out[i] = np.asarray(gray if gray.size == (side, side) else gray.resize((side, side), Image.BILINEAR))
    return out


def pneumoniamnist_val_files(kermany: Path, npz: Path) -> tuple[list[str], float]:
    """The kermany-cxr files of PneumoniaMNIST's validation films, and the share of them
    whose label agrees (1.0 when the match is right)."""
    table = pd.read_csv(kermany / "metadata.csv")
    films = read_films(kermany / "images", table["filename"])
    with np.load(npz) as z:
        small, labels = z["val_images"], z["val_labels"].ravel()
    index, _ = match_films(small, films)
    agree = float(((table["finding"].to_numpy()[index] == "pneumonia").astype(int) == labels).mean())
    return list(table["filename"].to_numpy()[index]), agree


def held_out_patients(path: Path = PATIENTS) -> set[str]:
    """The patients of PneumoniaMNIST's validation films, as :func:`write_patients` listed them."""
    lines = path.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def write_patients(shared: Path, path: Path = PATIENTS) -> tuple[int, float]:
    """Match PneumoniaMNIST's validation films to kermany-cxr and list their patients
    (committed, so that a split does not cost a match and can be read in review)."""
    kermany = shared / "kermany-cxr"
    files, agree = pneumoniamnist_val_files(kermany, shared / "pneumoniamnist" / "pneumoniamnist_trainval.npz")
    table = pd.read_csv(kermany / "metadata.csv").set_index("filename")
    patients = sorted(set(table.loc[files, "patientid"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PATIENTS_HEADER + "\n".join(patients) + "\n")
    return len(patients), agree


def shift_views(shared: Path, patients: set[str]) -> dict:
    """The three views: name -> (images, labels 0 normal / 1 pneumonia)."""
    kermany, pmnist = shared / "kermany-cxr", shared / "pneumoniamnist" / "pneumoniamnist_trainval.npz"
    table = pd.read_csv(kermany / "metadata.csv")
    held = table[table["patientid"].isin(patients)]
    nih = pd.read_csv(shared / "nih-pneumonia" / "metadata.csv")
    with np.load(pmnist) as z:
        small, small_labels = z["val_images"], z["val_labels"].ravel().astype(int)
    return {
        "held_out_224": (read_films(kermany / "images", held["filename"]), _pneumonia(held["finding"])),
        "pneumoniamnist_val_28": (small, small_labels),
        "nih_dev": (read_films(shared / "nih-pneumonia" / "images", nih["filename"]), _pneumonia(nih["finding"])),
    }


def _pneumonia(finding: pd.Series) -> np.ndarray:
    return (finding.to_numpy() == "pneumonia").astype(int)


def figures(labels: np.ndarray, proba: np.ndarray) -> dict:
    """AUROC, accuracy of the model's own decision (argmax), sensitivity, specificity."""
    from fusion.evaluation import rank_auroc

    predicted = proba.argmax(axis=1)
    sensitivity = float((predicted[labels == 1] == 1).mean())
    specificity = float((predicted[labels == 0] == 0).mean())
    return {
        "auroc": round(float(rank_auroc(labels == 1, proba[:, 1])), 4),
        "accuracy": round(float((predicted == labels).mean()), 4),
        "sensitivity": round(sensitivity, 4),
        "specificity": round(specificity, 4),
        "n": len(labels),
    }


def score_model(folder: Path, views: dict) -> dict:
    """A saved model's figures on each view (its calibrated probabilities, its decision)."""
    from fusion import FusionClassifier

    model = FusionClassifier.load(folder)
    return {name: figures(labels, model.predict_proba(images=images)) for name, (images, labels) in views.items()}


def development_folder(shared: Path, held_out: set[str], out: Path) -> tuple[Path, Path]:
    """kermany-cxr without the held-out patients: a metadata.csv beside a link to the
    shared films, and the kermany schema allowed to read them there."""
    out.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(shared / "kermany-cxr" / "metadata.csv")
    table[~table["patientid"].isin(held_out)].to_csv(out / "metadata.csv", index=False)
    link = out / "images"
    if not link.exists():
        link.symlink_to((shared / "kermany-cxr" / "images").resolve(), target_is_directory=True)
    schema = (ROOT / "data" / "schema" / "kermany_cxr.toml").read_text()
    schema = schema.replace('folder = "images"', 'folder = "images"\nallow_outside = true', 1)
    (out / "kermany_cxr.toml").write_text(schema)
    return out, out / "kermany_cxr.toml"


def train_and_score(flags: list[str], seed: int, data: Path, schema: Path, views: dict, workdir: Path) -> dict:
    """One candidate: ``python -m fusion.train`` on the development folder, then its views."""
    run = workdir / f"run_{seed}"
    command = [sys.executable, "-m", "fusion.train", "--data", str(data), "--schema", str(schema)]
    command += ["--modalities", "image", "--seed", str(seed), "--out", str(run), "--quiet", *flags]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "seed": seed,
        "seconds": round(seconds, 1),
        "best_epoch": metrics["best_epoch"],
        "internal_val": {
            "auroc": round(metrics["val"]["auroc_macro"], 4),
            "accuracy": round(metrics["val"]["accuracy"], 4),
        },
        **score_model(run, views),
    }


def mean_of(rows: list[dict]) -> dict:
    """Each view's figures averaged over seeds."""
    out = {}
    for view in ("internal_val", "held_out_224", "pneumoniamnist_val_28", "nih_dev"):
        keys = [k for k in rows[0][view] if k != "n"]
        out[view] = {k: round(float(np.mean([r[view][k] for r in rows])), 4) for k in keys}
    out["seconds"] = round(float(np.mean([r["seconds"] for r in rows])), 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"), help="the folder of the shared cohorts")
    p.add_argument("--write-patients", action="store_true", help="match the films again and rewrite the patient list")
    p.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="a candidate: its name and fusion.train flags",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", help="JSON file of the figures (with --recipe)")
    args = p.parse_args()
    shared = Path(args.shared)
    if args.write_patients:
        n, agree = write_patients(shared)
        print(f"{n} patients written to {PATIENTS}; label agreement of the matched films {agree:.3f}")
    if not args.recipe:
        return
    if not args.out:
        p.error("--recipe needs --out")
    patients = held_out_patients()
    views = shift_views(shared, patients)
    result = {"views": {k: len(v[1]) for k, v in views.items()}, "held_out_patients": len(patients)}
    result.update(machine=_machine(), recipes={})
    with tempfile.TemporaryDirectory() as tmp:
        data, schema = development_folder(shared, patients, Path(tmp) / "kermany_dev")
        for recipe in args.recipe:
            name, _, flags = recipe.partition("=")
            rows = [train_and_score(shlex.split(flags), s, data, schema, views, Path(tmp) / name) for s in args.seeds]
            result["recipes"][name] = {"flags": flags, "runs": rows, "mean": mean_of(rows)}
            print(name, json.dumps(result["recipes"][name]["mean"]), flush=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


def _machine() -> dict:
    import os

    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }


if __name__ == "__main__":
    main()
