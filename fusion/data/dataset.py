"""The one in-memory form of every dataset: labels, images and records, row-aligned."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from fusion.schema import Schema


@dataclass
class Dataset:
    """Labelled images and/or clinical records, row-aligned.

    Attributes
    ----------
    name : str
    classes : tuple of str
        Class names; ``labels`` index into them.
    labels : numpy.ndarray of int64, shape (n,)
    images : numpy.ndarray of uint8, shape (n, S, S), MappedImages, or None
        A :class:`~fusion.data.cache.MappedImages` (same shape, read from disk batch
        by batch) for a folder whose decoded images are too large to hold in memory.
    records : pandas.DataFrame or None
        Parsed schema features (numeric as float with NaN, categorical as str/None).
    groups : numpy.ndarray or None
        Patient ids.
    files : numpy.ndarray or None
        Where each image came from (file name, or ``split[index]`` for an .npz).
    schema : Schema or None
    splits : dict of str -> index array, or None
        Splits the data came with (an .npz's own), used as given.
    skipped : list of dict
        Rows that were not loaded: ``{"row", "file", "reason"}``.
    notes : list of dict
        Values the schema's declared policies changed (e.g. out of range -> missing).
    missing_tokens : dict of str -> dict of str -> int
        How many values each of the schema's declared missing tokens made missing, by
        feature then token (``{"sex": {"unknown": 34}}``), over the rows validated.
    """

    name: str
    classes: tuple[str, ...]
    labels: np.ndarray
    images: np.ndarray | None = None
    records: pd.DataFrame | None = None
    groups: np.ndarray | None = None
    files: np.ndarray | None = None
    schema: Schema | None = None
    splits: dict[str, np.ndarray] | None = None
    skipped: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    missing_tokens: dict[str, dict[str, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def modalities(self) -> frozenset[str]:
        """The modalities this dataset holds."""
        have = set()
        if self.images is not None:
            have.add("image")
        if self.records is not None and len(self.records.columns):
            have.add("tabular")
        return frozenset(have)

    @property
    def image_size(self) -> int | None:
        return None if self.images is None else int(self.images.shape[-1])

    def subset(self, index: np.ndarray) -> Dataset:
        """The rows ``index`` as a new dataset (skipped rows, notes and token counts are kept)."""
        from fusion.data.cache import take_rows

        index = np.asarray(index, dtype=np.int64)
        return replace(
            self,
            labels=self.labels[index],
            images=None if self.images is None else take_rows(self.images, index),
            records=None if self.records is None else self.records.iloc[index],
            groups=None if self.groups is None else self.groups[index],
            files=None if self.files is None else self.files[index],
            splits=None,
        )

    def split(self, *, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15) -> dict[str, Dataset]:
        """Train/val/test datasets: the data's own splits if it has them, else a
        stratified split grouped by patient (see :func:`~fusion.data.splits.grouped_split`)."""
        from fusion.data.splits import grouped_split

        if self.splits is not None:
            return {name: self.subset(idx) for name, idx in self.splits.items()}
        index = grouped_split(
            self.labels, self.groups, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )
        return {name: self.subset(idx) for name, idx in index.items()}


def fingerprint(*parts: Dataset | None) -> str:
    """SHA-256 over labels, images and records of the given datasets: a resumed run
    must see exactly the data it started with."""
    digest = hashlib.sha256()
    for ds in parts:
        if ds is None:
            digest.update(b"none")
            continue
        digest.update(np.ascontiguousarray(ds.labels).tobytes())
        if ds.images is not None:  # in blocks: the images may be larger than memory
            for start in range(0, len(ds.images), 1024):
                digest.update(np.ascontiguousarray(ds.images[start : start + 1024]).tobytes())
        if ds.records is not None:
            digest.update(ds.records.to_csv().encode())
    return digest.hexdigest()


def intensity_stats(images: np.ndarray, pixels: int = 1 << 21) -> tuple[float, float]:
    """Mean and standard deviation of uint8 images scaled to [0, 1], in blocks of
    about ``pixels`` pixels, so a large training set (or one on disk) is never copied
    whole into floats: the float64 copies of one block take ~16 MB."""
    total = squares = 0.0
    per_image = int(np.prod(images.shape[1:])) or 1
    chunk = max(1, pixels // per_image)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].astype(np.float64) / 255.0
        total += float(block.sum())
        squares += float(np.square(block).sum())
    n = images.size
    mean = total / n
    std = max(squares / n - mean * mean, 0.0) ** 0.5
    return mean, std or 1.0
