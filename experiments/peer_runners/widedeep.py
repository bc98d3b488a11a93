"""pytorch-widedeep (1.7): TabMlp over the record and its Vision CNN from scratch over the
image (3 channels: gray films are repeated), joined by WideDeep's head, trained with its
Trainer on the fold's grouped inner split with early stopping on the inner validation
loss (best weights kept), as fusion's networks are. Preprocessing as its documentation
recommends (TabPreprocessor: embeddings for categories, standardised numbers; images as
arrays, which its dataset scales to [0, 1]). It has no imputation, so the gap is filled
as a user would: each number's missing values by the training part's median plus a
missing-indicator column, each category's by the level "missing". Defaults (Adam, lr
1e-3, batch 32); the learning rate tried at 1e-3 and 3e-4 on the inner split."""

from __future__ import annotations

import time

import numpy as np
from common import Payload, parse_args, require, write

MAX_EPOCHS = 30
PATIENCE = 4
LEARNING_RATES = (1e-3, 3e-4)  # its default, and one step down: the round of tuning


def filled(records, numeric, categorical, medians):
    """The records with the gaps a user fills by hand: medians and indicators, a level."""
    out = records.copy()
    for name in numeric:
        out[f"{name}_missing"] = out[name].isna().astype(float)
        out[name] = out[name].fillna(medians[name]).astype(float)
    for name in categorical:
        out[name] = out[name].fillna("missing").astype(str)
    return out


def main() -> None:
    args = parse_args()
    require("pytorch_widedeep", "pytorch-widedeep==1.7.0")
    import torch
    from pytorch_widedeep import Trainer
    from pytorch_widedeep.callbacks import Callback, EarlyStopping

    class TimeBudget(Callback):
        """Stops training at the end of the first epoch past ``deadline`` (the fold's
        budget, shared by the learning rates tried), as fusion's runs get the same."""

        def __init__(self, deadline: float):
            super().__init__()
            self.deadline = deadline

        def on_epoch_end(self, epoch, logs=None, metric=None):
            if time.perf_counter() > self.deadline:
                self.trainer.early_stop = True

    from pytorch_widedeep.models import TabMlp, Vision, WideDeep
    from pytorch_widedeep.preprocessing import TabPreprocessor

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    data = Payload(args.payload)
    images = data.images if data.images.ndim == 4 else np.repeat(data.images[..., None], 3, axis=-1)
    y, k = data.labels, len(data.classes)
    binary = k == 2
    proba, seconds, chosen = np.zeros((len(y), k)), [], []

    def fit(tab_train, img_train, y_train, tab_val, img_val, y_val, prep, lr, deadline):
        tab = TabMlp(
            column_idx=prep.column_idx,
            cat_embed_input=prep.cat_embed_input,
            continuous_cols=prep.continuous_cols,
            mlp_hidden_dims=[64, 32],
        )
        model = WideDeep(deeptabular=tab, deepimage=Vision(), head_hidden_dims=[64], pred_dim=1 if binary else k)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        trainer = Trainer(
            model,
            objective="binary" if binary else "multiclass",
            optimizers=optimizer,
            callbacks=[EarlyStopping(patience=PATIENCE, restore_best_weights=True), TimeBudget(deadline)],
            seed=args.seed,
            verbose=0,
        )
        trainer.fit(
            X_train={"X_tab": tab_train, "X_img": img_train, "target": y_train},
            X_val={"X_tab": tab_val, "X_img": img_val, "target": y_val},
            n_epochs=MAX_EPOCHS,
            batch_size=32,
        )
        return trainer, min(trainer.history["val_loss"])

    for fold in data.folds:
        start = time.perf_counter()
        tr, va, te = fold["inner_train"], fold["inner_val"], fold["test"]
        medians = data.records.iloc[tr][data.numeric].median()
        table = filled(data.records, data.numeric, data.categorical, medians)
        continuous = data.numeric + [f"{n}_missing" for n in data.numeric]
        prep = TabPreprocessor(cat_embed_cols=data.categorical or None, continuous_cols=continuous, verbose=0)
        x_tr = prep.fit_transform(table.iloc[tr])
        x_va, x_te = prep.transform(table.iloc[va]), prep.transform(table.iloc[te])
        best = None
        for i, lr in enumerate(LEARNING_RATES):
            deadline = start + args.budget_s * (i + 1) / len(LEARNING_RATES)
            trainer, loss = fit(x_tr, images[tr], y[tr], x_va, images[va], y[va], prep, lr, deadline)
            if best is None or loss < best[1]:
                best = (trainer, loss, lr)
        proba[te] = best[0].predict_proba(X_tab=x_te, X_img=images[te], batch_size=64)
        seconds.append(time.perf_counter() - start)
        chosen.append(best[2])
    notes = {
        "learning_rate_per_fold": chosen,
        "by_hand": "median imputation with missing indicators (numbers) and a 'missing' level (categories): "
        "widedeep has none; gray films repeated to 3 channels; grouped early-stopping split from the harness "
        "(its val_split is random rows); predictions for rows without a record or image are impossible",
    }
    write(args.out, proba, seconds, notes)


if __name__ == "__main__":
    main()
