"""``python -m fusion.schema draft --data FOLDER [--label COLUMN] [--out schema.toml]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fusion.cli import QUIET, add_verbosity_arguments, fail, log_to_terminal, verbosity
from fusion.schema.draft import draft_schema


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fusion.schema", description="Schema tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    draft = commands.add_parser(
        "draft",
        help="draft a commented schema from a folder's metadata.csv",
        description="Draft a commented schema (TOML) from FOLDER/metadata.csv: kinds, categories, ranges, "
        "'not known' tokens, label, group, image column and excluded columns with reasons. Read it before use.",
    )
    draft.add_argument("--data", required=True, help="folder holding metadata.csv (and images/)")
    draft.add_argument("--label", help="the label column (default: a guess, explained in a comment)")
    draft.add_argument("--out", help="file to write (refused if it exists); default: print to stdout")
    add_verbosity_arguments(draft, quiet="print the draft (without --out), warnings and errors only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 on success, 2 for a refused input (an existing --out, no table, no label)."""
    args = _parser().parse_args(argv)
    out = Path(args.out) if args.out else None
    if out is not None and out.exists():
        print(
            f"error: --out {out} already exists; the draft never overwrites a file: choose another name",
            file=sys.stderr,
        )
        return 2
    try:
        with log_to_terminal(verbosity(args)):
            text = draft_schema(args.data, label=args.label)
    except (OSError, ValueError) as err:
        return fail(err, verbose=verbosity(args) > 0)
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(out, "x", encoding="utf-8") as fh:  # "x": never overwrite, even if created meanwhile
            fh.write(text)
    except OSError as err:
        print(f"error: cannot write --out {out}: {err}", file=sys.stderr)
        return 2
    if verbosity(args) > QUIET:
        print(f"wrote {out}: a draft, read every comment before training with it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
