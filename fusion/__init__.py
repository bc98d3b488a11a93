"""fusion: chest X-rays and clinical records, classified together.

Public names::

    from fusion import FusionClassifier, Config, load_dataset, load_schema, synthetic
"""

__version__ = "0.1.0"

from fusion.classifier import FusionClassifier, Prediction  # noqa: E402
from fusion.config import Config  # noqa: E402
from fusion.data import Dataset, grouped_kfold, grouped_split, load_dataset, synthetic  # noqa: E402
from fusion.evaluation import classification_metrics  # noqa: E402
from fusion.explain import Explanation  # noqa: E402
from fusion.schema import Schema, load_schema  # noqa: E402
from fusion.training import tune_allocator  # noqa: E402

__all__ = [
    "Config",
    "Dataset",
    "Explanation",
    "FusionClassifier",
    "Prediction",
    "Schema",
    "classification_metrics",
    "grouped_kfold",
    "grouped_split",
    "load_dataset",
    "load_schema",
    "synthetic",
    "tune_allocator",
    "__version__",
]
