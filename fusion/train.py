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

A run stopped on the way says in one line what its folder holds and the command that
continues it: Ctrl-C exits with 130, a full disk with 2 (``--resume`` continues from the
last saved epoch, or writes the model of a run whose training was done). Temporary
files that a killed write left behind are removed on ``--resume`` and when the run
completes.

The run itself is the library's :func:`fusion.training.run.run`; this module parses the
flags, calls it, and prints: the metrics tables, the closing line, and the errors in
the command's own words (flags, exit codes).
"""

from __future__ import annotations

import argparse
import sys

from fusion.allocator import tune_allocator
from fusion.cli import add_cache_arguments, cache_options, fail, finite_number, integer, log_to_terminal
from fusion.config import DEVICES, FUSIONS, MODELS, PRECISIONS, Config
from fusion.evaluation import format_metrics
from fusion.nets.registry import BACKBONES, PRETRAINED
from fusion.training import distributed
from fusion.training.checkpoint import PROGRESS
from fusion.training.run import (
    DanglingFolderLink,
    DiskFull,
    FolderInUse,
    FolderState,
    NoRunToResume,
    RunFolderError,
    RunInterrupted,
    RunResult,
    run,
)


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


def _report(result: RunResult, *, quiet: bool) -> None:
    """The metrics tables (unless ``quiet``) and the closing line."""
    metrics = result.metrics
    if not quiet:
        for name in ("val", "test"):
            if metrics[name]:
                print(format_metrics(metrics[name], title=f"-- {name} ({metrics['n_' + name]} rows)"))
    scored = "test" if metrics["test"] else "val" if metrics["val"] else None
    summary = f"{scored} macro-F1 {metrics[scored]['macro_f1']:.3f}" if scored else "no validation or test split"
    print(f"done in {metrics['seconds']:.1f}s: {summary}; run saved to {result.folder}", flush=True)


def _stopped(cause: str, state: FolderState, out_given: bool, *, free_space: bool = False) -> str:
    """The one line for a run stopped by ``cause`` (Ctrl-C, or a full disk with
    ``free_space``): what the run folder holds and the command that continues it."""
    folder = state.folder
    free = "free space and " if free_space else ""
    if state.complete:
        return f"{cause}; the run in {folder} is complete (its model and metrics.json are saved)"
    if state.next_epoch is None:
        if not state.empty:
            return f"{cause}; nothing in {folder} can be resumed: {free}rerun with a new --out folder"
        return f"{cause} before any epoch was saved; {free}rerun the same command to start again"
    resume = "rerun the same command with --resume" + ("" if out_given else f" --out {folder}")
    if state.trained:
        done = "its training is done: the model and metrics.json are written then"
        return f"{cause}; {free}{resume} to finish the run ({done})"
    return f"{cause}; {free}{resume} to continue from epoch {state.next_epoch}"


def _refused(err: RunFolderError) -> str:
    """Why the run folder was refused, in the command's flags."""
    path = repr(str(err.folder))
    if isinstance(err, DanglingFolderLink):
        return (
            f"--out {path} is a symlink to {err.target!r}, which does not exist; "
            "choose a new folder (runs are never written through a dangling link)"
        )
    if isinstance(err, FolderInUse):
        hint = " or add --resume to continue an interrupted run" if err.resumable else ""
        return f"--out {path} exists and is not empty; choose a new folder{hint} (runs are never overwritten)"
    if isinstance(err, NoRunToResume) and err.complete:
        return f"--resume: the run in {path} is already complete; its model and metrics.json are there"
    return f"--resume: {path} holds no interrupted run (no {PROGRESS}); start it without --resume"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_allocator()
    joined, main = False, True
    try:
        joined = distributed.init_from_env(args.device)
        main = distributed.is_main()
        with log_to_terminal(not args.quiet and main):
            cfg = config_from_args(args)
            if args.resume and not args.out:
                raise ValueError("--resume needs the --out folder of the run to continue")
            result = run(cfg, args.out, verbose=not args.quiet, resume=args.resume, **cache_options(args))
            if main:
                _report(result, quiet=args.quiet)
    except DiskFull as err:
        cause = f"no space left on device writing {err.written}"
        print(f"error: {_stopped(cause, err.state, args.out is not None, free_space=True)}", file=sys.stderr)
        return 2
    except RunFolderError as err:
        if main:  # every process meets it; one says it
            print(f"error: {_refused(err)}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as err:
        # Every process meets the same error; one says it.
        return fail(err) if main else 2
    except KeyboardInterrupt as err:
        # Ctrl-C: one line, no trace; 130 is the shell's code for a command ended by SIGINT.
        if main:
            state = err.state if isinstance(err, RunInterrupted) else None
            line = _stopped("interrupted", state, args.out is not None) if state is not None else "interrupted"
            print(line, file=sys.stderr, flush=True)
        return 130
    finally:
        if joined:
            distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
