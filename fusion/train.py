"""Train a model: ``python -m fusion.train [options]``.

Without ``--data`` it trains on the embedded synthetic cohort. The run folder
(``--out``, default ``runs/<timestamp>``) receives the saved model, ``metrics.json``
(validation and test figures, every skipped row) and plots.

Examples
--------
python -m fusion.train --modalities image,tabular
python -m fusion.train --modalities tabular --model xgboost
python -m fusion.train --data ../shared/data/pneumoniamnist/pneumoniamnist_trainval.npz --modalities image
torchrun --standalone --nproc_per_node=2 -m fusion.train --modalities image,tabular

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same run trains with DistributedDataParallel
(see :mod:`fusion.training.distributed`); only rank 0 writes the run folder.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np

from fusion import __version__
from fusion.allocator import tune_allocator
from fusion.classifier import FusionClassifier
from fusion.cli import add_cache_arguments, cache_options, fail, finite_number, integer, log_to_terminal
from fusion.config import DEVICES, FUSIONS, MODELS, PRECISIONS, Config
from fusion.data.dataset import Dataset
from fusion.data.loaders import load_dataset
from fusion.evaluation import classification_metrics, format_metrics, metric_intervals
from fusion.evaluation.calibration import calibration_report, operating_point_report
from fusion.evaluation.card import model_card
from fusion.evaluation.subgroups import subgroup_report
from fusion.nets.registry import BACKBONES, PRETRAINED
from fusion.persistence import write_json
from fusion.plots import plot_confusion, plot_history, plot_reliability, plot_roc
from fusion.training import distributed
from fusion.training.checkpoint import PROGRESS, mark_complete, read_progress


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fusion.train", description="Train a fusion model (image + clinical record)."
    )
    d = Config()
    p.add_argument(
        "--data",
        help="dataset folder (metadata.csv + images), CSV file or MedMNIST .npz; "
        "default: the embedded synthetic cohort",
    )
    p.add_argument("--schema", help="schema TOML file or built-in name (default: the folder's schema.toml)")
    p.add_argument(
        "--modalities", default="image,tabular", help="image,tabular | image | tabular (default: %(default)s)"
    )
    p.add_argument("--model", choices=MODELS, default=d.model, help="fusion model or XGBoost baseline (tabular only)")
    p.add_argument(
        "--fusion",
        choices=FUSIONS,
        default=d.fusion,
        help="joint (one network trained end to end), stacked (per-modality models joined by a combiner learned "
        "on out-of-fold predictions), gbm (XGBoost over a frozen image embedding and the record), auto (chosen "
        "by patient-grouped inner CV of the training part); default: %(default)s",
    )
    p.add_argument(
        "--backbone", choices=sorted(BACKBONES), default=d.image.backbone, help="image backbone (default: %(default)s)"
    )
    p.add_argument("--freeze", type=integer, default=d.image.freeze, help="freeze the first N blocks of the backbone")
    p.add_argument("--weights", help="local state-dict file to initialise the backbone")
    p.add_argument(
        "--pretrained",
        choices=PRETRAINED,
        help="named starting weights: cxr (chest X-ray weights shipped with fusion, custom backbone), "
        "imagenet (torchvision's, only if already on this machine)",
    )
    p.add_argument("--init-from", dest="init_from", help="run folder whose image branch initialises this one")
    p.add_argument(
        "--epochs",
        type=integer,
        default=d.train.epochs,
        help=f"training epochs (default: enough for about {d.train.steps} optimisation steps, at least "
        f"{d.train.min_epochs} epochs, so small datasets train as long as large ones)",
    )
    p.add_argument("--batch-size", type=integer, default=d.train.batch_size)
    p.add_argument("--lr", type=finite_number, default=d.train.lr)
    p.add_argument("--patience", type=integer, default=d.train.patience, help="early-stopping patience in epochs")
    p.add_argument(
        "--image-size",
        type=integer,
        help="side of the square input in pixels (default: the backbone's, custom 64, densenet169 224)",
    )
    p.add_argument("--no-augment", action="store_true", help="train without image augmentation")
    p.add_argument("--seed", type=integer, default=d.train.seed)
    p.add_argument(
        "--synthetic-n", type=integer, default=d.data.synthetic_n, help="images in the synthetic cohort (no --data)"
    )
    p.add_argument("--device", choices=DEVICES, default=d.train.device)
    p.add_argument(
        "--precision", choices=PRECISIONS, default=d.train.precision, help="auto: bf16 where the hardware has it"
    )
    p.add_argument("--out", help="run folder (default: runs/<timestamp>); must be new or empty")
    add_cache_arguments(p)
    p.add_argument(
        "--resume", action="store_true", help="continue the interrupted run in --out from its last completed epoch"
    )
    p.add_argument("--quiet", action="store_true", help="print only the final summary")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = Config(modalities=args.modalities, model=args.model, fusion=args.fusion)
    cfg.data.path, cfg.data.schema, cfg.data.synthetic_n = args.data, args.schema, args.synthetic_n
    img = cfg.image
    img.backbone, img.freeze, img.image_size, img.augment = (
        args.backbone,
        args.freeze,
        args.image_size,
        not args.no_augment,
    )
    img.weights, img.pretrained, img.init_from = args.weights, args.pretrained, args.init_from
    t = cfg.train
    t.epochs, t.batch_size, t.lr, t.patience = args.epochs, args.batch_size, args.lr, args.patience
    t.seed, t.device, t.precision = args.seed, args.device, args.precision
    return cfg.validate()


def _prepare_out(out: str | None, resume: bool = False) -> Path:
    if resume:
        if not out:
            raise ValueError("--resume needs the --out folder of the run to continue")
        path = Path(out)
        progress = read_progress(path)
        if progress is None:
            raise ValueError(
                f"--resume: {str(path)!r} holds no interrupted run (no {PROGRESS}); start it without --resume"
            )
        if progress.get("complete"):
            raise ValueError(
                f"--resume: the run in {str(path)!r} is already complete; its model and metrics.json are there"
            )
        return path
    path = Path(out) if out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        hint = " or add --resume to continue an interrupted run" if read_progress(path) else ""
        raise ValueError(
            f"--out {str(path)!r} exists and is not empty; choose a new folder{hint} (runs are never overwritten)"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


MIN_ROWS = 10


def check_enough_data(ds: Dataset) -> None:
    """Refuse to train when too little valid data is left after skipping bad rows.

    Raises
    ------
    ValueError
        Fewer than ``MIN_ROWS`` valid rows, or fewer than two classes; the message
        summarises why rows were skipped.
    """
    present = len(set(ds.labels.tolist()))
    if len(ds) >= MIN_ROWS and present >= 2:
        return
    # "image /data/x.png: no such file" -> "image: no such file": the cause, which rows
    # share, not the file name, which no two rows share.
    reasons = Counter(re.sub(r"^image .+?: ", "image: ", s["reason"]) for s in ds.skipped)
    common = "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3))
    raise ValueError(
        f"{ds.name}: too little valid data to train: {len(ds)} valid row(s) in {present} class(es) "
        f"(need at least {MIN_ROWS} rows in 2 classes); {len(ds.skipped)} row(s) skipped"
        + (f", most often: {common}" if common else "")
    )


def score(clf: FusionClassifier, ds: Dataset, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics of ``ds`` (calibrated probabilities), each headline figure with its 95 %
    patient-bootstrap interval; calibration before/after and the operating points'
    sensitivity and specificity. Returns (metrics, calibrated, raw probabilities).

    Under torch.distributed every process predicts a share of ``ds`` and all get the
    whole (so every process must call it): the figures are those of the whole split."""
    raw = clf.predict_dataset(ds, calibrated=False, gather=True)
    proba = clf.calibration_.apply(raw)
    metrics = classification_metrics(ds.labels, proba, clf.classes_)
    metrics["intervals"] = metric_intervals(ds.labels, proba, clf.classes_, ds.groups, seed=seed)
    metrics["calibration"] = calibration_report(ds.labels, raw, proba)
    metrics["operating_points"] = operating_point_report(ds.labels, proba, clf.classes_, clf.calibration_.thresholds)
    return metrics, proba, raw


def run(
    cfg: Config,
    out: str | Path | None = None,
    *,
    verbose: bool = True,
    resume: bool = False,
    cache_dir: str | Path | bool | None = None,
    cache_workers: int | None = None,
    memory_map: bool | None = None,
) -> tuple[FusionClassifier, dict]:
    """Load data, split by patient, train, score validation and test, save everything.

    The training state is checkpointed in the run folder after every epoch; with
    ``resume`` an interrupted run continues from its last completed epoch.

    Under torch.distributed (``torchrun``) every process calls it: all train and
    predict, only rank 0 writes files and prints.

    ``cache_dir``, ``cache_workers``, ``memory_map``: how a folder's decoded images
    are cached and read (see :func:`fusion.data.loaders.load_dataset`).

    Returns the fitted classifier and the metrics written to ``metrics.json``.
    """
    start = time.perf_counter()
    main = distributed.is_main()
    verbose = verbose and main
    folder = distributed.on_main(lambda: _prepare_out(str(out) if out else None, resume))
    # Rank 0 first: it builds the image cache the other processes then read.
    ds = distributed.main_first(
        lambda: load_dataset(
            cfg.data.path,
            cfg.data.schema,
            image_size=cfg.image.image_size,
            seed=cfg.train.seed,
            synthetic_n=cfg.data.synthetic_n,
            modalities=cfg.modalities,
            cache_dir=cache_dir,
            cache_workers=cache_workers,
            memory_map=memory_map,
        )
    )
    check_enough_data(ds)
    if ds.skipped and main:
        warnings.warn(
            f"{len(ds.skipped)} row(s) of {ds.name} skipped; see 'skipped' in {folder / 'metrics.json'}; "
            f"first: {ds.skipped[0]}",
            stacklevel=2,
        )
    parts = ds.split(seed=cfg.train.seed, val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction)
    train, val, test = parts.get("train"), parts.get("val"), parts.get("test")
    if train is None or len(train) == 0:
        raise ValueError(f"{ds.name}: no training rows (splits: { {k: len(v) for k, v in parts.items()} })")
    if verbose:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in parts.items())
        print(
            f"data: {ds.name} ({len(ds)} rows; {sizes}; {len(ds.skipped)} skipped); classes {list(ds.classes)}",
            flush=True,
        )
        print(
            f"model: {cfg.model}, modalities {','.join(cfg.modalities)}"
            + (f", backbone {cfg.image.backbone} at {cfg.image.image_size} px" if "image" in cfg.modalities else ""),
            flush=True,
        )
    clf = FusionClassifier(cfg).fit(train, val, verbose=verbose, checkpoint_dir=folder, resume=resume)
    metrics = {
        "task": f"{ds.name}: {' / '.join(ds.classes)}",
        "classes": list(ds.classes),
        "modalities": list(cfg.modalities),
        "model": cfg.model,
        "fusion": cfg.fusion,
        "backend": clf.backend_.name,
        "auto": clf.history_.get("auto"),
        "backbone": cfg.image.backbone if "image" in cfg.modalities else None,
        "data": cfg.data.path or "synthetic (embedded)",
        "n_train": len(train),
        "n_val": len(val) if val is not None else 0,
        "n_test": len(test) if test is not None else 0,
        "epochs": clf.history_.get("epochs"),
        "epochs_run": clf.history_.get("epochs_run", 0),
        "resumed_from_epoch": clf.history_.get("resumed_from_epoch"),
        "best_epoch": clf.history_.get("best_epoch"),
        "device": clf.history_.get("device", "cpu"),
        "precision": clf.history_.get("precision"),
        "world_size": distributed.world_size(),
        "distributed_backend": distributed.backend_name(),
        "calibration": {k: v for k, v in clf.calibration_.to_dict().items() if k != "report"},
    }
    plots = folder / "plots"
    if main:
        plots.mkdir(exist_ok=True)
    for name, part in (("val", val), ("test", test)):
        if part is None or len(part) == 0:
            metrics[name] = None
            continue
        metrics[name], proba, raw = score(clf, part, cfg.train.seed)
        if not main:
            continue
        plot_reliability(part.labels, raw, proba, plots / f"reliability_{name}.png", title=f"Reliability ({name})")
        plot_confusion(
            metrics[name]["confusion_matrix"],
            ds.classes,
            plots / f"confusion_{name}.png",
            title=f"Confusion matrix ({name})",
        )
        plot_roc(part.labels, proba, ds.classes, plots / f"roc_{name}.png", title=f"ROC one vs rest ({name})")
        if name == "test" and ds.schema is not None and part.records is not None:
            by = subgroup_features(ds.schema)
            if by:
                metrics[name]["subgroups"] = subgroup_report(
                    part.records, part.labels, proba, clf.classes_, part.groups, by, ds.schema, seed=cfg.train.seed
                )
    if main:
        if clf.history_.get("history"):
            plot_history(clf.history_["history"], plots / "training_curves.png")
        clf.save(folder)
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    metrics["history"] = clf.history_.get("history", [])
    metrics["skipped"] = ds.skipped
    metrics["notes"] = ds.notes
    metrics["config"] = cfg.to_dict()
    metrics["fusion_version"] = __version__
    if not main:
        return clf, metrics
    write_json(folder / "metrics.json", metrics)
    write_model_card(folder, metrics, ds.schema, cfg)
    mark_complete(folder)
    if verbose:
        for name in ("val", "test"):
            if metrics[name]:
                print(format_metrics(metrics[name], title=f"-- {name} ({metrics['n_' + name]} rows)"))
    scored = "test" if metrics["test"] else "val" if metrics["val"] else None
    summary = f"{scored} macro-F1 {metrics[scored]['macro_f1']:.3f}" if scored else "no validation or test split"
    print(f"done in {metrics['seconds']:.1f}s: {summary}; run saved to {folder}", flush=True)
    return clf, metrics


def subgroup_features(schema) -> list[str]:
    """The record features a run reports subgroups of: every categorical or binary
    feature, and every numeric one whose schema declares bands."""
    return [f.name for f in schema.features if f.type != "numeric" or f.bands]


def write_model_card(folder: Path, metrics: dict, schema, cfg: Config) -> None:
    """``MODEL_CARD.md`` in the run folder, from the run's own metadata."""
    import torch

    from fusion.nets.registry import backbone_spec

    pretraining = None
    if "image" in cfg.modalities and cfg.image.pretrained in backbone_spec(cfg.image.backbone).shipped:
        from fusion.nets.backbones import shipped_weights_info

        pretraining = shipped_weights_info(backbone_spec(cfg.image.backbone).shipped[cfg.image.pretrained].file)
    card = model_card(
        metrics, schema, pretraining=pretraining, versions={"fusion": __version__, "torch": torch.__version__}
    )
    (folder / "MODEL_CARD.md").write_text(card, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_allocator()
    try:
        joined = distributed.init_from_env(args.device)
    except ValueError as err:
        return fail(err)
    main = distributed.is_main()
    try:
        with log_to_terminal(not args.quiet and main):
            cfg = config_from_args(args)
            run(cfg, args.out, verbose=not args.quiet, resume=args.resume, **cache_options(args))
    except (ValueError, FileNotFoundError) as err:
        # Every process meets the same error; one says it.
        return fail(err) if main else 2
    finally:
        if joined:
            distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
