"""The stacked backend: decision-level late fusion of separately trained models.

Each modality has its own model: the image's is a multinomial logistic regression on a
frozen pretrained backbone's embedding, the record's an XGBoost model; both are tuned
by patient-grouped inner cross-validation on the training part, which also gives their
out-of-fold class probabilities. A combiner learns from those out-of-fold
probabilities how to join the modalities: either a regularised multinomial logistic
regression (scikit-learn) over the members' log-probabilities, or their fixed
equal-weight average (a product of experts), whichever scores better in a further
patient-grouped cross-validation of the out-of-fold rows. With a few hundred patients
the fixed average usually wins: a learned combiner's weights are then mostly noise
(docs/results.md). The members are then refitted on the whole training part.

Late fusion of separately trained models is the recommendation for small cohorts with
missing modalities (Huang et al., npj Digit Med 2020): each modality is learned from
all of its own data, and with one modality missing the combiner fitted for the other
alone answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fusion import checks
from fusion.backends.base import Batch, ModelSpec
from fusion.backends.members import (
    FrozenEmbedder,
    LinearModel,
    fit_linear,
    fit_xgb,
    inner_folds,
    score,
    tune_linear,
    tune_xgb,
    xgb_proba,
)
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
    from fusion.config import TuningConfig
    from fusion.persistence import ModelFiles

STATE = "stacked.json"
TABULAR_BOOSTER = "stacked_record.json"
FLOOR = 1e-6  # log-probabilities are clipped here: one member's certainty must not veto the other


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, FLOOR, 1.0))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Combiner:
    """Joins members' class probabilities: ``kind`` "average" (equal-weight mean of
    log-probabilities, renormalised) or "logistic" (a :class:`LinearModel` over the
    concatenated log-probabilities)."""

    def __init__(self, kind: str, linear: LinearModel | None = None, members: tuple[str, ...] = ()):
        self.kind, self.linear, self.members = kind, linear, members

    def logits(self, logps: list[np.ndarray]) -> np.ndarray:
        if self.kind == "average":
            return np.mean(logps, axis=0)
        return self.linear.logits(np.concatenate(logps, axis=1))

    def predict_proba(self, logps: list[np.ndarray]) -> np.ndarray:
        return _softmax(self.logits(logps))

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "members": list(self.members),
            "linear": self.linear.to_dict() if self.linear else None,
        }

    @classmethod
    def from_dict(cls, d: dict, where: Where, *, members: tuple[str, ...], n_classes: int) -> Combiner:
        """Rebuild the combiner of ``members``, every field checked: a logistic one
        reads each member's ``n_classes`` log-probabilities."""
        d = checks.keys(d, where, required=("kind", "members", "linear"))
        kind = checks.text(d["kind"], where / "kind", choices=("average", "logistic"))
        if checks.texts(d["members"], where / "members") != members:
            raise (where / "members").refuse(
                f"{where / 'members'} must be {list(members)}; got {d['members']!r:.60}",
                value=d["members"],
                accepted=f"{list(members)}",
            )
        if kind == "average":
            if d["linear"] is not None:
                raise (where / "linear").refuse(
                    f"{where / 'linear'} must be null for an average combiner", value=d["linear"], accepted="null"
                )
            return cls(kind, None, members)
        n_features = n_classes * len(members)
        linear = LinearModel.from_dict(d["linear"], where / "linear", n_classes=n_classes, n_features=n_features)
        return cls(kind, linear, members)


def fit_combiner(
    logps: list[np.ndarray], members: tuple[str, ...], y, groups, n_classes: int, seed: int, tuning: TuningConfig
):
    """The combiner (fixed average, or logistic regression with C from
    ``tuning.linear_c``) that scores best in a patient-grouped cross-validation of the
    out-of-fold rows.

    Returns (combiner, scores by candidate).
    """
    X = np.concatenate(logps, axis=1)
    folds = inner_folds(y, groups, seed + 1, tuning.inner_folds)
    scores = {"average": score(y, Combiner("average").predict_proba(logps))}
    for C in tuning.linear_c:
        oof = np.zeros((len(y), n_classes))
        for tr, te in folds:
            oof[te] = fit_linear(X[tr], y[tr], n_classes, C).predict_proba(X[te])
        scores[f"logistic C={C}"] = score(y, oof)
    best = max(scores, key=scores.get)
    if best == "average":
        combiner = Combiner("average", None, members)
    else:
        combiner = Combiner("logistic", fit_linear(X, y, n_classes, float(best.split("=")[1])), members)
    return combiner, {k: round(v[0], 4) for k, v in scores.items()}


class StackedBackend:
    """Per-modality models joined by a combiner learned on out-of-fold predictions.

    Attributes
    ----------
    embedder_ : FrozenEmbedder or None
    image_model_ : LinearModel or None
    tabular_booster_ : xgboost.Booster or None
    combiners_ : dict of str -> Combiner
        Keyed by the members they join ("image+tabular", "image", "tabular").
    history_ : dict
        Each member's and combiner's inner-CV scores and choices.
    """

    name = "stacked"
    distributed = False
    exportable = False
    portable_file = None

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    # ----------------------------------------------------------------- members
    def _member_logps(self, batch: Batch) -> dict[str, np.ndarray]:
        """Each present member's log-probabilities for the batch."""
        out = {}
        k = len(self.spec.classes)
        if self.embedder_ is not None and batch.images is not None:
            out["image"] = _log(self.image_model_.predict_proba(self.embedder_.transform(batch.images)))
        if self.tabular_booster_ is not None and batch.records is not None:
            raw = self.spec.preprocessor.transform_raw(batch.records)[0]
            out["tabular"] = _log(xgb_proba(self.tabular_booster_, raw, k))
        return out

    def fit(self, train: Dataset, val: Dataset | None, *, verbose: bool = False, checkpoint_dir=None, resume=False):
        """Tune the members, learn the combiners on their out-of-fold predictions, then
        refit the members on the whole training part. ``val`` is not used for fitting
        (its figures stay held out); checkpoints do not apply."""
        cfg, k = self.spec.config, len(self.spec.classes)
        y, groups, seed, tuning = train.labels, train.groups, cfg.train.seed, cfg.tuning
        self.embedder_ = self.image_model_ = self.tabular_booster_ = None
        oof, history = {}, {}
        if "image" in self.spec.modalities:
            self.embedder_ = FrozenEmbedder(
                cfg.image.backbone,
                cfg.starting_weights,
                self.spec.image_size,
                self.spec.image_channels,
                cfg.image.detail,
            )
            emb = self.embedder_.fit(train.images).transform(train.images)
            C, scores = tune_linear(emb, y, groups, k, seed, tuning)
            oof["image"] = self._oof(
                lambda tr: fit_linear(emb[tr], y[tr], k, C),
                lambda m, te: m.predict_proba(emb[te]),
                y,
                inner_folds(y, groups, seed, tuning.inner_folds),
            )
            self.image_model_ = fit_linear(emb, y, k, C)
            history["image_member"] = {"C": C, "inner_cv_macro_auroc": scores}
        if "tabular" in self.spec.modalities:
            raw = self.spec.preprocessor.transform_raw(train.records)[0]
            params, rounds, scores = tune_xgb(raw, y, groups, k, seed, tuning)
            oof["tabular"] = self._oof(
                lambda tr: fit_xgb(raw[tr], y[tr], k, params, seed, rounds),
                lambda m, te: xgb_proba(m, raw[te], k),
                y,
                inner_folds(y, groups, seed, tuning.inner_folds),
            )
            self.tabular_booster_ = fit_xgb(raw, y, k, params, seed, rounds)
            history["tabular_member"] = {
                "params": params,
                "rounds": rounds,
                "best_inner_cv_macro_auroc": max(scores.values()),
            }
        self.combiners_, combiner_scores = {}, {}
        subsets = [tuple(oof)] + ([(m,) for m in oof] if len(oof) > 1 else [])
        for members in subsets:
            key = "+".join(members)
            logps = [_log(oof[m]) for m in members]
            self.combiners_[key], combiner_scores[key] = fit_combiner(logps, members, y, groups, k, seed, tuning)
        self.prior_ = np.bincount(y, minlength=k) / len(y)
        history["combiners"] = {
            key: {"kind": c.kind, "inner_cv_macro_auroc": combiner_scores[key]} for key, c in self.combiners_.items()
        }
        history["out_of_fold_macro_auroc"] = {m: round(score(y, p)[0], 4) for m, p in oof.items()}
        self.history_ = history
        return self

    @staticmethod
    def _oof(fit, predict, y, folds) -> np.ndarray:
        """Out-of-fold probabilities of one member over ``folds``: the inner folds its
        tuning used."""
        out = None
        for tr, te in folds:
            proba = predict(fit(tr), te)
            out = np.zeros((len(y), proba.shape[1])) if out is None else out
            out[te] = proba
        return out

    # --------------------------------------------------------------- inference
    def _combine(self, logps: dict[str, np.ndarray], members: tuple[str, ...]) -> np.ndarray:
        if not members:
            return np.tile(self.prior_, (len(next(iter(logps.values()))) if logps else 1, 1))
        return self.combiners_["+".join(members)].predict_proba([logps[m] for m in members])

    def predict_proba(self, batch: Batch) -> np.ndarray:
        logps = self._member_logps(batch)
        members = tuple(m for m in self.spec.modalities if m in logps)
        if batch.presence is None:
            return self._combine(logps, members)
        out = np.zeros((len(batch), len(self.spec.classes)))
        on = batch.presence > 0
        for pattern in {tuple(row) for row in on}:
            rows = np.flatnonzero((on == pattern).all(axis=1))
            subset = tuple(m for m, keep in zip(self.spec.modalities, pattern, strict=True) if keep and m in logps)
            out[rows] = self._combine({m: v[rows] for m, v in logps.items()}, subset)
        return out

    def explain(self, batch: Batch, target: int | None, *, n_steps: int = DEFAULT_STEPS) -> Explanation:
        """Shares: Shapley values on the target's log-odds over the combiners (the
        one-member combiner answers when the other member is removed). Record drivers:
        the XGBoost member's tree SHAP values, carried through its log-softmax and the
        combiner to the target's log-odds (to first order). Pixel map: Integrated
        Gradients through the frozen backbone, the image member and the combiner."""
        logps = self._member_logps(batch)
        members = tuple(m for m in self.spec.modalities if m in logps)
        proba = self._combine(logps, members)[0]
        k = int(np.argmax(proba)) if target is None else target

        def value(subset: frozenset) -> float:
            kept = tuple(m for m in members if m in subset)
            return log_odds(self._combine(logps, kept)[0, k])

        return Explanation(
            target=self.spec.classes[k],
            probability=float(proba[k]),
            probabilities=dict(zip(self.spec.classes, map(float, proba), strict=True)),
            modality_share=modality_shares(value, self.spec.modalities, members),
            image_attribution=self._pixel_map(batch, logps, members, k, n_steps) if "image" in members else None,
            tabular_attribution=self._record_drivers(batch, logps, members, k) if "tabular" in members else None,
            image=batch.image(0),
            record=batch.record(0),
            method="stacked: integrated gradients (image), tree SHAP through the combiner (record)",
            units=self.spec.units,
        )

    def _target_log_odds_grad(self, logps: dict, members: tuple[str, ...], k: int, member: str) -> np.ndarray:
        """d(target log-odds) / d(member's log-probabilities), by central differences
        (the combiners are small: K evaluations)."""
        base = {m: v[:1].copy() for m, v in logps.items()}
        grad = np.zeros(base[member].shape[1])
        for c in range(len(grad)):
            plus, minus = dict(base), dict(base)
            plus[member] = base[member].copy()
            minus[member] = base[member].copy()
            plus[member][0, c] += 1e-4
            minus[member][0, c] -= 1e-4
            grad[c] = (
                log_odds(self._combine(plus, members)[0, k]) - log_odds(self._combine(minus, members)[0, k])
            ) / 2e-4
        return grad

    def _record_drivers(self, batch: Batch, logps: dict, members: tuple[str, ...], k: int) -> dict[str, float]:
        import xgboost as xgb

        pre = self.spec.preprocessor
        raw = pre.transform_raw(batch.records)[0]
        n_classes = len(self.spec.classes)
        phi = self.tabular_booster_.predict(xgb.DMatrix(raw, missing=np.nan), pred_contribs=True)
        phi = np.asarray(phi).reshape(len(raw), n_classes, raw.shape[1] + 1)[0, :, :-1]  # (classes, columns)
        p = np.exp(logps["tabular"][0])
        change = phi - p @ phi  # each column's effect on every class's log-probability (linearised log-softmax)
        effect = self._target_log_odds_grad(logps, members, k, "tabular") @ change
        return sum_by_source(effect, pre.raw_sources(), pre.schema.feature_names)

    def _pixel_map(self, batch: Batch, logps: dict, members: tuple[str, ...], k: int, n_steps: int) -> np.ndarray:
        import torch

        lin = self.image_model_
        mean, scale = torch.tensor(lin.mean, dtype=torch.float32), torch.tensor(lin.scale, dtype=torch.float32)
        coef, intercept = torch.tensor(lin.coef, dtype=torch.float32), torch.tensor(lin.intercept, dtype=torch.float32)
        fixed = {m: torch.tensor(logps[m][:1], dtype=torch.float32) for m in members if m != "image"}
        combiner = self.combiners_["+".join(members)]

        def readout(e):
            member = torch.log_softmax(((e - mean) / scale) @ coef.T + intercept, dim=1).clamp_min(np.log(FLOOR))
            blocks = [member if m == "image" else fixed[m].expand(len(e), -1) for m in members]
            if combiner.kind == "average":
                z = torch.stack(blocks).mean(dim=0)
            else:
                c = combiner.linear
                x = (torch.cat(blocks, dim=1) - torch.tensor(c.mean, dtype=torch.float32)) / torch.tensor(
                    c.scale, dtype=torch.float32
                )
                z = x @ torch.tensor(c.coef, dtype=torch.float32).T + torch.tensor(c.intercept, dtype=torch.float32)
            logp = torch.log_softmax(z, dim=1)[:, k]
            return logp - torch.log1p(-logp.exp().clamp_max(1 - 1e-6))

        image = FrozenEmbedder.pixels(batch.images[:1])
        return embedding_attribution(self.embedder_.branch_, image, readout, n_steps=n_steps)

    # ------------------------------------------------------------- persistence
    @property
    def image_state(self) -> dict | None:
        return None if self.embedder_ is None else self.embedder_.image_state

    @classmethod
    def files(cls, modalities: tuple[str, ...]) -> tuple[str, ...]:
        return (
            STATE,
            *((TABULAR_BOOSTER,) if "tabular" in modalities else ()),
            *((FrozenEmbedder.file,) if "image" in modalities else ()),
        )

    def save(self) -> dict[str, bytes]:
        from fusion.persistence import json_bytes

        state = {
            "image_model": self.image_model_.to_dict() if self.image_model_ is not None else None,
            "combiners": {key: c.to_dict() for key, c in self.combiners_.items()},
            "prior": self.prior_.tolist(),
            "history": self.history_,
        }
        files = {STATE: json_bytes(state)}
        if self.tabular_booster_ is not None:
            files[TABULAR_BOOSTER] = bytes(self.tabular_booster_.save_raw(raw_format="json"))
        if self.embedder_ is not None:
            files.update(self.embedder_.save())
        return files

    @classmethod
    def load(cls, spec: ModelSpec, files: ModelFiles, *, device: str = "cpu") -> StackedBackend:
        from fusion.backends.members import load_booster

        k = len(spec.classes)
        where = Where(files.origin(STATE))
        state = checks.keys(files.json(STATE), where, required=("image_model", "combiners", "prior", "history"))
        backend = cls(spec)
        backend.embedder_ = backend.image_model_ = backend.tabular_booster_ = None
        if "image" in spec.modalities:
            image = spec.config.image
            backend.embedder_ = FrozenEmbedder.load(
                files, image.backbone, spec.image_size, spec.image_channels, image.detail
            )
            backend.image_model_ = LinearModel.from_dict(
                state["image_model"], where / "image_model", n_classes=k, n_features=backend.embedder_.output_dim
            )
        elif state["image_model"] is not None:
            raise (where / "image_model").refuse(
                f"{where / 'image_model'} must be null: the model has no image modality", accepted="null"
            )
        if "tabular" in spec.modalities:
            backend.tabular_booster_ = load_booster(
                files.read(TABULAR_BOOSTER),
                files.origin(TABULAR_BOOSTER),
                n_classes=k,
                n_features=len(spec.preprocessor.raw_columns()),
            )
        backend.combiners_ = cls._combiners(state["combiners"], where / "combiners", spec.modalities, k)
        prior = checks.numbers_list(state["prior"], where / "prior", length=k, low=0)
        if abs(sum(prior) - 1) > 1e-6:
            raise (where / "prior").refuse(
                f"{where / 'prior'} must sum to 1; got {sum(prior):.6g}", value=prior, accepted="numbers that sum to 1"
            )
        backend.prior_ = np.asarray(prior)
        backend.history_ = checks.mapping(state["history"], where / "history")
        return backend

    @staticmethod
    def _combiners(value, where: Where, modalities: tuple[str, ...], n_classes: int) -> dict[str, Combiner]:
        """One combiner for all the modalities and, with two, one for each alone."""
        subsets = [modalities] + ([(m,) for m in modalities] if len(modalities) > 1 else [])
        value = checks.keys(value, where, required=["+".join(s) for s in subsets])
        return {
            "+".join(s): Combiner.from_dict(value["+".join(s)], where / "+".join(s), members=s, n_classes=n_classes)
            for s in subsets
        }
