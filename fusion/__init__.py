"""fusion: chest X-rays and clinical records, classified together.

Public names::

    from fusion import FusionClassifier, Config, load_dataset, load_schema, synthetic
    from fusion import FusionError  # and its family: InputError, ImageError, SchemaError, ...

Each public name is imported when first used (PEP 562), so ``import fusion`` costs
almost nothing and a single prediction loads only what it needs (no xgboost,
matplotlib or captum unless a model or a call needs them).
"""

from __future__ import annotations

import importlib

from fusion.version import __version__ as __version__

_EXPORTS = {
    "Config": "fusion.config",
    "ConfigError": "fusion.errors",
    "Dataset": "fusion.data.dataset",
    "Explanation": "fusion.explain",
    "FusionClassifier": "fusion.classifier",
    "FusionError": "fusion.errors",
    "ImageError": "fusion.errors",
    "InputError": "fusion.errors",
    "MissingFileError": "fusion.errors",
    "ModelFolderError": "fusion.errors",
    "NotFittedError": "fusion.classifier",
    "Prediction": "fusion.classifier",
    "Schema": "fusion.schema",
    "SchemaError": "fusion.errors",
    "classification_metrics": "fusion.evaluation",
    "grouped_kfold": "fusion.data.splits",
    "grouped_split": "fusion.data.splits",
    "load_dataset": "fusion.data.loaders",
    "load_schema": "fusion.schema",
    "select_by_validation": "fusion.selection",
    "tune_allocator": "fusion.allocator",
}
_MODULES = {"synthetic": "fusion.data.synthetic"}

__all__ = sorted([*_EXPORTS, *_MODULES, "__version__"])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'fusion' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
