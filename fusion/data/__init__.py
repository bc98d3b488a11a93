"""Datasets: the embedded synthetic cohort, folders of X-rays with a clinical table, and
MedMNIST-style ``.npz`` files, all loaded into one :class:`Dataset` (in memory, or with
its images read from the cache on disk batch by batch: :class:`MappedImages`).

The names below are imported when first used, so that reading one image (what a single
prediction needs) does not import pandas' and scikit-learn's loaders and splitters.

Example
-------
>>> from fusion.data import load_dataset
>>> ds = load_dataset(None, image_size=32, synthetic_n=60)
>>> len(ds), ds.classes, ds.images.shape[1:]
(60, ('covid', 'pneumonia', 'normal'), (32, 32))
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Dataset": "fusion.data.dataset",
    "load_dataset": "fusion.data.loaders",
    "load_folder": "fusion.data.loaders",
    "load_npz": "fusion.data.loaders",
    "load_synthetic": "fusion.data.loaders",
    "read_table": "fusion.data.loaders",
    "grouped_kfold": "fusion.data.splits",
    "grouped_split": "fusion.data.splits",
    "load_image": "fusion.data.images",
    "MappedImages": "fusion.data.cache",
}
__all__ = [*_EXPORTS, "synthetic"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name == "synthetic":
        return importlib.import_module("fusion.data.synthetic")
    raise AttributeError(f"module 'fusion.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
