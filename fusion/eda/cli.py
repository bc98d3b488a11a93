"""Command line of the exploratory analysis: ``python -m fusion.eda``.

The only place in :mod:`fusion.eda` that prints: it reports what :func:`run_eda` wrote,
reading the warnings back from ``summary.json`` so the screen and the file agree.
"""

from __future__ import annotations

import argparse
import json

from fusion.cli import QUIET, add_verbosity_arguments, fail, log_to_terminal, positive_int, verbosity, whole_number
from fusion.eda.output import OutputWriteError
from fusion.eda.report import run_eda

__all__ = ["main"]


def _parser(prog: str = "python -m fusion.eda") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Exploratory analysis of a dataset: figures and report.md.")
    p.add_argument("--data", required=True, help="dataset folder (metadata.csv + images), CSV file or MedMNIST .npz")
    p.add_argument("--schema", help="schema TOML file or built-in name (default: the folder's schema.toml)")
    p.add_argument(
        "--out",
        required=True,
        help="output folder outside the dataset: new, empty, or an earlier EDA output "
        "(the files that analysis wrote are replaced)",
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        help="side of the decoded images (default: 64 for folders, the file's own for .npz)",
    )
    p.add_argument("--per-class", type=positive_int, default=6, help="sample images per class (default: %(default)s)")
    p.add_argument("--seed", type=whole_number, default=0)
    add_verbosity_arguments(p, quiet="print the report's path, warnings and errors only")
    return p


def main(argv: list[str] | None = None, *, prog: str = "python -m fusion.eda") -> int:
    """Command line: ``python -m fusion.eda --data PATH [--schema FILE] --out DIR``.

    Returns
    -------
    int
        0 on success, 2 when the data, schema or output folder is unusable or the
        output cannot be written (the reason goes to stderr); argparse exits with 2
        itself on a bad flag.
    """
    p = _parser(prog)
    args = p.parse_args(argv)
    try:
        with log_to_terminal(verbosity(args)):
            report = run_eda(
                args.data, args.schema, args.out, image_size=args.image_size, per_class=args.per_class, seed=args.seed
            )
    except (ValueError, FileNotFoundError, OutputWriteError) as err:
        return fail(err, p, verbose=verbosity(args) > 0)
    summary = json.loads((report.parent / "summary.json").read_text(encoding="utf-8"))
    if verbosity(args) > QUIET:
        print(
            f"{summary['n_rows']} rows loaded, {summary['n_skipped']} skipped; classes {', '.join(summary['classes'])}"
        )
    for warning in summary["warnings"]:
        print(f"warning: {warning}")
    print(f"report written to {report}")
    return 0
