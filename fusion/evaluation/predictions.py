"""A split's per-row predictions as a run folder keeps them: ``predictions_test.csv``
and ``predictions_val.csv``.

Metrics with intervals say how good a model is; comparing two models on the same
patients needs more: what each said of every row, so that one paired bootstrap can
score both on the same resamples (:func:`fusion.evaluation.intervals.paired_differences`).
The file is plain CSV (never a pickle), one line per scored row:

- ``row_key``: what identifies the row across runs on the same data, whatever the
  modalities: the image's path as the table names it (relative to the image folder),
  ``split[i]`` for an ``.npz``, else ``row N`` (the row of the table);
- ``group``: the patient (the schema's group; empty without one);
- ``label``: the true class; ``predicted``: the class the model gives (its decision
  rule's, the labels its counted metrics are of);
- ``p_<class>``: one probability column per class, in the model's class order, written
  in full precision so the metrics computed from the file are the run's own.

Example
-------
>>> import tempfile, numpy as np
>>> path = Path(tempfile.mkdtemp()) / "predictions_test.csv"
>>> write_predictions(path, ["a.png", "b.png"], ["P1", "P2"], [0, 1], np.array([[.8, .2], [.3, .7]]),
...                   ("normal", "covid"), [0, 1])
>>> read_predictions(path).keys
('a.png', 'b.png')
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion.errors import ModelFolderError

__all__ = ["PREDICTIONS", "Predictions", "read_predictions", "row_keys", "write_predictions"]

PREDICTIONS = "predictions_{split}.csv"
_FIXED = ("row_key", "group", "label", "predicted")
_PREFIX = "p_"


@dataclass(frozen=True)
class Predictions:
    """One split's predictions, read back: row-aligned arrays.

    ``labels`` and ``predicted`` index into ``classes``; ``groups`` is None when the
    file has no patient ids (each row its own patient).
    """

    keys: tuple[str, ...]
    groups: np.ndarray | None
    labels: np.ndarray
    predicted: np.ndarray
    proba: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.keys)


def row_keys(ds) -> list[str]:
    """The stable key of each row of dataset ``ds`` (see the module docstring): the
    same row of the same data gets the same key in an image run and a record run."""
    if ds.files is not None:
        return [str(f) for f in ds.files]
    if ds.records is not None:
        return [f"row {i}" for i in ds.records.index]
    return [f"row {i}" for i in range(len(ds))]


def write_predictions(path: str | Path, keys, groups, labels, proba, classes, predicted) -> None:
    """Write one split's predictions to ``path`` whole (see :func:`~fusion.persistence.atomic_write`)."""
    from fusion.persistence import atomic_write_text

    proba = np.asarray(proba, dtype=np.float64)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*_FIXED, *(_PREFIX + c for c in classes)])
    groups = [""] * len(keys) if groups is None else groups
    for key, group, label, pred, row in zip(keys, groups, labels, predicted, proba, strict=True):
        writer.writerow([key, group, classes[int(label)], classes[int(pred)], *(repr(float(p)) for p in row)])
    atomic_write_text(path, buffer.getvalue())


def read_predictions(path: str | Path) -> Predictions:
    """Read a predictions file written by :func:`write_predictions`.

    Raises
    ------
    FileNotFoundError
        No such file.
    ModelFolderError
        The file is not such a file: a header without the columns, a label outside
        its classes, a probability that is not a number; ``file`` names it, ``field``
        the column.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header = rows[0] if rows else []
    columns = header[len(_FIXED) :]
    classes = tuple(h[len(_PREFIX) :] for h in columns)
    if tuple(header[: len(_FIXED)]) != _FIXED or not classes or any(not h.startswith(_PREFIX) for h in columns):
        raise ModelFolderError(
            f"{path}: not a predictions file: its header must be {', '.join(_FIXED)}, then p_<class> for each class",
            file=str(path),
            field="header",
            accepted=", ".join(_FIXED) + ", p_<class>...",
        )
    body = rows[1:]
    index = {c: i for i, c in enumerate(classes)}
    try:
        proba = np.array([[float(v) for v in r[len(_FIXED) :]] for r in body], dtype=np.float64)
        labels = np.array([index[r[2]] for r in body], dtype=np.int64)
        predicted = np.array([index[r[3]] for r in body], dtype=np.int64)
    except (ValueError, KeyError, IndexError) as err:
        raise ModelFolderError(
            f"{path}: a row is not a label, a predicted class and {len(classes)} probabilities ({err})",
            file=str(path),
            field="row",
        ) from None
    groups = np.array([r[1] for r in body], dtype=object)
    return Predictions(
        keys=tuple(r[0] for r in body),
        groups=None if body and not any(groups) else groups,
        labels=labels,
        predicted=predicted,
        proba=proba.reshape(len(body), len(classes)),
        classes=classes,
    )
