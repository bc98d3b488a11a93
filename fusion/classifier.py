"""``FusionClassifier``: the one estimator users fit, save, load and ask about patients.

It validates input (:mod:`fusion.inputs`), fits the schema-driven tabular preprocessing,
and delegates the model itself to a backend (:mod:`fusion.backends`) chosen by the
configuration; :mod:`fusion.model_folder` writes and reads its folder. It keeps
scikit-learn's contract where it fits: the constructor stores its parameter,
``get_params`` and ``set_params`` (so ``sklearn.base.clone`` works), ``fit`` leaves its
parameter alone and returns ``self``, learned state ends in ``_``, and an unfitted
estimator raises ``NotFittedError``.

``predict`` answers one patient (a record and/or one image) with a
:class:`~fusion.prediction.Prediction`, and many (a table and/or a list of images) with
an array of class names, like scikit-learn's; :mod:`fusion.inputs` says what each form
accepts.

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

import copy
from pathlib import Path

import numpy as np

from fusion.backends import backend_class, backend_name, check_distributed
from fusion.backends.base import Backend, Batch, ModelSpec
from fusion.config import CalibrationConfig, Config
from fusion.data.dataset import Dataset
from fusion.errors import ConfigError
from fusion.evaluation.calibration import Calibration, fit_calibration
from fusion.evaluation.conformal import ConformalSets, answerable, pattern
from fusion.explain import DEFAULT_STEPS, Explanation
from fusion.inputs import Inputs, is_one_patient
from fusion.model_folder import SavedModel, folder_files, read_folder
from fusion.parameters import ConfigParameters
from fusion.persistence import write_folder
from fusion.prediction import Prediction, finite_probabilities
from fusion.preprocessing import TabularPreprocessor
from fusion.version import __version__

# Prediction is defined in fusion.prediction and stays importable from here.
__all__ = ["FusionClassifier", "NotFittedError", "Prediction"]

MAX_STEPS = 10_000


class NotFittedError(ValueError, AttributeError):
    """The estimator was used before ``fit`` or ``load``.

    Like scikit-learn's ``NotFittedError`` it is both a ``ValueError`` and an
    ``AttributeError``, so code that catches either (scikit-learn's checks do) catches
    it; it is defined here so that importing fusion does not import scikit-learn.
    """


class FusionClassifier(ConfigParameters):
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
        The modalities the model uses: those of the configuration, or fewer when
        ``fusion="auto"`` found by inner CV that a modality added nothing (then an
        input of the other is validated and reported ignored).
    schema_ : Schema or None
        The schema of the clinical records (None for image-only data without one).
    preprocessor_ : TabularPreprocessor or None
    image_size_ : int or None
    image_channels_ : int or None
        The channels of the images the model reads: 1 (gray films) or 3 (colour); None
        without the image modality.
    n_features_in_ : int
        Number of record features (schema features) the model reads; 0 without records.
    backend_ : Backend
        The fitted model (:mod:`fusion.backends`).
    history_ : dict
        Training history of the last ``fit``.
    """

    def __init__(self, config: Config | None = None):
        self.config = config

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
        # image.channels follows the training images when unset; image.flip_rotate and
        # image.detail what their schema says of them, read as the train command reads it.
        # (Imported here: the loaders bring pandas, which the prediction path must not load.)
        from fusion.data.loaders import declared_image

        _, flip_rotate, detail = declared_image(None, train.schema)
        cfg = (self.config if self.config is not None else Config()).resolved(train.image_channels, flip_rotate, detail)
        missing = [m for m in cfg.modalities if m not in train.modalities]
        if missing:
            raise ConfigError(
                f"modalities: the training data have no {missing} (they hold {sorted(train.modalities)})",
                field="modalities",
                value=cfg.modalities,
                accepted=f"modalities the training data hold, of {sorted(train.modalities)}",
            )
        if "image" in cfg.modalities and train.image_size != cfg.image.image_size:
            raise ConfigError(
                f"image.image_size is {cfg.image.image_size} but the training images are {train.image_size} px",
                field="image.image_size",
                value=cfg.image.image_size,
                accepted=f"the training images' size, {train.image_size}",
            )
        preprocessor = TabularPreprocessor(train.schema).fit(train.records) if "tabular" in cfg.modalities else None
        self._settle(cfg, tuple(train.classes), cfg.modalities, train.schema, preprocessor)
        check_distributed(cfg)
        backend = backend_class(backend_name(cfg))(self._spec())
        self.backend_ = backend.fit(train, val, verbose=verbose, checkpoint_dir=checkpoint_dir, resume=resume)
        # What was fitted may use fewer modalities than were asked for (auto, when inner
        # CV found one added nothing): the model answers as what it is.
        fitted = self.backend_.spec
        self._settle(cfg, self.classes_, fitted.modalities, train.schema, fitted.preprocessor)
        self.history_ = self.backend_.history_
        self.calibration_ = self._calibrate(train, val)
        return self

    def _calibrate(self, train: Dataset, val: Dataset | None) -> Calibration:
        """Temperature (or vector) scaling and operating points, fitted on ``val``
        (nothing to fit without it: probabilities are then used as they are), and the
        decision rule, whose balanced form estimates its priors on ``val`` (on
        ``train`` when there is no validation split)."""
        cal_cfg, k = self.config_.calibration, len(self.classes_)
        scaled = cal_cfg.enabled and val is not None and len(val) >= 2 * k
        calibration = Calibration()
        if scaled or cal_cfg.decision != "argmax":
            rows = val if val is not None and len(val) > 0 else train
            raw = finite_probabilities(self._raw_proba(Batch.from_dataset(rows, self.modalities_), gather=True))
            if scaled:
                calibration = fit_calibration(rows.labels, raw, self.classes_, cal_cfg, seed=self.config_.train.seed)
            calibration.set_decision(cal_cfg.decision, rows.labels, raw)
        calibration.conformal = self._prediction_sets(calibration, val)
        return calibration

    def _prediction_sets(self, calibration: Calibration, val: Dataset | None) -> ConformalSets | None:
        """Split-conformal prediction sets on the validation patients
        (:mod:`fusion.evaluation.conformal`), one for each combination of inputs the
        model answers from: a fused model's sets for a patient without a film are
        calibrated on the validation rows with their films withheld. None without
        validation rows."""
        if val is None or len(val) == 0:
            return None
        cal_cfg, probabilities = self.config_.calibration, {}
        for used in answerable(self.modalities_):
            raw = finite_probabilities(self._raw_proba(Batch.from_dataset(val, used), gather=True))
            probabilities[pattern(used)] = calibration.apply(raw)
        return ConformalSets.fit(
            val.labels, probabilities, val.groups, coverage=cal_cfg.coverage, method=cal_cfg.conformal
        )

    def recalibrated(self, calibration: CalibrationConfig, train: Dataset, val: Dataset | None) -> FusionClassifier:
        """A copy of this fitted model with its calibration, operating points and
        decision rule fitted again under other ``calibration`` settings (on ``val``, as
        ``fit`` does; ``train`` serves the balanced decision when there is no ``val``):
        no retraining. Its configuration says the new settings; this model is left
        alone.

        Raises
        ------
        ValueError
            A calibration setting out of range (as :meth:`Config.validate`).
        """
        self._fitted_backend()
        other = copy.copy(self)
        other.config_ = self.config_.with_params(calibration=copy.deepcopy(calibration)).validate()
        other.config = other.config_
        other.calibration_ = other._calibrate(train, val)
        return other

    def _settle(
        self, config: Config, classes: tuple[str, ...], modalities: tuple[str, ...], schema, preprocessor
    ) -> None:
        """The learned state every model has, fitted or loaded, but its backend;
        ``modalities`` are those the model uses (``config.modalities``, or fewer for an
        auto model)."""
        self.config_, self.classes_, self.modalities_ = config, classes, modalities
        self.schema_, self.preprocessor_ = schema, preprocessor
        image = "image" in modalities
        self.image_size_ = config.image.image_size if image else None
        # A folder saved before channels existed holds gray films: unset is 1.
        self.image_channels_ = (config.image.channels or 1) if image else None
        self.n_features_in_ = len(schema.features) if preprocessor is not None else 0

    def _spec(self) -> ModelSpec:
        return ModelSpec(
            self.config_,
            self.classes_,
            self.modalities_,
            self.preprocessor_,
            self.image_size_,
            self.image_channels_ or 1,
        )

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

    def _inputs(self) -> Inputs:
        """What this fitted model accepts (:mod:`fusion.inputs`)."""
        self._fitted_backend()
        return Inputs(self.modalities_, self.schema_, self.image_size_, self.image_channels_ or 1)

    def _batch(self, X, images) -> Batch:
        """The validated inputs of one patient or many, inputs of a modality the model
        lacks reported by a ``UserWarning``: what :meth:`predict_proba` and
        :meth:`predict_set` read."""
        inputs = self._inputs()
        if is_one_patient(X, images):
            batch, _, ignored = inputs.one(X, images)
        else:
            batch, ignored = inputs.many(X, images)
        inputs.warn_unused(ignored)
        return batch

    def _probabilities(self, batch: Batch) -> np.ndarray:
        """Calibrated probabilities of a validated batch, refused when not finite."""
        return finite_probabilities(self.calibration_.apply(self.backend_.predict_proba(batch)))

    def predict_proba(self, X=None, images=None) -> np.ndarray:
        """Probabilities for many patients at once, batched.

        Parameters
        ----------
        X : pandas.DataFrame, list of dict, or dict, optional
            Raw records keyed by schema feature names (validated like :meth:`predict`);
            a single dict is one patient.
        images : sequence of image sources, or uint8 array (n, H, W), optional
            Paths, PIL images, arrays or bytes, row-aligned with ``X``; a colour
            model's as (n, H, W, 3).

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
            Records given to an image-only model, or images to a tabular-only one: they
            are validated, then not used (:attr:`Prediction.ignored` says it for one
            patient).
        """
        return self._probabilities(self._batch(X, images))

    def predict(self, X=None, images=None):
        """Classify one patient, or many.

        Parameters
        ----------
        X : dict, pandas.Series, DataFrame or list of dict, optional
            One record (keyed by the schema's feature names; a missing key is a missing
            value) or many.
        images : path, PIL image, array or bytes, or a list of them, optional
            One image (PNG, JPEG or DICOM; any size; gray, RGB or RGBA; 8 or 16 bit) or
            many, row-aligned with ``X``; read as the model reads images, one gray
            channel or three colour ones (a gray image given to a colour model is
            replicated into its three channels).

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

        Notes
        -----
        Either input may be None: a fused model answers from the other one (it was
        trained with modality dropout) and ``Prediction.modalities`` says what it used. An
        input of a modality the model lacks (an image given to a tabular-only model) is
        validated, then not used: ``Prediction.ignored`` names it (many patients: a
        ``UserWarning``).

        The label is the most probable class, or with ``calibration.decision``
        "balanced" the class whose probability most exceeds its prior (see
        :mod:`fusion.evaluation.calibration`).
        """
        if not is_one_patient(X, images):
            proba = self.predict_proba(X, images)
            return np.asarray(self.classes_, dtype=object)[self.calibration_.decide(proba)]
        batch, used, ignored = self._inputs().one(X, images)
        proba = self._probabilities(batch)[0]
        cal = self.calibration_
        sets = cal.conformal if cal.conformal is not None and pattern(used) in cal.conformal.minimum else None
        return Prediction.from_probabilities(
            self.classes_,
            proba,
            cal.thresholds,
            modalities=used,
            ignored=ignored,
            priors=cal.priors or None,
            inside=None if sets is None else sets.contains(proba[None], used)[0],
            coverage=None if sets is None else sets.coverage,
        )

    def predict_set(self, X=None, images=None) -> list[tuple[str, ...]]:
        """The prediction set of each patient: the classes that cannot be ruled out at
        the coverage the model was fitted for (``calibration.coverage``, 0.9 by default;
        :mod:`fusion.evaluation.conformal`). Inputs as :meth:`predict_proba`; a row
        without a known record value, answered from its image, gets the image's set.

        Raises
        ------
        ValueError
            As :meth:`predict`, or the model has no prediction sets (fitted without a
            validation split, or saved before they existed).
        """
        sets = self.calibration_.conformal
        if sets is None:
            raise ValueError(
                "this model has no prediction sets: it was fitted without a validation split (or saved by a "
                "version of fusion before they existed); refit it with a validation split"
            )
        batch = self._batch(X, images)
        proba = self._probabilities(batch)
        inside = np.zeros(proba.shape, dtype=bool)
        for key, rows in _rows_by_inputs(batch, self.modalities_).items():
            inside[rows] = sets.contains(proba[rows], key)
        return [tuple(c for c, kept in zip(self.classes_, row, strict=True) if kept) for row in inside]

    def predict_dataset(
        self, ds: Dataset, *, calibrated: bool = True, gather: bool = False, modalities: tuple[str, ...] | None = None
    ) -> np.ndarray:
        """Probabilities for every row of a loaded dataset, shape (n, n_classes);
        ``calibrated=False``: the model's own, before calibration. ``modalities``: answer
        from these of the model's modalities only (a fused model from the image alone,
        say), as for patients who come without the others.

        ``gather``: under torch.distributed (a network trained with ``torchrun``), each
        process predicts a share of the rows and every process receives them all;
        every process must then make the call. No effect in one process."""
        self._fitted_backend()
        usable = [m for m in self.modalities_ if m in ds.modalities]
        if not usable:
            raise ValueError(f"this model uses {list(self.modalities_)}; the dataset holds {sorted(ds.modalities)}")
        asked = self.modalities_ if modalities is None else tuple(m for m in self.modalities_ if m in modalities)
        if not asked:
            raise ValueError(f"modalities {list(modalities)}: this model uses {list(self.modalities_)}")
        raw = self._raw_proba(Batch.from_dataset(ds, asked), gather=gather)
        return finite_probabilities(self.calibration_.apply(raw) if calibrated else raw)

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
            ``image_attribution`` (H x W; a colour image's channels summed),
            ``tabular_attribution`` (feature -> value),
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
        batch, _, ignored = self._inputs().one(record, image)
        if target is not None and target not in self.classes_:
            raise ValueError(f"target must be one of {list(self.classes_)}; got {target!r}")
        proba = self._probabilities(batch)[0]
        k = int(self.calibration_.decide(proba[None])[0]) if target is None else self.classes_.index(target)
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
        saved = SavedModel(
            self.config_, self.classes_, self.modalities_, self.schema_, self.preprocessor_, self.calibration_
        )
        return folder_files(saved, backend)

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
        saved, name, files = read_folder(folder)
        clf = cls(saved.config)
        clf._settle(saved.config, saved.classes, saved.modalities, saved.schema, saved.preprocessor)
        clf.calibration_ = saved.calibration
        clf.backend_ = backend_class(name).load(clf._spec(), files, device=device)
        clf.history_ = clf.backend_.history_
        return clf


def _rows_by_inputs(batch: Batch, modalities: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The rows of ``batch`` grouped by the inputs they are answered from (a
    :func:`~fusion.evaluation.conformal.pattern`): what the batch gives of the model's
    ``modalities``, less the record of rows whose presence mask switches it off."""
    given = tuple(m for m in modalities if (batch.images if m == "image" else batch.records) is not None)
    n = len(batch)
    if batch.presence is None or "tabular" not in given:
        return {pattern(given): np.arange(n)}
    has_record = batch.presence[:, modalities.index("tabular")] > 0
    groups = {pattern(given): np.flatnonzero(has_record), pattern(("image",)): np.flatnonzero(~has_record)}
    return {key: rows for key, rows in groups.items() if len(rows)}
