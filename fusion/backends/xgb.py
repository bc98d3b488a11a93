"""The booster backend: XGBoost on the clinical record alone.

Gradient-boosted trees are the strong, cheap reference for tabular data: the fused
network has to beat them to justify itself. XGBoost sees the raw values (unscaled;
NaN for a missing value whose schema policy lets missingness inform the model) and
learns its own default direction for missing values; it is saved in XGBoost's own JSON
format (no pickle) and explained with its exact tree SHAP values.

Example
-------
>>> import numpy as np
>>> X = np.r_[np.zeros((20, 2)), np.ones((20, 2))].astype(np.float32); y = np.r_[np.zeros(20), np.ones(20)].astype(int)
>>> XGBoostBaseline(n_estimators=5).fit(X, y, n_classes=2).predict_proba(X).shape
(40, 2)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fusion.backends.base import Batch, ModelSpec, class_weights
from fusion.data.dataset import Dataset
from fusion.errors import ModelFolderError
from fusion.explain import Explanation, sum_by_source

if TYPE_CHECKING:
    from fusion.persistence import ModelFiles

BOOSTER = "xgboost.json"


class XGBoostBaseline:
    """Multi-class XGBoost with balanced class weights and early stopping.

    Parameters
    ----------
    n_estimators : int
        Maximum number of boosting rounds.
    max_depth : int
    learning_rate : float
    seed : int
    early_stopping_rounds : int
        Rounds without validation improvement (multi-class log loss) before stopping.
    """

    def __init__(
        self,
        n_estimators: int = 400,
        max_depth: int = 4,
        learning_rate: float = 0.05,
        seed: int = 0,
        early_stopping_rounds: int = 40,
    ):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.seed = seed
        self.early_stopping_rounds = early_stopping_rounds

    def _params(self, n_classes: int) -> dict:
        return {
            "objective": "multi:softprob",
            "num_class": n_classes,
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": 0.9,
            "colsample_bytree": 0.9,
            "min_child_weight": 1.0,
            "eval_metric": "mlogloss",
            "seed": self.seed,
            "nthread": 0,
        }

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> XGBoostBaseline:
        import xgboost as xgb

        weights = class_weights(y, n_classes)
        train = xgb.DMatrix(X, label=y, weight=weights[y], missing=np.nan)
        evals, kwargs = [], {}
        if X_val is not None and len(X_val):
            evals = [(xgb.DMatrix(X_val, label=y_val, weight=weights[y_val], missing=np.nan), "val")]
            kwargs["early_stopping_rounds"] = self.early_stopping_rounds
        self.booster_ = xgb.train(
            self._params(n_classes), train, num_boost_round=self.n_estimators, evals=evals, verbose_eval=False, **kwargs
        )
        self.n_classes_ = n_classes
        self.n_features_in_ = X.shape[1]
        self.best_iteration_ = int(getattr(self.booster_, "best_iteration", self.n_estimators - 1))
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities, shape (n, n_classes), from the best iteration."""
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} columns; the booster was fitted on {self.n_features_in_}")
        proba = self.booster_.inplace_predict(X, iteration_range=(0, self.best_iteration_ + 1), missing=np.nan)
        return np.asarray(proba, dtype=np.float64).reshape(len(X), self.n_classes_)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Exact tree SHAP values in margin space, shape (n, n_classes, n_features + 1);
        the last column is the bias."""
        import xgboost as xgb

        dm = xgb.DMatrix(X, missing=np.nan)
        out = self.booster_.predict(dm, pred_contribs=True, iteration_range=(0, self.best_iteration_ + 1))
        return np.asarray(out).reshape(len(X), self.n_classes_, X.shape[1] + 1)

    def to_bytes(self) -> bytes:
        """XGBoost's own JSON model format, with the attributes :meth:`from_bytes` reads."""
        self.booster_.set_attr(
            best_iteration=str(self.best_iteration_),
            n_classes=str(self.n_classes_),
            n_features=str(self.n_features_in_),
        )
        return bytes(self.booster_.save_raw(raw_format="json"))

    @classmethod
    def from_bytes(cls, data: bytes, origin: str, *, n_classes: int, n_features: int) -> XGBoostBaseline:
        """Rebuild from :meth:`to_bytes`; refused (naming ``origin`` and the attribute)
        unless it predicts ``n_classes`` classes from ``n_features`` columns."""
        from fusion.backends.members import load_booster

        model = cls()
        model.booster_ = load_booster(data, origin, n_classes=n_classes, n_features=n_features)
        last = model.booster_.num_boosted_rounds() - 1
        checks = {
            "n_classes": (n_classes, n_classes, f"config.json lists {n_classes} classes"),
            "n_features": (n_features, n_features, f"the record gives {n_features} columns"),
            "best_iteration": (0, last, f"the booster has rounds 0 to {last}"),
        }
        values = {}
        for key, (low, high, because) in checks.items():
            value = model.booster_.attr(key)
            number = int(value) if value is not None and value.isdecimal() and len(value) < 19 else None
            if number is None or not low <= number <= high:
                raise ModelFolderError(
                    f"{origin}: attribute {key} is {value!r:.60}, but {because}", field=key, value=value, file=origin
                )
            values[key] = number
        model.n_classes_, model.n_features_in_ = values["n_classes"], values["n_features"]
        model.best_iteration_ = values["best_iteration"]
        return model


class XGBoostBackend:
    """The XGBoost baseline behind the estimator's contract (tabular only).

    Attributes
    ----------
    booster_ : XGBoostBaseline
    history_ : dict
        ``best_iteration``.
    """

    name = "xgboost"
    distributed = False
    exportable = False
    portable_file = "xgboost.json"

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def _X(self, records) -> np.ndarray:
        return self.spec.preprocessor.transform_raw(records)[0]

    def fit(
        self, train: Dataset, val: Dataset | None, *, verbose: bool = False, checkpoint_dir=None, resume: bool = False
    ) -> XGBoostBackend:
        """Tuned by patient-grouped inner CV of the training part (``train.xgb_tune``,
        the default: depth, learning rate, minimum child weight and rounds), or the fixed
        settings with early stopping on ``val``. Boosting is fast and not checkpointed:
        ``checkpoint_dir`` and ``resume`` are accepted for the common contract and ignored."""
        t = self.spec.config.train
        if t.xgb_tune:
            return self._fit_tuned(train)
        has_val = val is not None and len(val) > 0
        self.booster_ = XGBoostBaseline(t.xgb_trees, t.xgb_depth, t.xgb_lr, seed=t.seed).fit(
            self._X(train.records),
            train.labels,
            len(self.spec.classes),
            self._X(val.records) if has_val else None,
            val.labels if has_val else None,
        )
        self.history_ = {"best_iteration": self.booster_.best_iteration_}
        return self

    def _fit_tuned(self, train: Dataset) -> XGBoostBackend:
        from fusion.backends.members import fit_xgb, tune_xgb

        t, k = self.spec.config.train, len(self.spec.classes)
        X = self._X(train.records)
        params, rounds, scores = tune_xgb(X, train.labels, train.groups, k, t.seed, self.spec.config.tuning)
        model = XGBoostBaseline(n_estimators=rounds, seed=t.seed)
        model.booster_ = fit_xgb(X, train.labels, k, params, t.seed, rounds)
        model.n_classes_, model.n_features_in_, model.best_iteration_ = k, X.shape[1], rounds - 1
        self.booster_ = model
        self.history_ = {"params": params, "rounds": rounds, "best_inner_cv_macro_auroc": max(scores.values())}
        return self

    def predict_proba(self, batch: Batch) -> np.ndarray:
        if batch.records is None:
            raise ValueError("the XGBoost baseline needs a record with at least one known value")
        return self.booster_.predict_proba(self._X(batch.records))

    def explain(self, batch: Batch, target: int | None, *, n_steps: int = 0) -> Explanation:
        """Exact tree SHAP values (in margin space) of each record feature; ``n_steps``
        does not apply."""
        pre = self.spec.preprocessor
        X = pre.transform_raw(batch.records)[0]
        proba = self.booster_.predict_proba(X)[0]
        k = int(np.argmax(proba)) if target is None else target
        contrib = self.booster_.contributions(X)[0, k, :-1]  # last column: bias
        classes = self.spec.classes
        return Explanation(
            target=classes[k],
            probability=float(proba[k]),
            probabilities=dict(zip(classes, map(float, proba), strict=True)),
            modality_share={"tabular": 1.0},
            tabular_attribution=sum_by_source(contrib, pre.raw_sources(), pre.schema.feature_names),
            record=batch.record(0),
            method="xgboost_tree_shap",
            units=self.spec.units,
        )

    @property
    def image_state(self) -> None:
        return None

    @classmethod
    def files(cls, modalities: tuple[str, ...]) -> tuple[str, ...]:
        return (BOOSTER,)

    def save(self) -> dict[str, bytes]:
        return {BOOSTER: self.booster_.to_bytes()}

    @classmethod
    def load(cls, spec: ModelSpec, files: ModelFiles, *, device: str = "cpu") -> XGBoostBackend:
        backend = cls(spec)
        backend.booster_ = XGBoostBaseline.from_bytes(
            files.read(BOOSTER),
            files.origin(BOOSTER),
            n_classes=len(spec.classes),
            n_features=len(spec.preprocessor.raw_columns()),
        )
        backend.history_ = {}
        return backend
