"""The auto strategy: the fusion strategy a patient-grouped inner cross-validation of
the training part prefers.

Each candidate backend is trained on the training part of every inner fold and scored
on the fold's held-out patients; the candidate with the best pooled out-of-fold macro
AUROC (ties: lower log loss) is then trained on the whole training part. The
validation and test splits take no part in the choice. The chosen backend is what is
saved; its ``history_["auto"]`` (and the run's ``metrics.json``) records every
candidate's score and the choice.

It trains each candidate once per inner fold, so it costs several times a single
strategy: worth it for a new cohort, not for a demonstration.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from fusion.backends.base import Batch, ModelSpec
from fusion.backends.members import inner_folds, log_loss
from fusion.data.dataset import Dataset
from fusion.evaluation import macro_auroc

logger = logging.getLogger(__name__)

CANDIDATES = ("joint", "stacked", "gbm")


class AutoBackend:
    """Chooses among :data:`CANDIDATES` by inner CV; ``fit`` returns the chosen backend."""

    name = "auto"
    distributed = False
    exportable = False
    portable_file = None

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def fit(self, train: Dataset, val: Dataset | None, *, verbose: bool = False, checkpoint_dir=None, resume=False):
        from fusion.backends import backend_class
        from fusion.data.splits import grouped_split

        seed = self.spec.config.train.seed
        folds = inner_folds(train.labels, train.groups, seed, self.spec.config.tuning.auto_folds)
        scores = {}
        for name in CANDIDATES:
            start = time.perf_counter()
            oof = np.zeros((len(train), len(self.spec.classes)))
            for tr, te in folds:
                part = train.subset(tr)
                # A patient-grouped fifth of the fold's training part stops the network early.
                inner = grouped_split(part.labels, part.groups, val_fraction=0.2, test_fraction=0.0, seed=seed)
                model = backend_class(name)(self.spec).fit(part.subset(inner["train"]), part.subset(inner["val"]))
                oof[te] = model.predict_proba(Batch.from_dataset(train.subset(te), self.spec.modalities))
            auroc = macro_auroc(train.labels, oof)
            scores[name] = {
                "inner_cv_macro_auroc": None if auroc is None else round(auroc, 4),
                "inner_cv_log_loss": round(log_loss(train.labels, oof), 4),
                "seconds": round(time.perf_counter() - start, 1),
            }
            logger.info("auto: %s inner-CV macro AUROC %s", name, scores[name]["inner_cv_macro_auroc"])

        def rank(name):
            s = scores[name]
            return (
                -np.inf if s["inner_cv_macro_auroc"] is None else s["inner_cv_macro_auroc"],
                -s["inner_cv_log_loss"],
            )

        chosen = max(CANDIDATES, key=rank)
        logger.info("auto: chose %s", chosen)
        backend = backend_class(chosen)(self.spec).fit(
            train, val, verbose=verbose, checkpoint_dir=checkpoint_dir, resume=resume
        )
        backend.history_["auto"] = {"candidates": scores, "chosen": chosen, "inner_folds": len(folds)}
        return backend
