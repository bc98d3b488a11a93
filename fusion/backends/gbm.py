"""The gbm backend: gradient boosting over a frozen image embedding and the record.

As HAIM does (Soenksen et al., npj Digit Med 2022): a pretrained image backbone, kept
frozen, turns each film into an embedding; XGBoost learns from the embedding's columns
and the record's columns side by side. Nothing of the image network is trained, which
is what a few hundred films can afford. The booster's depth, learning rate, minimum
child weight and number of rounds are chosen by patient-grouped inner cross-validation
on the training part.

A missing modality is a row of missing values in its columns: the final booster also
sees each training row once with its image columns missing and once with its record
columns missing (at a quarter of the weight), the boosting counterpart of the network's
modality dropout, so that it has learned where missing values go.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fusion import checks
from fusion.backends.base import Batch, ModelSpec
from fusion.backends.members import FrozenEmbedder, fit_xgb, load_booster, tune_xgb, xgb_proba
from fusion.checks import Where
from fusion.data.dataset import Dataset
from fusion.explain import (
    DEFAULT_STEPS,
    Explanation,
    embedding_attribution,
    log_odds,
    modality_shares,
    sum_by_source,
)

if TYPE_CHECKING:
    from fusion.persistence import ModelFiles

BOOSTER = "gbm.json"
STATE = "gbm_state.json"
DROPPED_WEIGHT = 0.25


class GBMBackend:
    """XGBoost over [frozen image embedding, record].

    Attributes
    ----------
    embedder_ : FrozenEmbedder or None
    booster_ : xgboost.Booster
    history_ : dict
        The tuned parameters, rounds and every candidate's inner-CV macro AUROC.
    """

    name = "gbm"
    distributed = False
    exportable = False
    portable_file = None

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    # ----------------------------------------------------------------- columns
    def _columns(self, batch: Batch) -> np.ndarray:
        """The booster's input: embedding columns, then the record's raw columns; a
        missing modality (absent, or switched off for a row) is NaN."""
        n = len(batch)
        blocks = []
        if "image" in self.spec.modalities:
            width = self.embedder_.output_dim
            emb = self.embedder_.transform(batch.images) if batch.images is not None else np.full((n, width), np.nan)
            blocks.append(self._mask(emb.astype(np.float32), batch, "image"))
        if "tabular" in self.spec.modalities:
            width = len(self.tabular_columns_)
            raw = self.spec.preprocessor.transform_raw(batch.records)[0] if batch.records is not None else None
            rec = raw if raw is not None else np.full((n, width), np.nan, np.float32)
            blocks.append(self._mask(rec.astype(np.float32), batch, "tabular"))
        return np.concatenate(blocks, axis=1)

    def _mask(self, block: np.ndarray, batch: Batch, modality: str) -> np.ndarray:
        if batch.presence is None:
            return block
        off = batch.presence[:, self.spec.modalities.index(modality)] == 0
        block = block.copy()
        block[off] = np.nan
        return block

    @property
    def _n_image_columns(self) -> int:
        return self.embedder_.output_dim if self.embedder_ is not None else 0

    # ----------------------------------------------------------------- fitting
    def fit(self, train: Dataset, val: Dataset | None, *, verbose: bool = False, checkpoint_dir=None, resume=False):
        """Tune and fit on the training part; ``val`` is not used for fitting (its
        figures stay held out) and checkpoints do not apply."""
        cfg = self.spec.config
        self.embedder_ = None
        if "image" in self.spec.modalities:
            self.embedder_ = FrozenEmbedder(
                cfg.image.backbone,
                cfg.starting_weights,
                self.spec.image_size,
                self.spec.image_channels,
                cfg.image.detail,
            )
            self.embedder_.fit(train.images)
        if "tabular" in self.spec.modalities:
            self.tabular_columns_ = self.spec.preprocessor.raw_columns()
        batch = Batch.from_dataset(train, self.spec.modalities)
        X, y = self._columns(batch), train.labels
        self.embedding_mean_ = X[:, : self._n_image_columns].mean(axis=0)
        k = len(self.spec.classes)
        params, rounds, scores = tune_xgb(X, y, train.groups, k, cfg.train.seed, cfg.tuning)
        weights = np.ones(len(y))
        if len(self.spec.modalities) > 1:
            # Each row again without its image, and again without its record.
            n_img = self._n_image_columns
            no_image, no_record = X.copy(), X.copy()
            no_image[:, :n_img] = np.nan
            no_record[:, n_img:] = np.nan
            X = np.concatenate([X, no_image, no_record])
            y = np.concatenate([y, y, y])
            weights = np.concatenate([weights, np.full(2 * len(train), DROPPED_WEIGHT)])
        self.booster_ = fit_xgb(X, y, k, params, cfg.train.seed, rounds, row_weights=weights)
        self.history_ = {"params": params, "rounds": rounds, "inner_cv_macro_auroc": scores}
        return self

    def _state(self) -> dict:
        return {
            "params": self.history_.get("params"),
            "rounds": self.history_.get("rounds"),
            "embedding_mean": self.embedding_mean_.tolist(),
        }

    # --------------------------------------------------------------- inference
    def predict_proba(self, batch: Batch) -> np.ndarray:
        return xgb_proba(self.booster_, self._columns(batch), len(self.spec.classes))

    def explain(self, batch: Batch, target: int | None, *, n_steps: int = DEFAULT_STEPS) -> Explanation:
        """Tree SHAP over the booster's columns: the record's columns summed onto their
        features, the embedding's columns summed as the image's evidence; the pixel map
        is Integrated Gradients of the embedding read through the SHAP values per unit
        of embedding change (a linear stand-in for the trees, exact in its total)."""
        import torch
        import xgboost as xgb

        X = self._columns(batch)
        proba = xgb_proba(self.booster_, X, len(self.spec.classes))[0]
        k = int(np.argmax(proba)) if target is None else target
        contrib = self.booster_.predict(xgb.DMatrix(X, missing=np.nan), pred_contribs=True)
        contrib = np.asarray(contrib).reshape(len(X), len(self.spec.classes), X.shape[1] + 1)[0, k, :-1]
        n_img = self._n_image_columns
        tabular = None
        if "tabular" in self.spec.modalities and batch.records is not None:
            pre = self.spec.preprocessor
            tabular = sum_by_source(contrib[n_img:], pre.raw_sources(), pre.schema.feature_names)
        image_map = None
        if n_img and batch.images is not None:
            emb = X[0, :n_img]
            change = emb - self.embedding_mean_
            w = np.where(np.abs(change) > 1e-6, contrib[:n_img] / np.where(change == 0, 1, change), 0.0)
            weight = torch.from_numpy(w.astype(np.float32))
            image = FrozenEmbedder.pixels(batch.images[:1])
            image_map = embedding_attribution(self.embedder_.branch_, image, lambda e: e @ weight, n_steps=n_steps)
        present = [m for m in self.spec.modalities if (batch.images if m == "image" else batch.records) is not None]
        return Explanation(
            target=self.spec.classes[k],
            probability=float(proba[k]),
            probabilities=dict(zip(self.spec.classes, map(float, proba), strict=True)),
            modality_share=modality_shares(self._value(batch, k), self.spec.modalities, present),
            image_attribution=image_map,
            tabular_attribution=tabular,
            image=batch.image(0),
            record=batch.record(0),
            method="xgboost_tree_shap",
            units=self.spec.units,
        )

    def _value(self, batch: Batch, k: int):
        def value(subset: frozenset) -> float:
            presence = np.array([[float(m in subset) for m in self.spec.modalities]], dtype=np.float32)
            masked = Batch(images=batch.images, records=batch.records, presence=presence)
            return log_odds(self.predict_proba(masked)[0, k])

        return value

    # ------------------------------------------------------------- persistence
    @property
    def image_state(self) -> dict | None:
        return None if self.embedder_ is None else self.embedder_.image_state

    @classmethod
    def files(cls, modalities: tuple[str, ...]) -> tuple[str, ...]:
        return (BOOSTER, STATE, *((FrozenEmbedder.file,) if "image" in modalities else ()))

    def save(self) -> dict[str, bytes]:
        from fusion.persistence import json_bytes

        files = {
            BOOSTER: bytes(self.booster_.save_raw(raw_format="json")),
            STATE: json_bytes(self._state()),
        }
        if self.embedder_ is not None:
            files.update(self.embedder_.save())
        return files

    @classmethod
    def load(cls, spec: ModelSpec, files: ModelFiles, *, device: str = "cpu") -> GBMBackend:
        backend = cls(spec)
        backend.embedder_ = None
        if "image" in spec.modalities:
            image = spec.config.image
            backend.embedder_ = FrozenEmbedder.load(
                files, image.backbone, spec.image_size, spec.image_channels, image.detail
            )
        n_tabular = 0
        if "tabular" in spec.modalities:
            backend.tabular_columns_ = spec.preprocessor.raw_columns()
            n_tabular = len(backend.tabular_columns_)
        backend.booster_ = load_booster(
            files.read(BOOSTER),
            files.origin(BOOSTER),
            n_classes=len(spec.classes),
            n_features=backend._n_image_columns + n_tabular,
        )
        where = Where(files.origin(STATE))
        state = checks.keys(files.json(STATE), where, required=("params", "rounds", "embedding_mean"))
        mean = checks.numbers_list(state["embedding_mean"], where / "embedding_mean", length=backend._n_image_columns)
        backend.embedding_mean_ = np.asarray(mean, dtype=np.float32)
        if state["params"] is not None:
            checks.mapping(state["params"], where / "params")
        if state["rounds"] is not None:
            checks.integer(state["rounds"], where / "rounds", low=1)
        backend.history_ = {"params": state["params"], "rounds": state["rounds"]}
        return backend
