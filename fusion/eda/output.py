"""The analysis's output folder: what may be written there, and what a rerun removes.

A rerun into an earlier analysis's folder must not leave a stale figure beside the
new report, yet must never delete a file the analysis did not write: an ``--out``
mistyped as the dataset's ``images/`` folder once deleted every film in it. So:

- the folder may not be, contain or lie inside an input (the dataset folder, its CSV,
  its image folder, the schema file), symlinks resolved;
- it must be new, empty, or hold :data:`LEDGER`, the list of files an earlier analysis
  wrote there; each file is added to that list *before* it is written, so an
  interrupted run is still cleaned up by the next one;
- a rerun removes exactly the listed names that are still regular files directly in
  the folder (never a symlink, a folder or a path elsewhere), and nothing else; a
  file the analysis is about to write that it did not write before is refused, not
  replaced.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["LEDGER", "OutputFolder", "OutputWriteError", "check_not_an_input"]

LEDGER = ".fusion-eda.json"
# What the analysis writes: figures, the report and its summary. A listed name of any
# other form (a path, a dotfile, a CSV) is never deleted, whatever the record says.
_OURS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.(?:png|md|json)")
_RECORD_BYTES = 1 << 16
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # a full disk, or a full quota


class OutputWriteError(OSError):
    """The output folder could not be written (a full disk, a folder made read-only);
    the message names the folder and what can be done."""

    def __str__(self) -> str:
        return str(self.strerror)


def check_not_an_input(out: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """Refuse an output folder that is, contains or lies inside one of ``inputs``
    (symlinks resolved).

    Raises
    ------
    ValueError
        Naming the folder, the input and how they relate.
    """
    resolved = Path(out).resolve()
    for item in inputs:
        if item is None:
            continue
        relation = _relation(resolved, Path(item).resolve())
        if relation:
            raise ValueError(
                f"output folder {str(out)!r} {relation} an input of the analysis ({str(item)!r}); "
                "outputs never go among the inputs: choose a folder outside the dataset"
            )


def _relation(out: Path, item: Path) -> str | None:
    if out == item:
        return "is"
    if out in item.parents:
        return "contains"
    if item in out.parents:
        return "lies inside"
    return None


class OutputFolder:
    """An output folder checked against the inputs and cleared of an earlier analysis's
    files; :meth:`claim` gives each new file's path after recording it.

    Raises (on construction)
    ------
    ValueError
        The folder is, contains or lies inside an input, is not a folder, or is a
        non-empty folder without a valid :data:`LEDGER`.
    """

    def __init__(self, out: str | Path, inputs: Iterable[str | Path | None] = ()):
        self.path = Path(out)
        self.written: list[str] = []
        check_not_an_input(self.path, inputs)
        with self.writing():
            self._clear_earlier()
            self.path.mkdir(parents=True, exist_ok=True)
            self._save_record()

    def _clear_earlier(self) -> None:
        """Remove the files an earlier analysis recorded in this folder, and only those."""
        if not os.path.lexists(self.path):
            return
        if not self.path.is_dir():
            raise ValueError(f"output folder {str(self.path)!r} exists and is not a folder")
        entries = [p.name for p in self.path.iterdir()]
        if not entries:
            return
        if LEDGER not in entries:
            raise ValueError(
                f"output folder {str(self.path)!r} is not empty and holds no record ({LEDGER}) of an earlier "
                "analysis; choose a new or empty folder"
            )
        for name in self._earlier_files():
            _remove_regular(self.path, name)

    def _earlier_files(self) -> list[str]:
        record = self.path / LEDGER
        damaged = ValueError(
            f"output folder {str(self.path)!r}: its record of an earlier analysis ({LEDGER}) is damaged; "
            "choose a new folder (or remove this one yourself)"
        )
        st = os.stat(record, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _RECORD_BYTES:
            raise damaged
        try:
            files = json.loads(record.read_text(encoding="utf-8"))["files"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise damaged from None
        if not isinstance(files, list):
            raise damaged
        return [f for f in files if isinstance(f, str) and _OURS.fullmatch(f)]

    def _save_record(self) -> None:
        from fusion.persistence import atomic_write_text

        record = {"written_by": "fusion.eda", "files": self.written}
        atomic_write_text(self.path / LEDGER, json.dumps(record, indent=1) + "\n")

    def claim(self, name: str) -> Path:
        """The path of the new file ``name``, recorded before it is written.

        Raises
        ------
        ValueError
            A file of that name is already there (one this analysis did not write).
        """
        if not _OURS.fullmatch(name):
            raise ValueError(f"{name!r} is not a name the analysis writes")
        path = self.path / name
        if name in self.written:
            return path
        if os.path.lexists(path):
            raise ValueError(
                f"output folder {str(self.path)!r} holds {name}, which no earlier analysis wrote there; "
                "it is not replaced: move it away or choose a new folder"
            )
        self.written.append(name)
        self._save_record()
        return path

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Turn a failure to write (a full disk, a folder made read-only) into one
        :class:`OutputWriteError` naming the folder and what to do."""
        try:
            yield
        except OutputWriteError:
            raise
        except OSError as err:
            reason = err.strerror or str(err)
            if err.errno in _FULL:
                hint = "free some space there (or choose another folder) and run the analysis again"
            else:
                hint = "choose a folder you can write to and run the analysis again"
            raise OutputWriteError(
                err.errno, f"could not write the analysis to {str(self.path)!r}: {reason}; {hint}"
            ) from err


def _remove_regular(folder: Path, name: str) -> None:
    """Delete ``folder/name`` if it is a regular file (not a symlink, not a folder)."""
    path = folder / name
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode):
        path.unlink()
