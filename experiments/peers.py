"""Peers side by side with fusion: the same folds, the same metrics, the same machine.

Each peer is a *runner*, a small script in ``experiments/peer_runners/`` that trains on
each fold's training part and writes out-of-fold probabilities. Runners run in a
subprocess, with the peer's own Python when it needs one (``--python widedeep=PATH``):
the peers pin versions of pandas, numpy and torch that cannot share one environment
with fusion or with each other (pytorch-widedeep 1.7 wants pandas 3.0 and numpy 1.26,
AutoGluon 1.6 pandas 2.3, fusilli 2.0 torch 2.12), so each goes in its own virtual
environment (the ``peers-*`` extras of pyproject.toml say what to install there). A peer
whose package is missing is skipped, saying so.

The harness (here, in fusion's environment) writes each fold's data once as plain files
(``payload/``): the images as fusion decodes them (uint8, at the image size fusion's run
uses), the records as the schema parses them (numbers, category names, blanks for
missing), the labels, the groups and the folds of ``experiments/cv.py`` (patient- or
lesion-grouped, stratified, the same seeds; inside each training part a grouped 20 %
for early stopping and tuning). Every model, fusion's included, is scored on its pooled
out-of-fold probabilities with fusion's metrics: balanced accuracy, macro AUROC and
macro-F1, each with a 95 % bootstrap interval over groups, and the paired difference
from fusion's best model on the same groups. Wall time and peak memory (the runner
process's maximum resident set) are measured per peer, and the machine is recorded.

    python experiments/peers.py --data ../shared/data/nih-pneumonia --schema nih_pneumonia \\
        --peers hgb autogluon widedeep --python autogluon=/venvs/ag/bin/python \\
        --python widedeep=/venvs/wd/bin/python --out runs/peers_nih.json

Without ``--data``: the embedded synthetic cohort (``--synthetic-n``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cv import cached_out_of_fold, model_configs, resolved_with_data  # noqa: E402

from fusion import classification_metrics, grouped_kfold, grouped_split  # noqa: E402
from fusion.environment import machine, versions  # noqa: E402
from fusion.evaluation import balanced_accuracy, bootstrap_interval, macro_auroc  # noqa: E402

RUNNERS = HERE / "peer_runners"
PEERS = {
    "hgb": "scikit-learn's HistGradientBoostingClassifier on the record (native missing values and categories)",
    "autogluon": "AutoGluon TabularPredictor on the record (medium_quality preset, its own stacking)",
    "autogluon_haim": "AutoGluon TabularPredictor on the record plus fusion's frozen image embedding (HAIM recipe)",
    "autogluon_mm": "AutoGluon MultiModalPredictor: a timm ResNet-18 (no pretrained weights) and MLPs, one network",
    "widedeep": "pytorch-widedeep: TabMlp + its Vision CNN from scratch, joined by WideDeep's head",
    "fusilli_concat": "fusilli ConcatImageMapsTabularData: the record concatenated with the image's feature maps",
    "fusilli_attention": "fusilli CrossmodalMultiheadAttention: each modality attends to the other",
    "fusilli_subspace": "fusilli ConcatImgLatentTabDoubleLoss: an image autoencoder's latent space plus the record",
    "fusilli_image": "fusilli ImgUnimodal: its image network alone (how much of the fusilli models is the image)",
    "fusilli_image_masked": "fusilli ImgUnimodal on films with their outer eighth blanked (how much sits at the edges)",
    "fusilli_image_pooled": "fusilli ImgUnimodal with its last maps averaged, not flattened (how much is the layout)",
}
MISSING = 3  # a runner's exit status when its peer's package is not installed
# Each peer's runner (not named like the package it imports: the runner's folder comes
# first on its sys.path, and autogluon.py would shadow autogluon).
RUNNER_FILES = {
    "hgb": "hgb.py",
    "autogluon": "autogluon_runner.py",
    "autogluon_haim": "autogluon_runner.py",
    "autogluon_mm": "autogluon_multimodal.py",
    "widedeep": "widedeep.py",
    "fusilli_concat": "fusilli_runner.py",
    "fusilli_attention": "fusilli_runner.py",
    "fusilli_subspace": "fusilli_runner.py",
    "fusilli_image": "fusilli_runner.py",
    "fusilli_image_masked": "fusilli_runner.py",
    "fusilli_image_pooled": "fusilli_runner.py",
}


def _macro_f1(y: np.ndarray, proba: np.ndarray) -> float:
    k = proba.shape[1]
    return classification_metrics(y, np.eye(k)[proba.argmax(axis=1)], [str(i) for i in range(k)])["macro_f1"]


METRICS = {
    "balanced_accuracy": lambda y, p: balanced_accuracy(y, p.argmax(axis=1)),
    "macro_auroc": macro_auroc,
    "macro_f1": _macro_f1,
}


def write_payload(ds, folds, seed: int, folder: Path) -> Path:
    """The data every runner reads: images, records, labels, groups, folds."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(
        folder / "data.npz",
        images=ds.images if ds.images is not None else np.zeros((len(ds), 0), np.uint8),
        labels=ds.labels,
        groups=np.asarray(ds.groups).astype(str),
        classes=np.asarray(ds.classes),
    )
    features = [{"name": f.name, "kind": f.type} for f in ds.schema.features] if ds.schema is not None else []
    (folder / "features.json").write_text(json.dumps(features))
    if ds.records is not None:
        ds.records[[f["name"] for f in features]].to_csv(folder / "records.csv", index=False)
    plan = []
    for i, (train_idx, test_idx) in enumerate(folds):
        inner = grouped_split(
            ds.labels[train_idx], np.asarray(ds.groups)[train_idx], val_fraction=0.2, test_fraction=0.0, seed=seed + i
        )
        plan.append(
            {
                "train": train_idx.tolist(),
                "test": test_idx.tolist(),
                "inner_train": train_idx[inner["train"]].tolist(),
                "inner_val": train_idx[inner["val"]].tolist(),
            }
        )
    (folder / "folds.json").write_text(json.dumps(plan))
    return folder


def run_peer(name: str, python: str, payload: Path, out: Path, budget: float, seed: int, embedding) -> dict:
    """Run one peer's runner in its own process; its probabilities, seconds, peak memory
    and notes, or why it was skipped."""
    cmd = [python, str(RUNNERS / RUNNER_FILES[name]), "--payload", str(payload), "--out", str(out)]
    cmd += ["--budget-s", str(budget), "--seed", str(seed), "--peer", name]
    if embedding is not None:
        cmd += ["--embedding", str(embedding)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode == MISSING:
        return {"skipped": output.strip().splitlines()[-1]}
    if proc.returncode != 0:
        return {"failed": output[-3000:]}
    with np.load(out, allow_pickle=False) as got:
        result = {"proba": got["proba"], "fit_seconds": got["seconds"].tolist()}
    result.update(
        wall_seconds=round(wall, 1),
        peak_rss_mb=round(usage.ru_maxrss / 1024, 1),
        notes=json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {},
    )
    return result


def score(ds, proba: np.ndarray, seed: int, n_boot: int, baseline: np.ndarray | None = None) -> dict:
    """Each metric with its interval over groups, and with ``baseline`` the paired
    difference (this minus baseline) on the same groups."""
    out = {}
    for metric, fn in METRICS.items():
        r = bootstrap_interval(ds.labels, proba, ds.groups, metric=fn, n_boot=n_boot, seed=seed)
        out[metric] = {k: r[k] for k in ("point", "low", "high")}
        if baseline is not None:
            d = bootstrap_interval(ds.labels, proba, ds.groups, metric=fn, baseline=baseline, n_boot=n_boot, seed=seed)
            out[metric]["difference"] = {k: d[k] for k in ("point", "low", "high")}
    return out


def fusion_reference(args, ds, datasets, folds, seed: int) -> dict[str, dict]:
    """Out-of-fold probabilities of fusion's models on the same folds (cv.py's code)."""
    configs = model_configs()
    out = {}
    for name in args.fusion_models:
        cfg = configs[name]
        cfg.image.image_size = args.image_size or cfg.image.image_size
        cfg, fds = resolved_with_data(cfg, args.data, args.schema, datasets)
        cfg.train.seed = seed
        path = Path(args.oof_dir) / f"{name}_seed{seed}.npz" if args.oof_dir else None
        start = time.perf_counter()
        oof, fit = cached_out_of_fold(fds, cfg, folds, seed, path)
        out[f"fusion:{name}"] = {
            "proba": oof["proba"],
            # read back from --oof-dir, the training seconds the cache recorded (not ~0)
            "wall_seconds": round(max(time.perf_counter() - start, fit), 1),
            # fusion runs in this process: its peak so far (data loading included), an upper bound
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    return out


def image_embedding(args, datasets, folder: Path) -> Path:
    """Fusion's frozen image embedding of every row, as its ``gbm`` strategy computes it
    (the shipped backbone at its size, the schema's detail and channels): a fixed
    feature extractor fitted on no fold, so none leaks into another."""
    from fusion.backends.members import FrozenEmbedder

    cfg, ds = resolved_with_data(model_configs()["gbm"], args.data, args.schema, datasets)
    if args.data is None:
        # The synthetic cohort is drawn anew for each image size: its rows at the
        # embedder's size are not the rows the harness scores.
        raise ValueError("the synthetic cohort is generated per image size; use a data folder")
    channels = 3 if ds.images.ndim == 4 else 1
    embedder = FrozenEmbedder(
        cfg.image.backbone, cfg.starting_weights, cfg.image.image_size, channels, cfg.image.detail
    )
    path = folder / "embedding.npy"
    np.save(path, embedder.fit(ds.images).transform(ds.images))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="dataset folder (default: the synthetic cohort)")
    p.add_argument("--schema", help="schema file or built-in name")
    p.add_argument("--synthetic-n", type=int, default=600)
    p.add_argument("--peers", nargs="+", default=["hgb", "autogluon", "widedeep"], choices=list(PEERS))
    p.add_argument("--python", action="append", default=[], metavar="PEER=PATH", help="the peer's own interpreter")
    p.add_argument("--fusion-models", nargs="+", default=["fused", "xgboost"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--image-size", type=int, help="default: the fused model's")
    p.add_argument("--budget-s", type=float, default=120.0, help="seconds per fold each peer may train")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--oof-dir", help="keep fusion's out-of-fold predictions here (resumable)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    pythons = dict(entry.split("=", 1) for entry in args.python)
    datasets: dict = {}
    cfg, ds = resolved_with_data(model_configs()["fused"], args.data, args.schema, datasets)
    if args.data is None:
        from fusion import load_dataset

        ds = load_dataset(None, image_size=cfg.image.image_size, synthetic_n=args.synthetic_n)
        datasets[cfg.image.image_size] = ds
    folds = grouped_kfold(ds.labels, ds.groups, k=args.folds, seed=args.seed)
    results = fusion_reference(args, ds, datasets, folds, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        payload = write_payload(ds, folds, args.seed, Path(tmp) / "payload")
        embedding, no_embedding = None, None
        if "autogluon_haim" in args.peers:
            try:
                embedding = image_embedding(args, datasets, payload)
            except ValueError as err:  # no shipped weights read these images (colour, say)
                no_embedding = f"skipped: fusion has no frozen image embedding for these images ({err})"
        for name in args.peers:
            # the peer's own interpreter, else its family's (autogluon for autogluon_haim)
            python = pythons.get(name, pythons.get(name.split("_")[0], sys.executable))
            print(f"{name}: running with {python}", flush=True)
            if name.endswith("_haim") and no_embedding:
                results[name] = {"skipped": no_embedding}
                continue
            extra = embedding if name.endswith("_haim") else None
            results[name] = run_peer(name, python, payload, Path(tmp) / f"{name}.npz", args.budget_s, args.seed, extra)
    best = max(
        (n for n in results if n.startswith("fusion:")),
        key=lambda n: macro_auroc(ds.labels, results[n]["proba"]),
    )
    report = {
        "data": args.data or f"synthetic ({args.synthetic_n})",
        "schema": args.schema,
        "n": len(ds),
        "groups": len(set(np.asarray(ds.groups).tolist())),
        "classes": list(ds.classes),
        "folds": args.folds,
        "seed": args.seed,
        "image_size": cfg.image.image_size,
        "budget_s_per_fold": args.budget_s,
        "reference": best,
        "machine": machine(),
        "versions": versions(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "models": {},
    }
    for name, r in results.items():
        entry = {k: v for k, v in r.items() if k != "proba"}
        if "proba" in r:
            baseline = None if name == best else results[best]["proba"]
            entry.update(score(ds, r["proba"], args.seed, args.n_boot, baseline))
            entry["accuracy"] = classification_metrics(ds.labels, r["proba"], ds.classes)["accuracy"]
        report["models"][name] = entry
        print(name, json.dumps({k: v for k, v in entry.items() if k in METRICS or k in ("skipped", "failed")})[:400])
    Path(args.out).write_text(json.dumps(report, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
