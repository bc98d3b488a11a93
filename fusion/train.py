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
from fusion.cli import (
    QUIET,
    add_cache_arguments,
    add_config_arguments,
    add_verbosity_arguments,
    cache_options,
    command_line,
    config_file,
    config_from_args,
    fail,
    given_options,
    log_to_terminal,
    verbosity,
)
from fusion.config import Config
from fusion.evaluation import format_metrics
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
    Wording,
    run,
)


def build_parser(prog: str = "python -m fusion.train") -> argparse.ArgumentParser:
    """The command's options: one for each setting that declares a flag
    (:mod:`fusion.config`), then the run's own: where it is written, whether it
    continues, how images are cached and how much it prints. Those are not settings:
    a model folder does not record where it was written or cached, and the library
    never prints. ``prog`` is the command's name in its help (``fusion train`` under
    the ``fusion`` command)."""
    p = argparse.ArgumentParser(prog=prog, description="Train a fusion model (image + clinical record).")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="start from the settings of a TOML file with the keys of a run's config.json, or of a run's "
        "config.json (or its folder) to repeat it; flags given here override the file",
    )
    add_config_arguments(p)
    p.add_argument("--out", metavar="DIR", help="run folder; must be new or empty (default: runs/<timestamp>)")
    p.add_argument(
        "--resume", action="store_true", help="continue the interrupted run in --out from its last completed epoch"
    )
    add_cache_arguments(p)
    add_verbosity_arguments(p, quiet="print only the closing line, warnings and errors")
    return p


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
    wording = Wording(
        new_folder="rerun with a new --out folder",
        again="rerun the same command to start again",
        resume="rerun the same command with --resume" + ("" if out_given else " --out {folder}"),
        finish="finish the run",
    )
    return state.sentence(cause, free_space=free_space, wording=wording)


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


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None) -> Config:
    """The run's configuration: the flags', or ``--config``'s file with the flags typed
    on the command line in place of its values."""
    if not args.config:
        return config_from_args(args)
    return config_from_args(args, base=config_file(args.config), given=given_options(parser, argv))


def main(argv: list[str] | None = None, *, prog: str = "python -m fusion.train") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    tune_allocator()
    joined, main = False, True
    command = command_line(prog, sys.argv[1:] if argv is None else argv)
    try:
        joined = distributed.init_from_env(args.device)
        main = distributed.is_main()
        with log_to_terminal(verbosity(args) if main else QUIET):
            cfg = _config(parser, args, argv)
            if args.resume and not args.out:
                raise ValueError("--resume needs the --out folder of the run to continue")
            options = cache_options(args)
            result = run(cfg, args.out, verbose=not args.quiet, resume=args.resume, command=command, **options)
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
        return fail(err, verbose=verbosity(args) > 0) if main else 2
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
