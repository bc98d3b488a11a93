"""The contract every backend keeps, and what the estimator hands it.

:class:`~fusion.classifier.FusionClassifier` validates records against the schema,
decodes images, fits the tabular preprocessing and then delegates to one backend, the
way XGBoost's ``XGBClassifier`` wraps its ``Booster``: the network (joint late fusion),
the XGBoost booster, and each later fusion strategy is one module behind this protocol,
so a new kind of model never adds a branch to the estimator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from fusion.config import Config
    from fusion.data.dataset import Dataset
    from fusion.explain import Explanation
    from fusion.persistence import ModelFiles
    from fusion.preprocessing import TabularPreprocessor


@dataclass
class ModelSpec:
    """What the estimator has settled before a backend is built: the configuration,
    the classes, the modalities and the fitted tabular preprocessing.

    Attributes
    ----------
    config : Config
        Validated.
    classes : tuple of str
    modalities : tuple of str
    preprocessor : TabularPreprocessor or None
        None for image-only models.
    image_size : int or None
        Side of the images the model takes; None without the image modality.
    image_channels : int
        The channels of the images the model takes: 1 (gray films, and every model
        without images) or 3 (colour).
    """

    config: Config
    classes: tuple[str, ...]
    modalities: tuple[str, ...]
    preprocessor: TabularPreprocessor | None
    image_size: int | None
    image_channels: int = 1

    @property
    def units(self) -> dict[str, str]:
        """Each record feature's unit, for explanations."""
        if self.preprocessor is None:
            return {}
        return {f.name: f.unit for f in self.preprocessor.schema.features if f.unit}


@dataclass
class Batch:
    """Validated inputs of ``n`` patients, as backends take them.

    Attributes
    ----------
    images : numpy.ndarray or None
        uint8, shape (n, S, S) at the model's size, or (n, S, S, 3) for a colour model.
    records : pandas.DataFrame, dict or None
        Parsed record values, one column per schema feature: a DataFrame, or a mapping
        feature -> list of values (the one-patient path, which skips pandas).
    presence : numpy.ndarray or None
        (n, len(modalities)) 0/1: which of the model's modalities each row has; None
        when every row has every modality that is given.
    """

    images: np.ndarray | None = None
    records: Any = None
    presence: np.ndarray | None = None

    def __len__(self) -> int:
        if self.images is not None:
            return len(self.images)
        if self.records is None:
            return 0
        return len(self.records) if hasattr(self.records, "iloc") else len(next(iter(self.records.values()), []))

    @classmethod
    def from_dataset(cls, ds: Dataset, modalities: tuple[str, ...]) -> Batch:
        """The modalities of ``ds`` that a model of ``modalities`` uses."""
        return cls(
            images=ds.images if "image" in modalities else None,
            records=ds.records if "tabular" in modalities else None,
        )

    def record(self, i: int = 0) -> dict | None:
        """Row ``i``'s parsed record values (None without records)."""
        if self.records is None:
            return None
        if hasattr(self.records, "iloc"):
            return self.records.iloc[i].to_dict()
        return {name: values[i] for name, values in self.records.items()}

    def image(self, i: int = 0) -> np.ndarray | None:
        return None if self.images is None else self.images[i]


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency ("balanced") weights, n / (k * count), the same for every
    backend; classes absent from ``labels`` get weight 0 (scikit-learn's
    ``compute_class_weight`` refuses absent classes, which a small fold can have)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


class Backend(Protocol):
    """One kind of model behind :class:`~fusion.classifier.FusionClassifier`.

    A backend is built from a :class:`ModelSpec`, fitted on datasets, asked for
    probabilities and explanations of :class:`Batch` inputs, and saved as files in a
    model folder (no pickle) from which ``load`` rebuilds it.
    """

    name: ClassVar[str]
    # What the backend was built for: the modalities it reads may be fewer than the
    # configuration's (auto returns the backend it chose, built for its modalities).
    spec: ModelSpec
    # Whether the backend trains under torchrun (several processes), and whether
    # fusion.export writes it as one ONNX graph; ``portable_file`` names the file that
    # already is portable when it is not (XGBoost's own JSON).
    distributed: ClassVar[bool]
    exportable: ClassVar[bool]
    portable_file: ClassVar[str | None]
    history_: dict

    def fit(
        self,
        train: Dataset,
        val: Dataset | None,
        *,
        verbose: bool = False,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
    ) -> Backend:
        """Train; ``val`` drives early stopping. ``checkpoint_dir`` and ``resume`` are
        for backends that train in epochs; others ignore them."""

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """Probabilities, shape (n, n_classes)."""

    def explain(self, batch: Batch, target: int | None, *, n_steps: int) -> Explanation:
        """Explain the one patient of ``batch`` (``target`` None: the predicted class)."""

    @classmethod
    def files(cls, modalities: tuple[str, ...]) -> tuple[str, ...]:
        """The names of the files ``save`` gives for a model of ``modalities`` (each
        must be listed in a model folder's manifest)."""

    def save(self) -> dict[str, bytes]:
        """The backend's files for the model folder, name -> content (no pickle)."""

    @property
    def image_state(self) -> dict | None:
        """The image preprocessing the model expects (size, normalisation), written to
        ``preprocessing.json`` for consumers outside Python; None without images."""

    @classmethod
    def load(cls, spec: ModelSpec, files: ModelFiles, *, device: str = "cpu") -> Backend:
        """Rebuild from a model folder's verified files (``files.read(name)``,
        ``files.json(name)``, ``files.tensors(name)``: the bytes whose hashes were
        checked; never the folder again). Every value is checked against ``spec``
        (classes, columns, shapes) before anything is built from it; a mismatch is a
        ``ValueError`` naming the file and the key."""
