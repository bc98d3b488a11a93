"""AutoGluon's TabularPredictor on the record (and, with ``--embedding``, on the record
plus fusion's frozen image embedding: the HAIM recipe with AutoGluon's stacking in place
of XGBoost). Its documented defaults: the ``medium_quality`` preset, log loss, the
fold's time budget; the fold's grouped inner split as its tuning data (AutoGluon would
otherwise hold out rows at random, splitting patients)."""

from __future__ import annotations

import tempfile
import time

import numpy as np
from common import Payload, by_class, parse_args, require, write


def main() -> None:
    args = parse_args()
    require("autogluon.tabular", '"autogluon.tabular[all]"')
    from autogluon.tabular import TabularPredictor

    data = Payload(args.payload)
    table = data.records.copy()
    if args.embedding:
        embedding = np.load(args.embedding)
        for j in range(embedding.shape[1]):
            table[f"img_{j}"] = embedding[:, j]
    table["__label__"] = [data.classes[i] for i in data.labels]
    k = len(data.classes)
    proba, seconds, models = np.zeros((len(table), k)), [], []
    for fold in data.folds:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as path:
            predictor = TabularPredictor(
                label="__label__",
                problem_type="multiclass" if k > 2 else "binary",
                eval_metric="log_loss",
                path=path,
                verbosity=0,
            ).fit(
                table.iloc[fold["inner_train"]],
                tuning_data=table.iloc[fold["inner_val"]],
                time_limit=args.budget_s,
                presets="medium_quality",
            )
            got = predictor.predict_proba(table.iloc[fold["test"]].drop(columns="__label__"))
            proba[fold["test"]] = by_class(got, data.classes)
            models.append(predictor.model_best)
        seconds.append(time.perf_counter() - start)
    notes = {
        "best_model_per_fold": models,
        "by_hand": "the grouped tuning split (its default holds out rows at random); labels as strings",
    }
    write(args.out, proba, seconds, notes)


if __name__ == "__main__":
    main()
