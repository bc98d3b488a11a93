"""The auto strategy: the model a patient-grouped inner cross-validation of the training
part prefers, fused or not.

Each candidate (:func:`candidates`) is trained on the training part of every inner fold
and scored on the fold's held-out patients: the fusion strategies (joint, stacked,
gbm) and, when both modalities are asked for, each modality alone (the image as each
strategy models it, the record by the tuned XGBoost). The validation and test splits
take no part in the choice.

A fused candidate is shipped only when it beats the best single-modality one by more
than the inner-CV noise: the patient-bootstrap interval of its paired gain in pooled
out-of-fold macro AUROC, at ``tuning.auto_margin_se`` standard errors (one by default:
a one-sided 84 % interval), must lie above zero. This is the one-standard-error rule
of model selection (Breiman et al. 1984; Hastie, Tibshirani & Friedman, *Elements of
Statistical Learning*, 7.10): of models the inner CV cannot tell apart, take the
simpler, here the one that needs one input less. Otherwise the best single-modality
candidate is shipped, with the reason ("the record added nothing measurable in inner
CV; this model uses the image only"), and the model answers as a model of that modality
(``modalities_``, ``Prediction.ignored``). The interval resamples the patients of the
pooled out-of-fold rows; it does not see the randomness of training itself, so on
small or noisy cohorts ``tuning.auto_margin_se`` may be raised.

The chosen backend is what is saved, with the modalities it uses; ``config.json`` keeps
the request (``fusion`` "auto", the modalities asked for). Its ``history_["auto"]``
(and the run's ``metrics.json``) records every candidate's score and seconds, the
choice, the gain's interval and the reason.

It trains each candidate once per inner fold, so it costs several times a single
strategy: worth it for a new cohort, not for a demonstration. Single-modality
candidates cost less than fused ones (one branch; no network for the embedding's
logistic model and the record's XGBoost).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from fusion.backends.base import Batch, ModelSpec
from fusion.backends.members import inner_folds, log_loss
from fusion.config import AUTO_CANDIDATES
from fusion.data.dataset import Dataset
from fusion.errors import ConfigError
from fusion.evaluation import bootstrap_interval, macro_auroc

logger = logging.getLogger(__name__)

# The fusion strategies auto chooses among (each with the modalities asked for).
STRATEGIES = ("joint", "stacked", "gbm")
GAIN_REPLICATES = 500  # patient-bootstrap replicates of the paired gain
WORDS = {"image": "the image", "tabular": "the record"}


@dataclass(frozen=True)
class Candidate:
    """One model auto may ship: a backend trained on some of the modalities.

    Attributes
    ----------
    name : str
        As ``metrics.json`` names it: the strategy (``joint``), or for one modality of a
        two-modality request, the modality and the backend (``image_joint``).
    backend : str
        The registered backend that trains it.
    modalities : tuple of str
    """

    name: str
    backend: str
    modalities: tuple[str, ...]

    def spec(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` narrowed to this candidate's modalities (no record preprocessing
        without the record, no image size without the image)."""
        image = "image" in self.modalities
        return ModelSpec(
            spec.config,
            spec.classes,
            self.modalities,
            spec.preprocessor if "tabular" in self.modalities else None,
            spec.image_size if image else None,
            spec.image_channels if image else 1,
        )


# The strategies that read images through a frozen pretrained backbone: without
# starting weights (a colour model: no shipped weights read colour) auto leaves them out.
FROZEN = ("stacked", "gbm")


def candidates(
    modalities: tuple[str, ...], names: tuple[str, ...] = AUTO_CANDIDATES, *, frozen: bool = True
) -> tuple[Candidate, ...]:
    """What auto chooses among for a request of ``modalities``: the fusion strategies
    on all of them and, with two, the image alone as each strategy models it (the
    image network, the logistic model and XGBoost on the frozen image embedding) and
    the tuned XGBoost on the record alone; of these, those ``names`` lists
    (``tuning.auto_candidates``). A saved auto model is one of them
    (:mod:`fusion.model_folder` checks it).

    The image alone is modelled the three ways the fused strategies model it, so that a
    fused candidate is preferred for what the record adds, not for a better image
    model (XGBoost on the embedding beats a logistic model on it, or the reverse).

    ``frozen`` False (an image model without starting weights: colour images, which
    the shipped weights cannot read) leaves out the candidates that read the image
    through a frozen backbone (:data:`FROZEN`).
    """
    out = [Candidate(name, name, modalities) for name in STRATEGIES]
    if len(modalities) > 1:
        out += [Candidate(f"image_{name}", name, ("image",)) for name in STRATEGIES]
        out.append(Candidate("tabular_xgboost", "xgboost", ("tabular",)))
    usable = [c for c in out if frozen or "image" not in c.modalities or c.backend not in FROZEN]
    return tuple(c for c in usable if c.name in names)


def _frozen_names(modalities: tuple[str, ...]) -> tuple[str, ...]:
    """The candidates a model without starting weights leaves out."""
    kept = {c.name for c in candidates(modalities, frozen=False)}
    return tuple(c.name for c in candidates(modalities) if c.name not in kept)


def _rank(score: dict) -> tuple[float, float]:
    """Larger is better: pooled out-of-fold macro AUROC, then lower log loss."""
    auroc = score["inner_cv_macro_auroc"]
    return (-math.inf if auroc is None else auroc, -score["inner_cv_log_loss"])


class AutoBackend:
    """Chooses among :func:`candidates` by inner CV; ``fit`` returns the chosen backend,
    built for the chosen modalities."""

    name = "auto"
    distributed = False
    exportable = False
    portable_file = None

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def fit(self, train: Dataset, val: Dataset | None, *, verbose: bool = False, checkpoint_dir=None, resume=False):
        from fusion.backends import backend_class

        begun = time.perf_counter()
        seed = self.spec.config.train.seed
        folds = inner_folds(train.labels, train.groups, seed, self.spec.config.tuning.auto_folds)
        cfg = self.spec.config
        frozen = "image" not in self.spec.modalities or cfg.starting_weights is not None
        pool = candidates(self.spec.modalities, cfg.tuning.auto_candidates, frozen=frozen)
        if not pool:
            raise ConfigError(
                f"tuning.auto_candidates {list(self.spec.config.tuning.auto_candidates)} names no model for modalities "
                f"{list(self.spec.modalities)}: with one modality auto chooses among {list(STRATEGIES)}",
                field="tuning.auto_candidates",
                value=list(self.spec.config.tuning.auto_candidates),
                accepted=f"at least one of {list(STRATEGIES)}",
            )
        oof, scores = {}, {}
        for candidate in pool:
            oof[candidate.name], scores[candidate.name] = self._out_of_fold(candidate, train, folds)
            logger.info(
                "auto: %s inner-CV macro AUROC %s", candidate.name, scores[candidate.name]["inner_cv_macro_auroc"]
            )
        margin = self.spec.config.tuning.auto_margin_se
        chosen, decision = choose(pool, scores, oof, train.labels, train.groups, margin_se=margin, seed=seed)
        logger.info("auto: chose %s: %s", chosen.name, decision["reason"])
        backend = backend_class(chosen.backend)(chosen.spec(self.spec)).fit(
            train, val, verbose=verbose, checkpoint_dir=checkpoint_dir, resume=resume
        )
        backend.history_["auto"] = {
            "candidates": scores,
            "chosen": chosen.name,
            "backend": chosen.backend,
            "modalities": list(chosen.modalities),
            **decision,
            "left_out": [] if frozen else list(_frozen_names(self.spec.modalities)),
            "inner_folds": len(folds),
            "seconds": round(time.perf_counter() - begun, 1),
        }
        return backend

    def _out_of_fold(self, candidate: Candidate, train: Dataset, folds) -> tuple[np.ndarray, dict]:
        """The candidate's out-of-fold probabilities over the training part and its
        score, trained once per inner fold."""
        from fusion.backends import backend_class
        from fusion.data.splits import grouped_split

        start, seed = time.perf_counter(), self.spec.config.train.seed
        spec = candidate.spec(self.spec)
        oof = np.zeros((len(train), len(self.spec.classes)))
        for tr, te in folds:
            part = train.subset(tr)
            # A patient-grouped fifth of the fold's training part stops the network early.
            inner = grouped_split(part.labels, part.groups, val_fraction=0.2, test_fraction=0.0, seed=seed)
            model = backend_class(candidate.backend)(spec).fit(part.subset(inner["train"]), part.subset(inner["val"]))
            oof[te] = model.predict_proba(Batch.from_dataset(train.subset(te), candidate.modalities))
        auroc = macro_auroc(train.labels, oof)
        return oof, {
            "backend": candidate.backend,
            "modalities": list(candidate.modalities),
            "inner_cv_macro_auroc": None if auroc is None else round(auroc, 4),
            "inner_cv_log_loss": round(log_loss(train.labels, oof), 4),
            "seconds": round(time.perf_counter() - start, 1),
        }


def choose(
    pool, scores: dict, oof: dict, y, groups, *, margin_se: float = 1.0, seed: int = 0
) -> tuple[Candidate, dict]:
    """The candidate to ship and why: the best fused candidate when the lower end of
    its paired gain's interval over the best single-modality one (``margin_se``
    standard errors, one-sided) is above zero; else the best single-modality one.

    Returns
    -------
    (Candidate, dict)
        The dict holds ``reason`` (a sentence) and ``fusion_gain`` (the gain's point,
        interval, level and the two candidates compared; None when the request has one
        modality and there is nothing to compare).
    """
    best = max(pool, key=lambda c: _rank(scores[c.name]))
    fused = [c for c in pool if len(c.modalities) > 1]
    single = [c for c in pool if len(c.modalities) == 1]
    if not single or not fused:
        reason = f"{best.name} had the best inner-CV macro AUROC; this model uses "
        return best, {"reason": reason + " and ".join(WORDS[m] for m in best.modalities), "fusion_gain": None}
    top_fused = max(fused, key=lambda c: _rank(scores[c.name]))
    top_single = max(single, key=lambda c: _rank(scores[c.name]))
    k = margin_se
    level = math.erf(k / math.sqrt(2))  # two-sided coverage whose lower end is k standard errors below
    gain = bootstrap_interval(
        y, oof[top_fused.name], groups, baseline=oof[top_single.name], n_boot=GAIN_REPLICATES, level=level, seed=seed
    )
    gain = {
        "fused": top_fused.name,
        "single": top_single.name,
        "point": None if gain["point"] is None else round(gain["point"], 4),
        "low": None if gain["low"] is None else round(gain["low"], 4),
        "high": None if gain["high"] is None else round(gain["high"], 4),
        "level": round(level, 4),
        "margin_se": k,
    }
    if best in fused and gain["low"] is not None and gain["low"] > 0:
        reason = (
            f"fusion added a measurable gain in inner CV ({top_fused.name} {_auroc(scores, top_fused)} against "
            f"{top_single.name} {_auroc(scores, top_single)}: {_gain(gain)}, above zero); this model uses "
            + " and ".join(WORDS[m] for m in top_fused.modalities)
        )
        return top_fused, {"reason": reason, "fusion_gain": gain}
    (kept,) = top_single.modalities
    (dropped,) = [m for m in top_fused.modalities if m != kept]
    if best in single:
        why = f"{top_single.name} {_auroc(scores, top_single)} against the best fused, {top_fused.name} "
        why += _auroc(scores, top_fused)
    else:
        why = f"{top_fused.name} {_auroc(scores, top_fused)} against {top_single.name} "
        why += f"{_auroc(scores, top_single)}: {_gain(gain)}, within the noise"
    reason = f"{WORDS[dropped]} added nothing measurable in inner CV ({why}); this model uses {WORDS[kept]} only"
    return top_single, {"reason": reason, "fusion_gain": gain}


def _gain(gain: dict) -> str:
    """The paired gain in words: its point and the lower end of its interval."""
    if gain["point"] is None or gain["low"] is None:
        return "a gain that cannot be measured on these rows"
    return (
        f"a gain of {gain['point']:+.4f} whose lower end at {gain['margin_se']:g} standard error is {gain['low']:+.4f}"
    )


def _auroc(scores: dict, candidate: Candidate) -> str:
    value = scores[candidate.name]["inner_cv_macro_auroc"]
    return "n/a" if value is None else f"{value:.4f}"
