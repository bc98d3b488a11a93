"""``FusionClassifier``: the estimator users fit, save, load and ask about patients.

It ties the pieces together (schema, preprocessing, branches, fusion head or the
XGBoost baseline) behind a scikit-learn-like interface: ``__init__`` stores the
configuration, ``fit`` returns ``self`` and sets attributes ending in ``_``.

Example
-------
>>> from fusion import Config, FusionClassifier, load_dataset, synthetic
>>> ds = load_dataset(None, image_size=32, synthetic_n=80)
>>> parts = ds.split(seed=0)
>>> cfg = Config(); cfg.image.image_size = 32; cfg.train.epochs = 1
>>> clf = FusionClassifier(cfg).fit(parts["train"], parts["val"])
>>> record, image = synthetic.example(0, image_size=32)
>>> sorted(clf.predict(record, image).probabilities) == sorted(clf.classes_)
True
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import torch

from fusion import __version__
from fusion.baseline import XGBoostBaseline
from fusion.config import Config
from fusion.data import Dataset
from fusion.data.images import load_image
from fusion.image import ImageBranch, create_backbone, freeze_blocks, imagenet_weights_path, load_backbone_weights
from fusion.model import FusionModel, inference_copy
from fusion.persistence import (
    BOOSTER,
    WEIGHTS,
    load_state_dict,
    save_state_dict,
    verify_folder,
    write_json,
    write_manifest,
)
from fusion.preprocessing import TabularPreprocessor
from fusion.schema import is_missing, parse_schema, records_frame
from fusion.tabular import TabularMLP
from fusion.explain import DEFAULT_STEPS, Explanation, explain_network, sum_by_source
from fusion.training import Arrays, fit_network, predict_network, prepare_model, resolve_device, resolve_precision


@dataclass
class Prediction:
    """The answer for one patient.

    Attributes
    ----------
    label : str
        The most probable class.
    probabilities : dict of str -> float
        Every class's probability; they sum to 1.
    modalities : tuple of str
        The inputs the answer rests on ("image", "tabular").
    """

    label: str
    probabilities: dict[str, float]
    modalities: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        probs = ", ".join(f"{c} {p:.3f}" for c, p in self.probabilities.items())
        return f"{self.label} ({probs}; from {' + '.join(self.modalities)})"


@dataclass
class _Runtime:
    """How a fitted network is run for prediction (see ``FusionClassifier._runtime_state``)."""

    source: torch.nn.Module
    device: torch.device
    precision: str
    network: torch.nn.Module
    tensors: list[torch.Tensor]
    stamps: tuple

    @classmethod
    def of(cls, source: torch.nn.Module, precision: str) -> "_Runtime":
        device = next(source.parameters()).device
        precision = resolve_precision(precision, device)
        tensors = list(source.state_dict(keep_vars=True).values())
        runtime = cls(source, device, precision, inference_copy(source, precision), tensors, ())
        runtime.stamps = runtime.stamp()
        return runtime

    def stamp(self) -> tuple:
        """Where each weight lives and how often it was changed in place: a move to
        another device or an edit of the weights changes it (~3 us to compute)."""
        return tuple((t.data_ptr(), t._version) for t in self.tensors)


def data_fingerprint(*parts: Dataset | None) -> str:
    """SHA-256 over labels, images and records of the given datasets: a resumed run
    must see exactly the data it started with."""
    digest = hashlib.sha256()
    for ds in parts:
        if ds is None:
            digest.update(b"none")
            continue
        digest.update(np.ascontiguousarray(ds.labels).tobytes())
        if ds.images is not None:
            digest.update(np.ascontiguousarray(ds.images).tobytes())
        if ds.records is not None:
            digest.update(ds.records.to_csv().encode())
    return digest.hexdigest()


def intensity_stats(images: np.ndarray, chunk: int = 256) -> tuple[float, float]:
    """Mean and standard deviation of uint8 images scaled to [0, 1], in chunks, so a
    large training set is never copied whole into floats."""
    total = squares = 0.0
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].astype(np.float64) / 255.0
        total += float(block.sum())
        squares += float(np.square(block).sum())
    n = images.size
    mean = total / n
    std = max(squares / n - mean * mean, 0.0) ** 0.5
    return mean, std or 1.0


class FusionClassifier:
    """Late-fusion classifier of chest X-rays and clinical records.

    Parameters
    ----------
    config : Config, optional
        Model and training settings; defaults to a fused image + tabular model.

    Attributes
    ----------
    classes_ : tuple of str
    modalities_ : tuple of str
        The modalities the model was trained on.
    schema_ : Schema or None
        The schema of the clinical records (None for image-only data without one).
    preprocessor_ : TabularPreprocessor or None
    network_ : FusionModel or None
        The neural model (None for the XGBoost baseline).
    booster_ : XGBoostBaseline or None
    image_size_ : int or None
    history_ : dict
        Training history of the last ``fit``.
    """

    def __init__(self, config: Config | None = None):
        self.config = config

    # ------------------------------------------------------------------ fitting
    def fit(self, train: Dataset, val: Dataset | None = None, *, verbose: bool = False, checkpoint_dir: str | Path | None = None, resume: bool = False) -> "FusionClassifier":
        """Train on ``train``; ``val`` drives early stopping (and the baseline's).

        Parameters
        ----------
        train, val : Dataset
        verbose : bool
            Progress bar and one summary line per epoch.
        checkpoint_dir : str or Path, optional
            Save the full training state there after every epoch.
        resume : bool
            Continue from the checkpoint in ``checkpoint_dir``; refused when it was made
            with another configuration or other data.

        Raises
        ------
        ValueError
            When the data lack a modality the configuration asks for, or a checkpoint
            does not match.
        """
        cfg = (self.config or Config()).validate()
        self.config = cfg
        missing = [m for m in cfg.modalities if m not in train.modalities]
        if missing:
            raise ValueError(f"the training data have no {missing} (they hold {sorted(train.modalities)}); use --modalities {','.join(sorted(train.modalities))}")
        if "image" in cfg.modalities and train.image_size != cfg.image.image_size:
            raise ValueError(f"training images are {train.image_size} px but image.image_size is {cfg.image.image_size}")
        self.classes_ = tuple(train.classes)
        self.modalities_ = cfg.modalities
        self.schema_ = train.schema
        self.image_size_ = cfg.image.image_size if "image" in cfg.modalities else None
        self.preprocessor_ = TabularPreprocessor(train.schema).fit(train.records) if "tabular" in cfg.modalities else None
        self.network_, self.booster_, self._runtime = None, None, None
        n_classes = len(self.classes_)
        if cfg.model == "xgboost":
            X, _ = self.preprocessor_.transform_raw(train.records)
            X_val = y_val = None
            if val is not None and len(val):
                X_val, _ = self.preprocessor_.transform_raw(val.records)
                y_val = val.labels
            t = cfg.train
            self.booster_ = XGBoostBaseline(t.xgb_trees, t.xgb_depth, t.xgb_lr, seed=t.seed).fit(X, train.labels, n_classes, X_val, y_val)
            self.history_ = {"best_iteration": self.booster_.best_iteration_}
            return self
        device = resolve_device(cfg.train.device)
        precision = resolve_precision(cfg.train.precision, device)
        # Seeded inside a fork: the caller's random state (CPU, and the GPU's when
        # training there) is left as it was.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.train.seed)
            self.network_ = self._build_network(cfg, train, initial=True)
            self.network_ = prepare_model(self.network_, device, precision)
            self.history_ = fit_network(
                self.network_,
                self._arrays(train),
                self._arrays(val) if val is not None and len(val) else None,
                cfg.train,
                cfg.head,
                augment=cfg.image.augment,
                device=device,
                precision=precision,
                verbose=verbose,
                checkpoint_dir=checkpoint_dir,
                fingerprint=self._fingerprint(cfg, train, val) if checkpoint_dir is not None else None,
                resume=resume,
            )
        self.history_.update(device=str(device), precision=precision)
        return self

    def _fingerprint(self, cfg: Config, train: Dataset, val: Dataset | None) -> dict:
        """What a checkpoint must match to be resumed: configuration, data, preprocessing."""
        return {"config": cfg.to_dict(), "data": data_fingerprint(train, val), "preprocessing": self.preprocessor_.to_dict() if self.preprocessor_ else None}

    def _build_network(self, cfg: Config, train: Dataset | None = None, *, initial: bool = False) -> FusionModel:
        """The network of ``cfg``; with ``initial``, also its starting weights."""
        branches: dict[str, torch.nn.Module] = {}
        if "image" in cfg.modalities:
            backbone = create_backbone(cfg.image.backbone)
            mean, std = 0.5, 0.25
            if initial:
                mean, std = intensity_stats(train.images)
                mean, std = self._initial_image_weights(cfg, backbone, mean, std)
            branches["image"] = ImageBranch(backbone, mean, std)
            if initial and cfg.image.freeze:
                freeze_blocks(backbone, cfg.image.freeze)
        if "tabular" in cfg.modalities:
            branches["tabular"] = TabularMLP(self.preprocessor_.n_features_out, cfg.tabular.hidden, cfg.tabular.dropout)
        return FusionModel(branches, len(self.classes_), cfg.head.hidden, cfg.head.dropout, cfg.head.modality_dropout)

    @staticmethod
    def _initial_image_weights(cfg: Config, backbone, mean: float, std: float) -> tuple[float, float]:
        """Load starting weights into ``backbone``; returns the normalisation to use
        (a transferred branch keeps the intensity scale it was trained with)."""
        if cfg.image.weights:
            load_backbone_weights(backbone, cfg.image.weights)
        elif cfg.image.pretrained == "imagenet":
            load_backbone_weights(backbone, imagenet_weights_path(cfg.image.backbone))
        elif cfg.image.init_from:
            source = FusionClassifier.load(cfg.image.init_from)
            if source.network_ is None or "image" not in source.modalities_:
                raise ValueError(f"--init-from {cfg.image.init_from}: that run has no image branch")
            if source.config.image.backbone != cfg.image.backbone:
                raise ValueError(
                    f"--init-from {cfg.image.init_from}: that run's backbone is {source.config.image.backbone!r}, "
                    f"this run's is {cfg.image.backbone!r}; use --backbone {source.config.image.backbone}"
                )
            branch = source.network_.branches["image"]
            backbone.load_state_dict(branch.backbone.state_dict())
            return float(branch.mean), float(branch.std)
        return mean, std

    # --------------------------------------------------------------- inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise RuntimeError("this FusionClassifier is not fitted: call fit() or FusionClassifier.load(run_dir)")

    def _arrays(self, ds: Dataset) -> Arrays:
        images = tabular = None
        if "image" in self.modalities_ and ds.images is not None:
            if ds.image_size != self.image_size_:
                raise ValueError(f"images are {ds.image_size} px; this model takes {self.image_size_} px")
            images = torch.from_numpy(np.ascontiguousarray(ds.images)).unsqueeze(1)
        if "tabular" in self.modalities_ and ds.records is not None:
            tabular = torch.from_numpy(self.preprocessor_.transform(ds.records))
        return Arrays(labels=torch.from_numpy(ds.labels), images=images, tabular=tabular)

    def _runtime_state(self) -> "_Runtime":
        """Device, precision and the network predictions run (an
        :func:`~fusion.model.inference_copy` of ``network_``), made once and kept:
        probing the CPU for bf16 or copying the network on every prediction would be
        wasted work. Made again when ``network_`` is replaced, moved, or has its
        weights changed in place, so predictions always follow ``network_``."""
        runtime = getattr(self, "_runtime", None)
        if runtime is None or runtime.source is not self.network_ or runtime.stamp() != runtime.stamps:
            self._runtime = _Runtime.of(self.network_, self.config.train.precision)
        return self._runtime

    def predict_dataset(self, ds: Dataset) -> np.ndarray:
        """Probabilities for every row of a loaded dataset, shape (n, n_classes)."""
        self._check_fitted()
        usable = [m for m in self.modalities_ if m in ds.modalities]
        if not usable:
            raise ValueError(f"this model uses {list(self.modalities_)}; the dataset holds {sorted(ds.modalities)}")
        if self.booster_ is not None:
            X, _ = self.preprocessor_.transform_raw(ds.records)
            return self.booster_.predict_proba(X)
        rt = self._runtime_state()
        return predict_network(rt.network, self._arrays(ds), rt.device, rt.precision, frozen=True)

    def _record_frame(self, records: Iterable[Mapping[str, Any] | None]) -> pd.DataFrame:
        rows = []
        for i, record in enumerate(records):
            try:
                rows.append(self.schema_.validate_record(record if record is not None else {}))
            except ValueError as err:
                raise ValueError(f"record {i}: {err}") from None
        return records_frame(self.schema_, {n: [r[n] for r in rows] for n in self.schema_.feature_names})

    def predict_proba(self, table: pd.DataFrame | Iterable[Mapping] | None = None, images: Iterable | np.ndarray | None = None, *, batch_size: int = 64) -> np.ndarray:
        """Probabilities for many patients at once, batched.

        Parameters
        ----------
        table : pandas.DataFrame or list of dict, optional
            Raw records keyed by schema feature names (validated like :meth:`predict`).
        images : sequence of image sources, or uint8 array (n, H, W), optional
            Paths, PIL images, arrays or bytes, row-aligned with ``table``.

        Returns
        -------
        numpy.ndarray, shape (n, n_classes)
        """
        self._check_fitted()
        records = has_record = None
        if table is not None and "tabular" in self.modalities_:
            if not isinstance(table, pd.DataFrame) and (isinstance(table, (str, bytes, Mapping)) or not isinstance(table, Iterable)):
                raise TypeError(f"table must be a DataFrame or a list of dicts; got {type(table).__name__}")
            rows = table.to_dict("records") if isinstance(table, pd.DataFrame) else list(table)
            records = self._record_frame(rows)
            has_record = np.array([self._has_value(r) for r in records.to_dict("records")], dtype=bool)
            if not has_record.any():
                records = has_record = None
        pixels = None
        if images is not None and "image" in self.modalities_:
            images = list(images) if not isinstance(images, np.ndarray) else images
            pixels = np.stack([load_image(img, self.image_size_) for img in images]) if len(images) else None
        self._check_inputs(records is not None, pixels is not None)
        n = len(records) if records is not None else len(pixels)
        if records is not None and pixels is not None and len(records) != len(pixels):
            raise ValueError(f"table has {len(records)} rows but {len(pixels)} images were given")
        if has_record is not None and not has_record.all() and (pixels is None or self.booster_ is not None):
            first = int(np.flatnonzero(~has_record)[0])
            raise ValueError(f"record {first} has no known value and there is no image to answer from")
        if self.booster_ is not None:
            return self.booster_.predict_proba(self.preprocessor_.transform_raw(records)[0])
        ds = Dataset(name="input", classes=self.classes_, labels=np.zeros(n, np.int64), images=pixels, records=records)
        arrays = self._arrays(ds)
        if has_record is not None and not has_record.all():
            # Rows whose record holds no known value answer from the image alone: the
            # tabular modality is switched off for them exactly as a missing one is.
            presence = torch.ones(n, len(self.modalities_))
            presence[torch.from_numpy(~has_record), self.modalities_.index("tabular")] = 0.0
            arrays.presence = presence
        rt = self._runtime_state()
        return predict_network(rt.network, arrays, rt.device, rt.precision, batch_size=batch_size, frozen=True)

    def _check_inputs(self, has_record: bool, has_image: bool) -> None:
        given = {"tabular": has_record, "image": has_image}
        if not any(given[m] for m in self.modalities_):
            names = {"tabular": "a record", "image": "an image"}
            raise ValueError(f"this model was trained on {list(self.modalities_)} and needs {' or '.join(names[m] for m in self.modalities_)}; none was given")
        if self.booster_ is not None and not has_record:
            raise ValueError("the XGBoost baseline needs a record with at least one known value")

    def _one(self, record, image) -> tuple[dict | None, np.ndarray | None, np.ndarray | None, tuple[str, ...]]:
        """Validate and prepare one patient's inputs: (record values, the network's
        tabular row or None, uint8 pixels or None, modalities used).

        The record is prepared before the image is decoded: whatever runs after a
        decode finds the caches full of pixels, so only the network should.
        """
        self._check_fitted()
        use_record = record is not None and "tabular" in self.modalities_
        use_image = image is not None and "image" in self.modalities_
        values = self.schema_.validate_record(record) if use_record else None
        # A record without one known value says nothing: it is a missing modality, not a
        # record of imputed averages (which would claim a patient with average values).
        use_record = use_record and self._has_value(values)
        values = values if use_record else None
        self._check_inputs(use_record, use_image)
        row = self.preprocessor_.transform_record(values) if use_record and self.booster_ is None else None
        pixels = load_image(image, self.image_size_) if use_image else None
        used = tuple(m for m, on in (("image", use_image), ("tabular", use_record)) if on)
        return values, row, pixels, used

    @staticmethod
    def _has_value(values: Mapping[str, Any]) -> bool:
        return any(not is_missing(v) for v in values.values())

    def _one_row(self, values: dict) -> dict[str, list]:
        """A validated record as one-row columns for the preprocessor (no pandas: this
        is the single-prediction path)."""
        return {n: [values[n]] for n in self.schema_.feature_names}

    @staticmethod
    def _tensors(row: np.ndarray | None, pixels: np.ndarray | None, device: torch.device) -> dict[str, torch.Tensor | None]:
        tabular = image = None
        if row is not None:
            tabular = torch.from_numpy(row).to(device)
        if pixels is not None:
            image = torch.from_numpy(pixels).to(device).float().div_(255.0)[None, None]
        return {"image": image, "tabular": tabular}

    def predict(self, record: Mapping[str, Any] | pd.Series | None = None, image: Any = None) -> Prediction:
        """Classify one patient from a record, an image, or both.

        Parameters
        ----------
        record : dict or pandas.Series, optional
            Keyed by the schema's feature names; a missing key is a missing value.
        image : str, Path, PIL.Image.Image, numpy.ndarray or bytes, optional
            PNG, JPEG or DICOM; any size; grayscale, RGB or RGBA; 8 or 16 bit.

        Either may be None: a fused model answers from the other one (it was trained
        with modality dropout) and ``Prediction.modalities`` says what it used.

        Raises
        ------
        ValueError
            A record value fails the schema (naming the field, the value and what is
            accepted), an unknown field, an unreadable image (naming it), or no input
            the model can use.
        """
        values, row, pixels, used = self._one(record, image)
        if self.booster_ is not None:
            proba = self.booster_.predict_proba(self.preprocessor_.transform_raw(self._one_row(values))[0])[0]
        else:
            rt = self._runtime_state()
            with torch.no_grad():  # the inference copy holds its own precision: no autocast
                logits = rt.network(self._tensors(row, pixels, rt.device))
            proba = torch.softmax(logits.float(), dim=1)[0].cpu().numpy().astype(np.float64)
        probabilities = {c: float(p) for c, p in zip(self.classes_, proba)}
        return Prediction(label=self.classes_[int(np.argmax(proba))], probabilities=probabilities, modalities=used)

    def explain(self, record: Mapping[str, Any] | pd.Series | None = None, image: Any = None, *, target: str | None = None, n_steps: int = DEFAULT_STEPS) -> Explanation:
        """Explain one prediction over both modalities (see :mod:`fusion.explain`).

        Parameters
        ----------
        record, image
            As for :meth:`predict`; either may be None.
        target : str, optional
            The class to explain; default the predicted one.
        n_steps : int
            Integrated Gradients steps.

        Returns
        -------
        Explanation
            ``image_attribution`` (H x W), ``tabular_attribution`` (feature -> value),
            ``modality_share`` (sums to 1), ``target``, ``probability``; ``save(path)``
            writes a PNG.
        """
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)):
            raise TypeError(f"n_steps must be an integer; got {type(n_steps).__name__}")
        if not 1 <= n_steps <= 10_000:
            raise ValueError(f"n_steps must be between 1 and 10000; got {n_steps}")
        values, row, pixels, _ = self._one(record, image)
        if target is not None and target not in self.classes_:
            raise ValueError(f"target must be one of {list(self.classes_)}; got {target!r}")
        k = None if target is None else self.classes_.index(target)
        units = {f.name: f.unit for f in self.schema_.features if f.unit} if self.schema_ else {}
        if self.booster_ is not None:
            X, names = self.preprocessor_.transform_raw(self._one_row(values))
            proba = self.booster_.predict_proba(X)[0]
            k = int(np.argmax(proba)) if k is None else k
            contrib = self.booster_.contributions(X)[0, k, :-1]  # last column: bias
            sources = [n.split("=")[0] for n in names]
            tab = sum_by_source(contrib, sources, self.schema_.feature_names)
            return Explanation(self.classes_[k], float(proba[k]), dict(zip(self.classes_, map(float, proba))), {"tabular": 1.0}, None, tab, None, values, method="xgboost_tree_shap", units=units)
        branch = self.network_.branches["image"] if "image" in self.modalities_ else None
        rt = self._runtime_state()
        # The network predictions run (bf16 where they are), so the explained
        # probability is the predicted one.
        result = explain_network(
            rt.network, self._tensors(row, pixels, rt.device), self.classes_, k, image_mean=float(branch.mean) if branch is not None else None, n_steps=n_steps
        )
        k = result["target"]
        tab = None
        if result["tabular_attribution"] is not None:
            tab = sum_by_source(result["tabular_attribution"], self.preprocessor_.sources_, self.schema_.feature_names)
        proba = result["probabilities"]
        return Explanation(
            target=self.classes_[k],
            probability=float(proba[k]),
            probabilities=dict(zip(self.classes_, map(float, proba))),
            modality_share=result["modality_share"],
            image_attribution=result["image_attribution"],
            tabular_attribution=tab,
            image=pixels,
            record=values,
            units=units,
        )

    # ------------------------------------------------------------- persistence
    def save(self, folder: str | Path) -> Path:
        """Write the model folder (see :mod:`fusion.persistence`); returns its path."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = ["config.json", "preprocessing.json"]
        write_json(folder / "config.json", {"fusion_version": __version__, "classes": list(self.classes_), "modalities": list(self.modalities_), "config": self.config.to_dict()})
        image_state = None
        if self.network_ is not None and "image" in self.modalities_:
            branch = self.network_.branches["image"]
            image_state = {"size": self.image_size_, "mean": float(branch.mean), "std": float(branch.std), "channels": 1, "resize": "bilinear, squash to square"}
        write_json(folder / "preprocessing.json", {"tabular": self.preprocessor_.to_dict() if self.preprocessor_ else None, "image": image_state})
        if self.schema_ is not None:
            (folder / "schema.toml").write_text(self.schema_.text, encoding="utf-8")
            files.append("schema.toml")
        if self.booster_ is not None:
            self.booster_.save(folder / BOOSTER)
            files.append(BOOSTER)
        else:
            save_state_dict(self.network_.state_dict(), folder / WEIGHTS)
            files.append(WEIGHTS)
        write_manifest(folder, files, __version__)
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, device: str = "cpu") -> "FusionClassifier":
        """Rebuild a model from its folder alone; the files are verified against the
        manifest first and nothing is unpickled.

        Raises
        ------
        FileNotFoundError, ValueError
            Not a model folder, or a file is missing, changed or malformed.
        """
        folder = Path(folder)
        manifest = verify_folder(folder)
        listed = set(manifest["sha256"])
        if manifest.get("fusion_version") != __version__:
            warnings.warn(
                f"{folder} was saved by fusion {manifest.get('fusion_version')}; this is fusion {__version__} "
                f"(same model format {manifest.get('format_version')}): predictions may differ slightly",
                stacklevel=2,
            )
        try:
            meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            prep = json.loads((folder / "preprocessing.json").read_text(encoding="utf-8"))
            config = Config.from_dict(meta["config"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{folder}: unreadable model configuration ({err})") from None
        clf = cls(config)
        clf.classes_ = tuple(meta["classes"])
        clf.modalities_ = tuple(meta["modalities"])
        clf.schema_ = parse_schema((folder / "schema.toml").read_text(encoding="utf-8"), origin=str(folder / "schema.toml")) if "schema.toml" in listed else None
        clf.preprocessor_ = TabularPreprocessor.from_dict(prep["tabular"], clf.schema_) if prep.get("tabular") else None
        clf.image_size_ = prep["image"]["size"] if prep.get("image") else (config.image.image_size if "image" in clf.modalities_ else None)
        clf.network_, clf.booster_, clf.history_, clf._runtime = None, None, {}, None
        if config.model == "xgboost":
            if BOOSTER not in listed:
                raise ValueError(f"{folder}: no {BOOSTER} listed in the manifest")
            clf.booster_ = XGBoostBaseline.load(folder / BOOSTER)
            return clf
        if WEIGHTS not in listed:
            raise ValueError(f"{folder}: no {WEIGHTS} listed in the manifest")
        network = clf._build_network(config)
        state = load_state_dict(folder / WEIGHTS)
        try:
            network.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{folder}: weights do not fit the configured model ({err})") from None
        dev = resolve_device(device)
        clf.network_ = prepare_model(network, dev, resolve_precision(config.train.precision, dev)).eval()
        return clf
