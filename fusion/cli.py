"""What the command-line entry points share: how settings become flags, how errors name
them, and where their output may go.

Each setting's flag is declared once, on its field in :mod:`fusion.config`:
:func:`add_config_arguments` turns those into options, :func:`config_from_args` reads
them back, :data:`FIELD_FLAGS` lets an error about a field (its ``field`` attribute,
:mod:`fusion.errors`) name its flag, and :func:`option_table` writes the table
of them on the command-line page (docs/cli.md).

Every output a command writes is checked before anything is written: it must not be
one of the command's inputs, must not replace an existing file, and its folder must
exist. Each command then says exactly which path it wrote. A command that cannot write
its output prints its answer first and then the error, so the answer is never lost.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import errno
import logging
import os
import re
import sys
import typing
import warnings
from pathlib import Path

from fusion.config import Config, Setting, settings
from fusion.errors import ConfigError, MissingFileError


def _cut(value: str) -> str:
    from fusion.schema import short_repr

    return short_repr(value)


_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)


def _integer(value: str, low: int, high: int | None, accepted: str) -> int:
    """``value`` as an int in [low, high]: ASCII digits only (``int()`` also takes "1_0"
    and full-width digits, and gives Python's own error past 4,300 digits, naming
    neither the flag nor the value). argparse names the flag."""
    import argparse

    text = value.strip()
    # More digits than any bound has cannot be in range; int() is not asked.
    if _INTEGER.fullmatch(text) and len(text.lstrip("+-")) <= 19:
        number = int(text)
        if number >= low and (high is None or number <= high):
            return number
    raise argparse.ArgumentTypeError(f"must be {accepted}; got {_cut(value)}")


def integer(value: str) -> int:
    """An argparse type: a whole number, either sign (the command's configuration checks
    the range and names its own field)."""
    return _integer(value, -(10**18), 10**18, "a whole number")


def positive_int(value: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return _integer(value, 1, None, "a whole number of at least 1")


def whole_number(value: str) -> int:
    """An argparse type: a whole number of at least 0 (e.g. a seed)."""
    return _integer(value, 0, None, "a whole number of at least 0")


def port_number(value: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    return _integer(value, 1, 65535, "a port number from 1 to 65535")


def finite_number(value: str) -> float:
    """An argparse type: a finite decimal number (the configuration checks the range)."""
    import argparse
    import math

    from fusion.schema import DECIMAL

    text = value.strip()
    number = float(text) if DECIMAL.fullmatch(text) else math.nan
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite decimal number; got {_cut(value)}")
    return number


def positive_number(value: str) -> float:
    """An argparse type: a finite decimal number above 0 (``float()`` also takes "inf",
    "nan", "1_0" and turns 1e400 into infinity)."""
    import argparse

    try:
        number = finite_number(value)
    except argparse.ArgumentTypeError:
        number = 0.0
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0; got {_cut(value)}")
    return number


# How load_dataset's image-cache arguments are set on every command that loads a folder:
# argument -> (flag, argparse options). Not settings of the model: where a cache lies and
# how many processes build it belong to this machine, not to a model folder.
CACHE_OPTIONS = {
    "cache_dir": (
        "--cache-dir",
        {
            "metavar": "DIR",
            "help": "where decoded images are cached ('none' to disable) "
            "(default: $FUSION_CACHE_DIR or ~/.cache/fusion)",
        },
    ),
    "cache_workers": (
        "--cache-workers",
        {
            "metavar": "N",
            "type": positive_int,
            "help": "processes that decode images while the cache is built (default: one per core from 1,024 films)",
        },
    ),
    "memory_map": (
        "--memory-map",
        {
            "choices": ("auto", "always", "never"),
            "default": "auto",
            "help": "read cached images batch by batch from disk instead of holding them in memory "
            "(auto: when they take more than 256 MB) (default: auto)",
        },
    ),
}
# The library's errors carry the configuration fields they are about (fusion.errors);
# the commands speak in flags. Both are declared once: the settings' flags in
# fusion.config, the cache's above.
FIELD_FLAGS = {
    **{s.name: s.flag for s in settings() if s.flag},
    **{name: flag for name, (flag, _) in CACHE_OPTIONS.items()},
}


def add_cache_arguments(p) -> None:
    """The flags of the decoded-image cache (:data:`CACHE_OPTIONS`), the same on every
    command that loads a folder."""
    for flag, options in CACHE_OPTIONS.values():
        p.add_argument(flag, **options)


def cache_options(args) -> dict:
    """Keyword arguments of :func:`fusion.data.loaders.load_dataset` from those flags."""
    return {
        "cache_dir": False if args.cache_dir == "none" else args.cache_dir,
        "cache_workers": args.cache_workers,
        "memory_map": {"auto": None, "always": True, "never": False}[args.memory_map],
    }


# ------------------------------------------------------------ settings as flags
def _dest(s: Setting) -> str:
    """The attribute argparse gives a setting's flag (``--batch-size``: ``batch_size``)."""
    return s.flag.lstrip("-").replace("-", "_")


def _value_type(s: Setting):
    """How the command line reads a setting's value: as declared, else from its type
    (whole numbers and decimals by the checked readers above; text as it is)."""
    if s.parse is not None:
        return s.parse
    kinds = [a for a in typing.get_args(s.hint) if a is not type(None)] or [s.hint]
    return {int: integer, float: finite_number}.get(kinds[0])


def _shown(s: Setting, default: Config) -> str | None:
    """A setting's default as the help and the docs say it (None: nothing to say)."""
    if s.shown is not None:
        return s.shown.format(default=default)
    if s.default is None or isinstance(s.default, bool):
        return None
    return ",".join(map(str, s.default)) if isinstance(s.default, tuple) else str(s.default)


def add_config_arguments(p) -> None:
    """An option for each setting that declares a flag (:func:`fusion.config.setting`),
    with the help, choices and default declared there; a boolean's flag switches it
    from its default. :func:`config_from_args` reads them back."""
    default = Config()
    for s in settings():
        if not s.flag:
            continue
        shown = _shown(s, default)
        options = {"help": (s.help + (f" (default: {shown})" if shown else "")).replace("%", "%%")}
        if isinstance(s.default, bool):
            options["action"] = "store_true"
        elif s.hint == (bool | None):  # unset follows the data: --flag / --no-flag
            options["action"] = argparse.BooleanOptionalAction
        else:
            options.update(default=s.default, type=_value_type(s), choices=s.choices, metavar=s.metavar)
        p.add_argument(s.flag, **options)


def config_from_args(args, base: Config | None = None, given: typing.Collection[str] | None = None) -> Config:
    """The configuration the options of :func:`add_config_arguments` describe,
    validated. Derived defaults stay unset (``image.image_size`` None: the backbone's);
    :meth:`Config.resolved` fills them where the run starts.

    With ``base`` (a config file's, :func:`config_file`), only the options in ``given``
    (their destinations, :func:`given_options`) replace its values: a flag typed on the
    command line overrides the file, a flag left at its default does not.

    Raises
    ------
    TypeError, ValueError
        A value the configuration refuses, naming its field (a
        :class:`~fusion.errors.ConfigError`, whose flag :func:`in_flags` adds).
    """
    values = {}
    for s in settings():
        if s.flag and (given is None or _dest(s) in given):
            value = getattr(args, _dest(s))
            values[s.name.replace(".", "__")] = (s.default != value) if isinstance(s.default, bool) else value
    return (base or Config()).with_params(**values).validate()


def given_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations of the options typed in ``argv`` (default ``sys.argv[1:]``),
    whatever their values, even a flag given its default: ``argv`` parsed again by a
    copy of ``parser`` whose defaults are all suppressed, so only typed options remain."""
    probe = copy.deepcopy(parser)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(sys.argv[1:] if argv is None else argv)))


def config_file(path: str | Path) -> Config:
    """The settings a config file holds: a TOML file with the keys of a run folder's
    ``config.json`` (``modalities = ["tabular"]``, ``[train] epochs = 5``), a run folder's
    ``config.json`` (its ``config`` object: the run repeated), or that run folder.
    Settings the file lacks take their defaults; every key is checked as a saved
    model's are.

    Raises
    ------
    FileNotFoundError
        No such file (or no ``config.json`` in the folder).
    ConfigError
        A file that is not TOML or JSON, an unknown key or a refused value, naming the
        file and the key (``run.toml: config.train.lr``).
    """
    import json

    from fusion.checks import Where
    from fusion.model_folder import CONFIG, with_earlier_settings
    from fusion.schema.loading import tomllib  # Python 3.10's tomli where tomllib is absent

    path = Path(path)
    if path.is_dir():
        path = path / CONFIG
    where = Where(str(path), "config", ConfigError)
    if not path.is_file():
        raise MissingFileError(f"--config {str(path)!r}: no such file", field="config", file=str(path))
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise ConfigError(
            f"--config {str(path)!r} is not a {kind} file: {err}", field="config", accepted=kind, file=str(path)
        ) from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "fusion_version" in data:
        data = data["config"]  # a run folder's config.json: the configuration it was trained with
    return Config.from_dict(with_earlier_settings(data), where=where)


_DEFAULT = re.compile(r"(.*?)(?: \(default: (.*)\))?", re.S)


def option_table(parser) -> str:
    """A command's options as a Markdown table (option, default, meaning) read from
    its parser, as the documentation shows them: each option as ``--help`` writes it, and its
    help, whose closing "(default: ...)" fills the default column.
    ``tests/test_readme.py`` keeps docs/cli.md's table of ``fusion train`` equal to it."""
    import argparse

    formatter = parser._get_formatter()
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        meaning, default = _DEFAULT.fullmatch((action.help or "").replace("%%", "%")).groups()
        default = f"`{default}`" if default and " " not in default else default or ""
        option = formatter._format_action_invocation(action)
        rows.append(f"| `{option}` | {_cell(default)} | {_cell(meaning)} |")
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def command_flags(parser) -> tuple[str, ...]:
    """The option strings a command's parser accepts (the flags its errors may name)."""
    return tuple(s for action in parser._actions for s in action.option_strings)


def flags_of(err: BaseException, flags=None) -> list[str]:
    """The flags that set the settings ``err`` is about, read from its attributes
    (:attr:`fusion.errors.FusionError.fields` of a :class:`~fusion.errors.ConfigError`
    or :class:`~fusion.errors.MissingFileError`), in the order the error names them.

    ``flags``: the command's own flags (see :func:`command_flags`); a field whose flag
    the command lacks is not named (None: every flag of :data:`FIELD_FLAGS`). A record
    feature, a schema key or a key of a model folder's file is no setting: none is named.
    """
    fields = err.fields if isinstance(err, (ConfigError, MissingFileError)) else ()
    named = (FIELD_FLAGS[f] for f in fields if f in FIELD_FLAGS)
    return list(dict.fromkeys(f for f in named if flags is None or f in flags))


def in_flags(err: BaseException, flags=None) -> str:
    """A library error as a command-line user reads it: the flags that set the
    configuration fields it is about (:func:`flags_of`) are added at its end,
    ``... (flag: --epochs)``."""
    message = str(err)
    named = flags_of(err, flags)
    if not named:
        return message
    return f"{message} ({'flag' if len(named) == 1 else 'flags'}: {', '.join(named)})"


def fail(err: BaseException, parser=None, *, verbose: bool = False) -> int:
    """Print a library error for a command-line user, naming the flags (of ``parser``'s
    command) that set the fields it is about (after its traceback, with ``verbose``);
    the exit code of a bad request."""
    if verbose:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    print(f"error: {in_flags(err, None if parser is None else command_flags(parser))}", file=sys.stderr)
    return 2


_FULL_DISK = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def write_failure(err: OSError, path: str | Path, what: str) -> str:
    """One sentence for an output that could not be written: what, where, why, and
    what can be done."""
    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    reason = err.strerror or str(err)
    if err.errno in _FULL_DISK:
        hint = f"free some space in {str(folder)!r} (or write elsewhere) and run the command again"
    else:
        hint = f"check that {str(folder)!r} can be written (or write elsewhere) and run the command again"
    return f"could not write {what} {str(path)!r}: {reason}; nothing was left there; {hint}"


QUIET, NORMAL, VERBOSE = -1, 0, 1
"""How much a command prints (:func:`verbosity`): only its answer, warnings and errors
(``-q``); also its progress lines (the default); also debug lines, where each warning
comes from and the traceback of an error (``-v``)."""


def add_verbosity_arguments(p: argparse.ArgumentParser, *, quiet: str = "print only the answer, warnings and errors"):
    """``-v/--verbose`` and ``-q/--quiet``, the same on every command; ``quiet`` is what
    ``-q`` keeps of this command's output, in its help."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="say more: debug lines, where each warning comes from, and an error's traceback",
    )
    group.add_argument("-q", "--quiet", action="store_true", help=quiet)


def verbosity(args: argparse.Namespace) -> int:
    """:data:`QUIET`, :data:`NORMAL` or :data:`VERBOSE`, from the flags of
    :func:`add_verbosity_arguments`."""
    if getattr(args, "quiet", False):
        return QUIET
    return VERBOSE if getattr(args, "verbose", 0) else NORMAL


def _one_line(verbose: bool):
    """A ``warnings.showwarning`` for a terminal: ``warning: <message>`` on one line of
    stderr, without the source line Python's default shows (a line of fusion's own code
    tells a command-line user nothing); with ``verbose``, its category and origin too."""

    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        where = f" ({category.__name__} at {filename}:{lineno})" if verbose else ""
        print(f"warning: {text}{where}", file=sys.stderr, flush=True)

    return show


class _Below(logging.Filter):
    """Records below ``level`` only (the progress lines, which go to stdout)."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


class _Prefixed(logging.Formatter):
    """``warning: ...`` / ``error: ...``, as the commands write their own."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


@contextlib.contextmanager
def log_to_terminal(level: int = NORMAL):
    """Show the library's progress lines (the ``fusion`` logger) on stdout, plainly,
    unless ``level`` is :data:`QUIET`, and its debug lines at :data:`VERBOSE`; logged
    warnings and Python warnings always, each as one ``warning: ...`` line on stderr.
    The logger and the warning display are restored when the command returns, so a
    command run in-process (``main([...])`` from a script or a test) leaves no global
    state behind: records propagate to the caller's handlers again afterwards."""
    if isinstance(level, bool):
        raise TypeError("log_to_terminal takes QUIET, NORMAL or VERBOSE, not a bool")
    progress = logging.StreamHandler(sys.stdout)
    progress.setFormatter(logging.Formatter("%(message)s"))
    progress.addFilter(_Below(logging.WARNING))
    problems = logging.StreamHandler(sys.stderr)
    problems.setFormatter(_Prefixed("%(message)s"))
    problems.setLevel(logging.WARNING)
    logger = logging.getLogger("fusion")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [progress, problems]
    logger.setLevel({QUIET: logging.WARNING, NORMAL: logging.INFO}.get(level, logging.DEBUG))
    logger.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line(level >= VERBOSE)
            yield
    finally:
        logger.handlers[:], level, logger.propagate = saved[0], saved[1], saved[2]
        logger.setLevel(level)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def output_file(value: str, flag: str, *, inputs: list[str | Path | None] = (), suffix: str | None = None) -> Path:
    """Check the file a command is asked to write to.

    Parameters
    ----------
    value : str
        The path given on the command line.
    flag : str
        The option that gave it (named in errors).
    inputs : list of paths
        The command's inputs (files or folders); the output may be none of them.
    suffix : str, optional
        Required file suffix, e.g. ".png" (a figure written under another name would be
        a PNG with a misleading name, and ``DIR`` would silently become ``DIR.png``).

    Returns
    -------
    Path
        The path to write, exactly as it will be written.

    Raises
    ------
    ValueError
        The path is an input or inside an input folder, is an existing file or folder,
        lacks the suffix, or its folder does not exist or is not writable.
    """
    shown = repr(value) if len(value) <= NAME_MAX else _cut(value)
    if "\x00" in value:
        raise ValueError(f"{flag} {shown}: a path cannot hold a NUL character")
    try:
        return _check_output(Path(value), f"{flag} {shown}", inputs, suffix)
    except OSError as err:  # a name too long for the file system, a symlink loop
        raise ValueError(f"{flag} {shown}: not a usable path ({err.strerror or err})") from None


# A path is shown whole up to this length (its end, the file name, is what matters);
# a longer value is no usable path and is cut as any long value is.
NAME_MAX = 255


def _check_output(path: Path, given: str, inputs, suffix: str | None) -> Path:
    for item in inputs:
        if item is None:
            continue
        item = Path(item)
        if _same(path, item):
            raise ValueError(f"{given}: that is an input of this command ({str(item)!r}); outputs never replace inputs")
    if path.is_dir():
        raise ValueError(f"{given} is a folder; give a file name (e.g. {path / ('out' + (suffix or '.json'))})")
    if suffix and path.suffix.lower() != suffix:
        raise ValueError(f"{given}: must be a file name ending in {suffix}")
    if os.path.lexists(path):  # a dangling symlink too: the output would replace it
        raise ValueError(f"{given} already exists; outputs never replace a file: choose a new name or remove it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{given}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{given}: folder {str(folder)!r} is not writable")
    return path


def command_line(prog: str, argv: list[str]) -> str:
    """The command as typed, quoted so that a shell runs it again: what a run folder
    records so that its run can be repeated (``prog`` is ``fusion train`` or
    ``python -m fusion.train``)."""
    import shlex

    return shlex.join([*prog.split(), *argv])
