"""``FusionClassifier``: the one estimator users fit, save, load and ask about patients.

It validates input (records against the schema, images through one decoder), fits the
schema-driven tabular preprocessing, and delegates the model itself to a backend
(:mod:`fusion.backends`) chosen by the configuration: the network (joint late fusion,
and every single-modality network) or the XGBoost booster. It keeps scikit-learn's
contract where it fits: the constructor stores its parameter, ``get_params`` and
``set_params`` (so ``sklearn.base.clone`` works), ``fit`` leaves its parameter alone and
returns ``self``, learned state ends in ``_``, and an unfitted estimator raises
``NotFittedError``.

Two forms of ``predict`` coexist:

- one patient: ``predict(record, image)`` with a dict (or Series, or None) and one
  image (or None) returns a :class:`Prediction`, the design card's call;
- many patients: ``predict(table, images)`` with a DataFrame or a list of records
  and/or a list (or stacked array) of images returns an array of class names, like
  scikit-learn's ``predict``; ``predict_proba`` takes the same inputs.

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

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusion import checks
from fusion.backends import backend_class, backend_name
from fusion.backends.base import Backend, Batch, ModelSpec
from fusion.checks import Where
from fusion.config import MAX_IMAGE_SIZE, Config, parse_modalities
from fusion.data.dataset import Dataset
from fusion.data.images import MIN_SIDE, load_image
from fusion.evaluation.calibration import Calibration, calibration_report
from fusion.explain import DEFAULT_STEPS, Explanation
from fusion.persistence import MANIFEST, ModelFiles, json_bytes, verify_folder, write_folder
from fusion.preprocessing import TabularPreprocessor
from fusion.schema import is_missing, parse_schema, records_frame
from fusion.version import __version__

MAX_STEPS = 10_000
CALIBRATION = "calibration.json"
# What a user gives for each modality, as warnings name it.
_GIVEN = {"image": "image(s)", "tabular": "record(s)"}


def _check_distributed(cfg: Config) -> None:
    """Under torch.distributed only the joint network trains: XGBoost, the stacking
    combiners and the other scikit-learn steps are single-process, and N copies of
    them would only repeat the same work and race on the same files."""
    from fusion.training import distributed

    name = backend_name(cfg)
    if name != "network" and distributed.world_size() > 1:
        raise ValueError(
            f"model {cfg.model!r} with fusion {cfg.fusion!r} (backend {name!r}) trains in one process only, "
            f"but this job has {distributed.world_size()} processes (WORLD_SIZE); distributed training "
            "serves the network: model 'fusion' with fusion 'joint'. Run other strategies without torchrun."
        )


class NotFittedError(ValueError, AttributeError):
    """The estimator was used before ``fit`` or ``load``.

    Like scikit-learn's ``NotFittedError`` it is both a ``ValueError`` and an
    ``AttributeError``, so code that catches either (scikit-learn's checks do) catches
    it; it is defined here so that importing fusion does not import scikit-learn.
    """


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
    above_threshold : tuple of str
        The disease classes whose probability reaches their operating point (the
        threshold that kept validation sensitivity at its target, see
        :mod:`fusion.evaluation.calibration`): classes not to rule out.
    ignored : tuple of str
        Inputs that were given but that the model has no modality for ("image" given
        to a record-only model, "tabular" to an image-only one): validated like any
        other input, then not used.
    """

    label: str
    probabilities: dict[str, float]
    modalities: tuple[str, ...] = field(default_factory=tuple)
    above_threshold: tuple[str, ...] = field(default_factory=tuple)
    ignored: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        probs = ", ".join(f"{c} {p:.3f}" for c, p in self.probabilities.items())
        flagged = f"; above operating point: {', '.join(self.above_threshold)}" if self.above_threshold else ""
        ignored = f"; {' and '.join(self.ignored)} ignored (not a modality of this model)" if self.ignored else ""
        return f"{self.label} ({probs}; from {' + '.join(self.modalities)}{flagged}{ignored})"


def _is_single_image(image: Any) -> bool:
    """One image rather than a batch of them: anything but a list, tuple or array of
    images. A 3-D array is one image when its last axis holds colour channels (1, 3 or
    4: no film is under 8 px a side), a batch of 2-D images otherwise."""
    if isinstance(image, (list, tuple)):
        return False
    if isinstance(image, np.ndarray):
        return image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 3, 4))
    return True


def _is_one_patient(X: Any, images: Any) -> bool:
    """The one-patient form: a record that is not a table (a dict, a Series, or a value
    of the wrong type, which then fails as a record), or no record and one image."""
    if X is not None:
        return not (_is_frame(X) or isinstance(X, (list, tuple)))
    return images is None or _is_single_image(images)


def _is_frame(value: Any) -> bool:
    import sys

    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _check_image(image: Any) -> None:
    """Decode an image that the model will not use, so that what is refused where
    images are used (garbage bytes, a missing file, a bomb) is refused here too rather
    than passed over unseen; the pixels are dropped."""
    load_image(image, MIN_SIDE)


def _finite_probabilities(proba: np.ndarray) -> np.ndarray:
    """``proba`` when every value is finite; else no label is given from it.

    Raises
    ------
    ValueError
        Naming the first row at fault.
    """
    proba = np.asarray(proba)
    bad = np.flatnonzero(~np.isfinite(proba.reshape(len(proba), -1)).all(axis=1))
    if len(bad):
        more = f" and {len(bad) - 1} more of {len(proba)}" if len(bad) > 1 else ""
        raise ValueError(
            f"the model's probabilities are not finite (NaN or infinity) for row {int(bad[0])}{more}: its weights "
            "or calibration are broken (a training that diverged?) or an input drove it out of range; "
            "no label is given from them"
        )
    return proba


class FusionClassifier:
    """Late-fusion classifier of chest X-rays and clinical records.

    Parameters
    ----------
    config : Config, optional
        Model and training settings; defaults to a fused image + tabular network.

    Attributes
    ----------
    config_ : Config
        The validated configuration the model was fitted (or saved) with.
    classes_ : tuple of str
    modalities_ : tuple of str
        The modalities the model was trained on.
    schema_ : Schema or None
        The schema of the clinical records (None for image-only data without one).
    preprocessor_ : TabularPreprocessor or None
    image_size_ : int or None
    n_features_in_ : int
        Number of record features (schema features) the model reads; 0 without records.
    backend_ : Backend
        The fitted model (:mod:`fusion.backends`).
    history_ : dict
        Training history of the last ``fit``.
    """

    def __init__(self, config: Config | None = None):
        self.config = config

    # ------------------------------------------------------ scikit-learn params
    def get_params(self, deep: bool = True) -> dict:
        """``config``; with ``deep`` also its sections and settings by scikit-learn's
        nested names (``config__train__lr``), which ``GridSearchCV`` tunes."""
        params = {"config": self.config}
        if deep and (self.config is None or isinstance(self.config, Config)):
            nested = (self.config if self.config is not None else Config()).params()
            params.update({f"config__{name}": value for name, value in nested.items()})
        return params

    def set_params(self, **params) -> FusionClassifier:
        """Set ``config``, or its settings by nested name (``config__train__lr=1e-3``)
        in a copy of it (:meth:`Config.with_params`): the Config given is never
        changed. ``fit`` checks the values, as scikit-learn expects."""
        unknown = sorted(k for k in params if k != "config" and not k.startswith("config__"))
        if unknown:
            raise ValueError(f"FusionClassifier has no parameter(s) {unknown}; it has 'config' and 'config__<setting>'")
        if "config" in params:
            self.config = params["config"]
        nested = {k.removeprefix("config__"): v for k, v in params.items() if k != "config"}
        if nested:
            base = self.config if self.config is not None else Config()
            if not isinstance(base, Config):
                raise TypeError(f"config must be a Config to set {sorted(nested)}; got {base!r:.60}")
            self.config = base.with_params(**nested)
        return self

    def __sklearn_tags__(self):
        """scikit-learn's description, which ``GridSearchCV`` asks for: a classifier
        whose labels come with its data (a Dataset), not as ``y``."""
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags("classifier", TargetTags(required=False), classifier_tags=ClassifierTags())

    def __repr__(self) -> str:
        return f"FusionClassifier(config={self.config!r})" if self.config is not None else "FusionClassifier()"

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        train: Dataset,
        val: Dataset | None = None,
        *,
        verbose: bool = False,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
    ) -> FusionClassifier:
        """Train on ``train``; ``val`` drives early stopping.

        Parameters
        ----------
        train, val : Dataset
        verbose : bool
            A progress bar while training (per-epoch lines go to the ``fusion`` logger).
        checkpoint_dir : str or Path, optional
            Save the full training state there after every epoch (networks).
        resume : bool
            Continue from the checkpoint in ``checkpoint_dir``; refused when it was made
            with another configuration or other data.

        Raises
        ------
        ValueError
            When the data lack a modality the configuration asks for (naming the
            ``modalities`` field), or a checkpoint does not match.
        """
        cfg = (self.config if self.config is not None else Config()).resolved()
        missing = [m for m in cfg.modalities if m not in train.modalities]
        if missing:
            raise ValueError(f"modalities: the training data have no {missing} (they hold {sorted(train.modalities)})")
        if "image" in cfg.modalities and train.image_size != cfg.image.image_size:
            raise ValueError(
                f"image.image_size is {cfg.image.image_size} but the training images are {train.image_size} px"
            )
        self.config_ = cfg
        self.classes_ = tuple(train.classes)
        self.modalities_ = cfg.modalities
        self.schema_ = train.schema
        self.image_size_ = cfg.image.image_size if "image" in cfg.modalities else None
        self.preprocessor_ = (
            TabularPreprocessor(train.schema).fit(train.records) if "tabular" in cfg.modalities else None
        )
        self.n_features_in_ = len(self.schema_.features) if self.preprocessor_ is not None else 0
        _check_distributed(cfg)
        backend = backend_class(backend_name(cfg))(self._spec())
        self.backend_ = backend.fit(train, val, verbose=verbose, checkpoint_dir=checkpoint_dir, resume=resume)
        self.history_ = self.backend_.history_
        self.calibration_ = self._calibrate(val)
        return self

    def _calibrate(self, val: Dataset | None) -> Calibration:
        """Temperature (or vector) scaling and operating points, fitted on ``val``
        (nothing to fit without it: probabilities are then used as they are)."""
        cal_cfg = self.config_.calibration
        if not cal_cfg.enabled or val is None or len(val) < 2 * len(self.classes_):
            return Calibration()
        raw = _finite_probabilities(self._raw_proba(Batch.from_dataset(val, self.modalities_), gather=True))
        calibration = Calibration.fit(val.labels, raw, seed=self.config_.train.seed)
        disease = [c for c in self.classes_ if c not in cal_cfg.healthy]
        calibration.set_operating_points(val.labels, raw, self.classes_, disease, cal_cfg.target_sensitivity)
        calibration.report = {"val": calibration_report(val.labels, raw, calibration.apply(raw))}
        return calibration

    def _spec(self) -> ModelSpec:
        return ModelSpec(self.config_, self.classes_, self.modalities_, self.preprocessor_, self.image_size_)

    @property
    def network_(self):
        """The fitted torch network, for backends that have one (else None)."""
        return getattr(self._fitted_backend(), "network_", None)

    # --------------------------------------------------------------- inference
    def _fitted_backend(self) -> Backend:
        backend = self.__dict__.get("backend_")
        if backend is None:
            raise NotFittedError("this FusionClassifier is not fitted: call fit() or FusionClassifier.load(run_dir)")
        return backend

    def _check_inputs(self, has_record: bool, has_image: bool) -> None:
        given = {"tabular": has_record, "image": has_image}
        if not any(given[m] for m in self.modalities_):
            names = {"tabular": "a record", "image": "an image"}
            raise ValueError(
                f"this model was trained on {list(self.modalities_)} and needs "
                f"{' or '.join(names[m] for m in self.modalities_)}; none was given"
            )

    @staticmethod
    def _has_value(values: Mapping[str, Any]) -> bool:
        return any(not is_missing(v) for v in values.values())

    def _record_values(self, record) -> dict[str, Any]:
        """One record validated against the schema, whether or not the model reads
        records (one it does not read is refused when bad, or reported unused, never
        dropped unseen); a model without a schema can only check it is a record."""
        if self.schema_ is not None:
            return self.schema_.validate_record(record)
        if hasattr(record, "to_dict") and not isinstance(record, Mapping):  # a pandas Series
            record = record.to_dict()
        if not isinstance(record, Mapping):
            raise TypeError(
                f"record must be a dict or pandas Series keyed by feature name; got {type(record).__name__}"
            )
        return dict(record)

    def _unused(self, record_given: bool, image_given: bool) -> tuple[str, ...]:
        """The modalities given that this model has none of."""
        given = {"image": image_given, "tabular": record_given}
        return tuple(m for m in ("image", "tabular") if given[m] and m not in self.modalities_)

    def _warn_unused(self, ignored: tuple[str, ...]) -> None:
        """Answers without a :class:`Prediction` to carry ``ignored`` say it this way."""
        for m in ignored:
            warnings.warn(
                f"{_GIVEN[m]} not used: this model has no {m} modality (it uses {list(self.modalities_)})",
                UserWarning,
                stacklevel=3,
            )

    def _one(self, record, image) -> tuple[Batch, tuple[str, ...], tuple[str, ...]]:
        """One patient's inputs, validated: a batch of one, the modalities used and
        those given but not the model's (:attr:`Prediction.ignored`).

        The record is prepared before the image is decoded: whatever runs after a
        decode finds the caches full of pixels, so only the network should.
        """
        self._fitted_backend()
        values = self._record_values(record) if record is not None else None
        # A record without one known value says nothing: it is a missing modality, not a
        # record of imputed averages (which would claim a patient with average values).
        has_record = values is not None and self._has_value(values)
        use_record = has_record and "tabular" in self.modalities_
        use_image = image is not None and "image" in self.modalities_
        self._check_inputs(use_record, use_image)
        records = {n: [values[n]] for n in self.schema_.feature_names} if use_record else None
        pixels = load_image(image, self.image_size_)[None] if use_image else None
        if image is not None and not use_image:
            _check_image(image)
        used = tuple(m for m, on in (("image", use_image), ("tabular", use_record)) if on)
        return Batch(images=pixels, records=records), used, self._unused(has_record, image is not None)

    def _table_values(self, table) -> list[dict[str, Any]]:
        """Every row of a table (a DataFrame or a list of records), validated."""
        if _is_frame(table):
            rows = table.to_dict("records")
        elif isinstance(table, Iterable) and not isinstance(table, (str, bytes, Mapping)):
            rows = list(table)
        else:
            raise TypeError(f"table must be a DataFrame or a list of dicts; got {type(table).__name__}")
        values = []
        for i, row in enumerate(rows):
            try:
                values.append(self._record_values(row if row is not None else {}))
            except ValueError as err:
                raise ValueError(f"record {i}: {err}") from None
        return values

    def _many(self, table, images) -> tuple[Batch, tuple[str, ...]]:
        """Many patients' inputs, validated, and the modalities given but not the
        model's; rows whose record holds no known value answer from their image (the
        presence mask switches the record off for them)."""
        self._fitted_backend()
        records = has_record = None
        values = self._table_values(table) if table is not None else None
        if values is not None:
            has_record = np.array([self._has_value(v) for v in values], dtype=bool)
            if has_record.any() and "tabular" in self.modalities_:
                records = records_frame(self.schema_, {n: [v[n] for v in values] for n in self.schema_.feature_names})
        pixels = None
        if images is not None:
            images = images if isinstance(images, np.ndarray) else list(images)
            if "image" not in self.modalities_:
                for img in images:
                    _check_image(img)
            elif len(images):
                pixels = np.stack([load_image(img, self.image_size_) for img in images])
        self._check_inputs(records is not None, pixels is not None)
        if values is not None and images is not None and len(values) != len(images):
            raise ValueError(f"table has {len(values)} rows but {len(images)} images were given")
        presence = None
        if records is not None and not has_record.all():
            if pixels is None:
                raise ValueError(
                    f"record {int(np.flatnonzero(~has_record)[0])} has no known value "
                    "and there is no image to answer from"
                )
            presence = np.ones((len(pixels), len(self.modalities_)), dtype=np.float32)
            presence[~has_record, self.modalities_.index("tabular")] = 0.0
        ignored = self._unused(has_record is not None and has_record.any(), images is not None and len(images) > 0)
        return Batch(images=pixels, records=records, presence=presence), ignored

    def _probabilities(self, batch: Batch) -> np.ndarray:
        """Calibrated probabilities of a validated batch, refused when not finite."""
        return _finite_probabilities(self.calibration_.apply(self.backend_.predict_proba(batch)))

    def predict_proba(self, X=None, images=None) -> np.ndarray:
        """Probabilities for many patients at once, batched.

        Parameters
        ----------
        X : pandas.DataFrame, list of dict, or dict, optional
            Raw records keyed by schema feature names (validated like :meth:`predict`);
            a single dict is one patient.
        images : sequence of image sources, or uint8 array (n, H, W), optional
            Paths, PIL images, arrays or bytes, row-aligned with ``X``.

        Returns
        -------
        numpy.ndarray, shape (n, n_classes)

        Raises
        ------
        ValueError
            As :meth:`predict`.

        Warns
        -----
        UserWarning
            Records given to an image-only model, or images to a record-only one: they
            are validated, then not used (:attr:`Prediction.ignored` says it for one
            patient).
        """
        if _is_one_patient(X, images):
            batch, _, ignored = self._one(X, images)
        else:
            batch, ignored = self._many(X, images)
        self._warn_unused(ignored)
        return self._probabilities(batch)

    def predict(self, X=None, images=None):
        """Classify one patient, or many.

        Parameters
        ----------
        X : dict, pandas.Series, DataFrame or list of dict, optional
            One record (keyed by the schema's feature names; a missing key is a missing
            value) or many.
        images : path, PIL image, array or bytes, or a list of them, optional
            One image (PNG, JPEG or DICOM; any size; gray, RGB or RGBA; 8 or 16 bit) or
            many, row-aligned with ``X``.

        Either may be None: a fused model answers from the other one (it was trained
        with modality dropout) and ``Prediction.modalities`` says what it used. An
        input of a modality the model lacks (an image given to a record-only model) is
        validated, then not used: ``Prediction.ignored`` names it (many patients: a
        ``UserWarning``).

        Returns
        -------
        Prediction
            For one patient (a dict or Series and/or one image).
        numpy.ndarray of str
            The predicted class of each row, for many patients.

        Raises
        ------
        TypeError
            A record that is not a mapping, an image of an unsupported type.
        ValueError
            A record value fails the schema (naming the field, the value and what is
            accepted), an unknown field, an unreadable image (naming it), no input
            the model can use, or probabilities that are not finite (a model whose
            weights diverged: no label is given from NaN).
        """
        if not _is_one_patient(X, images):
            proba = self.predict_proba(X, images)
            return np.asarray(self.classes_, dtype=object)[proba.argmax(axis=1)]
        batch, used, ignored = self._one(X, images)
        proba = self._probabilities(batch)[0]
        probabilities = {c: float(p) for c, p in zip(self.classes_, proba, strict=True)}
        thresholds = self.calibration_.thresholds
        above = tuple(c for c in self.classes_ if c in thresholds and probabilities[c] >= thresholds[c])
        label = self.classes_[int(np.argmax(proba))]
        return Prediction(label, probabilities, modalities=used, above_threshold=above, ignored=ignored)

    def predict_dataset(self, ds: Dataset, *, calibrated: bool = True, gather: bool = False) -> np.ndarray:
        """Probabilities for every row of a loaded dataset, shape (n, n_classes);
        ``calibrated=False``: the model's own, before calibration.

        ``gather``: under torch.distributed (a network trained with ``torchrun``), each
        process predicts a share of the rows and every process receives them all;
        every process must then make the call. No effect in one process."""
        self._fitted_backend()
        usable = [m for m in self.modalities_ if m in ds.modalities]
        if not usable:
            raise ValueError(f"this model uses {list(self.modalities_)}; the dataset holds {sorted(ds.modalities)}")
        raw = self._raw_proba(Batch.from_dataset(ds, self.modalities_), gather=gather)
        return _finite_probabilities(self.calibration_.apply(raw) if calibrated else raw)

    def _raw_proba(self, batch: Batch, *, gather: bool) -> np.ndarray:
        """The backend's probabilities; gathered from every process when asked and a
        process group is up (only the network backend trains under one)."""
        from fusion.training import distributed

        if gather and distributed.is_distributed():
            return self.backend_.predict_proba(batch, gather=True)
        return self.backend_.predict_proba(batch)

    def explain(
        self, record=None, image=None, *, target: str | None = None, n_steps: int = DEFAULT_STEPS
    ) -> Explanation:
        """Explain one prediction over both modalities (see :mod:`fusion.explain`).

        Parameters
        ----------
        record, image
            As for :meth:`predict` (one patient); either may be None.
        target : str, optional
            The class to explain; default the predicted one.
        n_steps : int
            Integrated Gradients steps, 1 to 10,000.

        Returns
        -------
        Explanation
            ``image_attribution`` (H x W), ``tabular_attribution`` (feature -> value),
            ``modality_share`` (sums to 1), ``target``, ``probability``, ``ignored`` (as
            :attr:`Prediction.ignored`); ``save(path)`` writes a PNG.

        Raises
        ------
        ValueError
            As :meth:`predict`.
        """
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)):
            raise TypeError(f"n_steps must be an integer; got {type(n_steps).__name__}")
        if not 1 <= n_steps <= MAX_STEPS:
            raise ValueError(f"n_steps must be between 1 and {MAX_STEPS}; got {n_steps}")
        batch, _, ignored = self._one(record, image)
        if target is not None and target not in self.classes_:
            raise ValueError(f"target must be one of {list(self.classes_)}; got {target!r}")
        proba = self._probabilities(batch)[0]
        k = int(np.argmax(proba)) if target is None else self.classes_.index(target)
        explanation = self.backend_.explain(batch, k, n_steps=n_steps)
        # The probabilities the user is given are the calibrated ones; attributions and
        # shares stay in the model's own terms (calibration rescales, never reorders).
        explanation.probabilities = dict(zip(self.classes_, map(float, proba), strict=True))
        explanation.probability = float(proba[k])
        explanation.ignored = ignored
        return explanation

    # ------------------------------------------------------------- persistence
    def model_files(self) -> dict[str, bytes]:
        """The model folder's files, name -> content (no pickle): what :meth:`save`
        writes, less the manifest (which hashes these bytes)."""
        backend = self._fitted_backend()
        meta = {
            "fusion_version": __version__,
            "backend": backend.name,
            "classes": list(self.classes_),
            "modalities": list(self.modalities_),
            "config": self.config_.to_dict(),
        }
        tabular = self.preprocessor_.to_dict() if self.preprocessor_ else None
        files = {
            CONFIG: json_bytes(meta),
            PREPROCESSING: json_bytes({"tabular": tabular, "image": backend.image_state}),
            CALIBRATION: json_bytes(self.calibration_.to_dict()),
        }
        if self.schema_ is not None:
            files[SCHEMA] = self.schema_.text.encode("utf-8")
        return {**files, **backend.save()}

    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model folder (see :mod:`fusion.persistence`); returns its path.

        The folder is written whole: into a new hidden folder beside it, then swapped
        in, so an interrupted save leaves the old folder or the new one, never a mix.

        Parameters
        ----------
        folder : str or Path
            A new or empty folder (made, with its parents, if need be).
        overwrite : bool
            Replace the model folder at ``folder`` as a whole: every file in it goes
            (the old model's metrics and card too). A folder that is not a model
            folder (no ``manifest.json``) is never replaced.

        Raises
        ------
        ValueError
            ``folder`` is not empty and ``overwrite`` is False, or it is not a model
            folder; ``folder`` is a file, a FIFO, a symlink loop.
        """
        return write_folder(folder, self.model_files(), __version__, overwrite=overwrite)

    @classmethod
    def load(cls, folder: str | Path, *, device: str = "cpu") -> FusionClassifier:
        """Rebuild a model from its folder alone; nothing is unpickled.

        Each file the manifest lists is read once and checked against its SHA-256, and
        what is parsed is those very bytes. Every file the model needs must be listed
        (and no file of another model may lie in the folder); every value is checked
        (types, ranges, unique classes, known modalities, a positive temperature)
        before anything is built from it.

        Raises
        ------
        FileNotFoundError
            No folder, or no manifest.
        ValueError
            Not a folder (a file, a FIFO, a symlink loop); a file missing, unlisted,
            changed or malformed; a value out of range: naming the file and the key.
        """
        files = verify_folder(folder)
        _warn_if_other_version(files)
        config, classes, modalities, name = _read_config(files)
        backend = backend_class(name)
        _check_listing(files, backend.files(modalities), modalities, name)
        clf = cls(config)
        clf.config_, clf.classes_, clf.modalities_ = config, classes, modalities
        clf.schema_ = parse_schema(files.text(SCHEMA), origin=files.origin(SCHEMA)) if SCHEMA in files else None
        clf.preprocessor_ = _read_preprocessing(files, config, clf.schema_)
        clf.n_features_in_ = len(clf.schema_.features) if clf.preprocessor_ is not None else 0
        clf.image_size_ = config.image.image_size if "image" in modalities else None
        where = Where(files.origin(CALIBRATION))
        clf.calibration_ = Calibration.from_dict(files.json(CALIBRATION), classes, where=where)
        clf.backend_ = backend.load(clf._spec(), files, device=device)
        clf.history_ = clf.backend_.history_
        return clf


# ------------------------------------------------------------------ model folders
CONFIG = "config.json"
PREPROCESSING = "preprocessing.json"
SCHEMA = "schema.toml"


def _warn_if_other_version(files: ModelFiles) -> None:
    saved = files.manifest["fusion_version"]
    if saved != __version__:
        warnings.warn(
            f"{files.folder} was saved by fusion {saved}; this is fusion {__version__} "
            f"(same model format {files.manifest['format_version']}): predictions may differ slightly",
            stacklevel=3,
        )


def _read_config(files: ModelFiles) -> tuple[Config, tuple[str, ...], tuple[str, ...], str]:
    """``config.json``, checked: the configuration, classes, modalities and backend."""
    from fusion.backends import BACKENDS
    from fusion.backends.auto import CANDIDATES

    where = Where(files.origin(CONFIG))
    meta = checks.keys(
        files.json(CONFIG), where, required=("fusion_version", "backend", "classes", "modalities", "config")
    )
    checks.text(meta["fusion_version"], where / "fusion_version")
    classes = checks.texts(meta["classes"], where / "classes", unique=True, min_length=2)
    config = Config.from_dict(meta["config"], where=where / "config").resolved()
    try:
        modalities = parse_modalities(list(checks.texts(meta["modalities"], where / "modalities")))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    if modalities != config.modalities:
        raise ValueError(
            f"{where / 'modalities'} {list(modalities)} differ from config.modalities {list(config.modalities)}"
        )
    name = checks.text(meta["backend"], where / "backend", choices=sorted(BACKENDS))
    expected = CANDIDATES if config.fusion == "auto" else (backend_name(config),)
    if name not in expected:
        raise ValueError(
            f"{where / 'backend'} is {name!r}, but config.model {config.model!r} with config.fusion "
            f"{config.fusion!r} is trained by {' or '.join(map(repr, expected))}"
        )
    return config, classes, modalities, name


def _model_file_names() -> frozenset[str]:
    """Every name a file of a model folder can have, whatever the model."""
    from fusion.backends import BACKENDS

    names = {CONFIG, PREPROCESSING, CALIBRATION, SCHEMA}
    for name in BACKENDS:
        backend = backend_class(name)
        if hasattr(backend, "files"):  # auto saves the backend it chose, never itself
            for modalities in (("image",), ("tabular",), ("image", "tabular")):
                names.update(backend.files(modalities))
    return frozenset(names)


def _check_listing(files: ModelFiles, backend_files: tuple[str, ...], modalities: tuple[str, ...], name: str) -> None:
    """Every file the model needs is listed; no file of a model lies in the folder
    unlisted (an unlisted calibration.json would be silently skipped, a stale file of
    another model would describe a model the folder does not hold)."""
    needed = {CONFIG, PREPROCESSING, CALIBRATION, *backend_files, *([SCHEMA] if "tabular" in modalities else [])}
    every = _model_file_names()
    stray = sorted((files.present & every) - files.listed)
    if stray:
        raise ValueError(
            f"{files.folder}: holds {stray[0]}, which {MANIFEST} does not list (a file of another model, or one "
            "added after saving): refusing to load the folder"
        )
    missing = sorted(needed - files.listed)
    if missing:
        raise ValueError(f"{files.folder}: {MANIFEST} does not list {missing[0]}, which this {name} model needs")
    unused = sorted((files.listed & every) - needed - {SCHEMA})
    if unused:
        raise ValueError(f"{files.folder}: {MANIFEST} lists {unused[0]}, which a {name} model does not use")


def _read_preprocessing(files: ModelFiles, config: Config, schema) -> TabularPreprocessor | None:
    """``preprocessing.json``, checked: the record's preprocessing (None without the
    tabular modality) and the image state (size, normalisation) of an image model."""
    where = Where(files.origin(PREPROCESSING))
    state = checks.keys(files.json(PREPROCESSING), where, required=("tabular", "image"))
    for modality in ("tabular", "image"):
        if modality not in config.modalities and state[modality] is not None:
            raise ValueError(f"{where / modality} must be null: the model has no {modality} modality")
    if "image" in config.modalities:
        _check_image_state(state["image"], where / "image", config.image.image_size)
    if "tabular" not in config.modalities:
        return None
    return TabularPreprocessor.from_dict(state["tabular"], schema, where=where / "tabular")


def _check_image_state(state, where: Where, size: int) -> None:
    """The image preprocessing consumers outside Python follow: the model's size, a
    finite mean, a positive std, one channel."""
    state = checks.keys(state, where, required=("size", "mean", "std", "channels"), optional=("resize",))
    saved = checks.integer(state["size"], where / "size", low=16, high=MAX_IMAGE_SIZE)
    if saved != size:
        raise ValueError(f"{where / 'size'} {saved} differs from config.json's config.image.image_size {size}")
    checks.number(state["mean"], where / "mean")
    checks.number(state["std"], where / "std", low=0, low_open=True)
    checks.integer(state["channels"], where / "channels", low=1, high=1)
    if "resize" in state:
        checks.text(state["resize"], where / "resize")
