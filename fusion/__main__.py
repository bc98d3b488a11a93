"""The ``fusion`` command: one entry point for every tool, ``fusion SUB [ARGS...]``.

``fusion train --modalities tabular`` runs exactly what ``python -m fusion.train
--modalities tabular`` runs: the arguments after the subcommand go, untouched, to that
module's own ``main(argv)``, so each tool keeps one parser, one help text and one set of
exit codes, and the ``python -m fusion.<tool>`` entry points stay the reference. Nothing is
imported until a subcommand is chosen, so ``fusion --help`` answers at once.

Examples
--------
fusion --help
fusion train --modalities tabular --model xgboost
fusion evaluate --model runs/X --data ../shared/data/nih-pneumonia
fusion compare runs/X runs/Y
python -m fusion train --help
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import runpy
import sys
from collections.abc import Callable
from typing import NamedTuple


class Subcommand(NamedTuple):
    """Where a subcommand's ``main(argv) -> int`` lives, and its line in ``fusion --help``."""

    module: str
    summary: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "train": Subcommand("fusion.train", "train a model on a cohort and write a run folder"),
    "predict": Subcommand("fusion.predict", "classify one patient from an X-ray and/or a clinical record"),
    "evaluate": Subcommand("fusion.evaluate", "score a trained model on a dataset"),
    "eda": Subcommand("fusion.eda.cli", "exploratory analysis of a dataset: figures and report.md"),
    "schema": Subcommand("fusion.schema.__main__", "draft a schema from a data folder"),
    "serve": Subcommand("fusion.serve.__main__", "serve a trained model over HTTP: a JSON API and a page"),
    "export": Subcommand("fusion.export", "export a trained network to ONNX for runtimes outside Python"),
    "compare": Subcommand("fusion.compare", "compare run folders: one table and one figure"),
}


def usage() -> str:
    """The top-level help: the call pattern and one line per subcommand."""
    width = max(map(len, SUBCOMMANDS))
    lines = [
        "usage: fusion [--version] [-h] SUBCOMMAND [ARGS...]",
        "",
        "Chest X-rays and clinical records, classified together.",
        "",
        "subcommands:",
        *(f"  {name:<{width}}  {sub.summary}" for name, sub in SUBCOMMANDS.items()),
        "",
        "`fusion SUBCOMMAND --help` shows a subcommand's options;",
        "`fusion SUBCOMMAND ARGS...` runs `python -m fusion.SUBCOMMAND ARGS...`.",
    ]
    return "\n".join(lines)


def _entry(name: str) -> Callable[[list[str]], int]:
    """The ``main`` of subcommand ``name``, imported only now.

    A ``main`` that takes ``prog`` is given ``fusion NAME``, so that its usage line
    names the command the user typed. A module without ``main`` (one written as a script under ``if __name__ ==
    "__main__"``) is run as ``python -m`` would run it, with ``sys.argv`` set for it and
    restored after.

    Raises
    ------
    LookupError
        When the subcommand's module is not part of this installation.
    """
    module = SUBCOMMANDS[name].module
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        raise LookupError(f"`fusion {name}` is not available in this version of fusion (no module {module})")
    main = getattr(importlib.import_module(module), "main", None)
    if callable(main) and "prog" in inspect.signature(main).parameters:
        # The tool's help and errors then read `fusion train ...`, the command typed.
        return lambda argv: main(argv, prog=f"fusion {name}")
    if callable(main):
        return main
    return lambda argv: _run_as_script(module.removesuffix(".__main__"), name, argv)


def _run_as_script(module: str, name: str, argv: list[str]) -> int:
    """Run ``module`` as ``python -m module argv...`` would, and return its exit status."""
    saved = sys.argv
    sys.argv = [f"fusion {name}", *argv]
    # Looking for its main imported it; runpy executes a fresh copy as __main__.
    sys.modules.pop(f"{module}.__main__", None)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``fusion SUB ARGS...``: dispatch ``ARGS`` to subcommand ``SUB``'s own ``main``.

    Parameters
    ----------
    argv
        The arguments after ``fusion`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The subcommand's exit status; 0 for ``--help`` and ``--version``; 2 when no
        subcommand or an unknown one is given (the list of subcommands is printed).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    first, rest = argv[0], argv[1:]
    if first in ("-h", "--help"):
        print(usage())
        return 0
    if first == "--version":
        from fusion.version import __version__

        print(f"fusion {__version__}")
        return 0
    if first not in SUBCOMMANDS:
        print(usage(), file=sys.stderr)
        print(f"\nerror: unknown subcommand {first!r}; choose one of: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    try:
        entry = _entry(first)
    except LookupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return entry(rest)


if __name__ == "__main__":
    sys.exit(main())
