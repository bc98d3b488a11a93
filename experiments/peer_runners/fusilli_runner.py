"""fusilli (2.0): three of its tabular-image fusion models, trained through its documented
entry points (``prepare_fusion_data`` with CSV and ``torch.save`` inputs, then
``train_and_save_models``), each fold's grouped inner split given as its ``test_indices``
(fusilli validates, and early-stops, on that split; patience 15 on the validation loss,
its default):

- ``fusilli_concat``: ``ConcatImageMapsTabularData`` (the record concatenated with the
  image's feature maps, one network);
- ``fusilli_attention``: ``CrossmodalMultiheadAttention`` (each modality attends to the
  other);
- ``fusilli_subspace``: ``ConcatImgLatentTabDoubleLoss`` (an image autoencoder trained with
  the classifier, its latent space concatenated with the record);
- ``fusilli_image``: ``ImgUnimodal``, its image network alone (to tell how much of the
  others' score is the image);
- ``fusilli_image_masked``: the same on films whose outer eighth on every side is blanked,
  in training and in testing (to tell how much of the image's score sits at the film's
  edges, where laterality markers, text and the scanner's borders are: the shortcuts of
  DeGrave et al. 2021);
- ``fusilli_image_pooled``: its image network with the last feature maps averaged over
  the film (global average pooling, as fusion's networks end) instead of flattened, so
  that it no longer knows *where* on the film a feature is (to tell how much of its
  score is the layout of the film: field of view, collimation, the patient's size).

``CrossmodalMultiheadAttention`` attends across the *rows of a batch* (its
``nn.MultiheadAttention`` gets 2-D inputs, read as one sequence of patients), so a
patient's answer depends on who else is in the batch. Its answers here are each test
patient's alone (a batch of one, as a patient is seen); the pooled macro AUROC of its
answers in batches of 256 test rows is in the notes.

What its user writes by hand (here): fusilli reads numbers only, so each number's gaps
are filled with the training part's median plus a missing-indicator column, categories
one-hot encoded with a "missing" level, and every column standardised on the training
part; images scaled to [0, 1]. Its 2-D image models read one channel (their shape checks
pass a one-channel dummy image), so colour images are converted to gray. Its default
image layers (five unpadded 3x3 convolutions, each halving the size) need about 100 px;
at fusion's 64 px they are given, through fusilli's ``layer_mods``, the same layers with
padding 1. Its defaults otherwise (Adam, batch 8, or 9 where 8 would leave a last batch
of one row, on which fusilli fails); the learning rate tried at 1e-3 and
3e-4, chosen by log loss on the inner split. fusilli has no time limit: a Lightning
``Timer`` is added to the trainer it builds, so each learning rate gets half the fold's
budget."""

from __future__ import annotations

import contextlib
import datetime
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import Payload, log_loss, parse_args, require, write

MODELS = {
    "fusilli_concat": (
        "fusilli.fusionmodels.tabularimagefusion.concat_img_maps_tabular_data",
        "ConcatImageMapsTabularData",
    ),
    "fusilli_attention": ("fusilli.fusionmodels.tabularimagefusion.crossmodal_att", "CrossmodalMultiheadAttention"),
    "fusilli_subspace": (
        "fusilli.fusionmodels.tabularimagefusion.concat_img_latent_tab_doubleloss",
        "ConcatImgLatentTabDoubleLoss",
    ),
    "fusilli_image": ("fusilli.fusionmodels.unimodal.image", "ImgUnimodal"),
    "fusilli_image_masked": ("fusilli.fusionmodels.unimodal.image", "ImgUnimodal"),
    "fusilli_image_pooled": ("fusilli.fusionmodels.unimodal.image", "ImgUnimodal"),
}
MASKED_EDGE = 1 / 8  # the part of the side blanked on every edge by fusilli_image_masked
ONE_AT_A_TIME = {"fusilli_attention"}  # models whose answer for a row depends on its batch
LEARNING_RATES = (1e-3, 3e-4)  # Adam's (and fusilli's) default, and one step down


def numeric_table(records: pd.DataFrame, numeric, categorical, fit_rows) -> pd.DataFrame:
    """The record as fusilli needs it: numbers only, no gaps, standardised."""
    fit = records.iloc[fit_rows]
    columns = {}
    for name in numeric:
        values = records[name].astype(float)
        columns[f"{name}_missing"] = values.isna().astype(float)
        columns[name] = values.fillna(fit[name].astype(float).median())
    for name in categorical:
        values = records[name].fillna("missing").astype(str)
        for level in sorted(set(fit[name].fillna("missing").astype(str))):
            columns[f"{name}={level}"] = (values == level).astype(float)
    table = pd.DataFrame(columns, index=records.index)
    fitted = table.iloc[fit_rows]
    std = fitted.std().replace(0, 1).fillna(1)
    return ((table - fitted.mean()) / std).fillna(0.0)


def padded_image_layers(nn, pooled: bool = False):
    """fusilli's default 2-D image layers with padding 1, so that 64 px survive five
    halvings; ``pooled``: the last maps averaged over the film instead of flattened."""
    sizes = [(1, 32), (32, 64), (64, 128), (128, 256), (256, 256)]
    layers = {
        f"layer {i + 1}": nn.Sequential(nn.Conv2d(a, b, kernel_size=(3, 3), padding=1), nn.ReLU(), nn.MaxPool2d((2, 2)))
        for i, (a, b) in enumerate(sizes)
    }
    if pooled:
        layers["layer 5"].append(nn.AdaptiveAvgPool2d(1))
    return nn.ModuleDict(layers)


def macro_auroc(y: np.ndarray, proba: np.ndarray) -> float:
    """One-vs-rest AUROC averaged over classes (rank formula; ties get half)."""
    scores = []
    for j in range(proba.shape[1]):
        pos, neg = proba[y == j, j], proba[y != j, j]
        if len(pos) and len(neg):
            greater = (pos[:, None] > neg[None, :]).mean()
            scores.append(greater + 0.5 * (pos[:, None] == neg[None, :]).mean())
    return float(np.mean(scores))


def main() -> None:
    args = parse_args()
    require("fusilli", "fusilli==2.0.0")
    import importlib

    import fusilli.train
    import torch
    from fusilli.data import prepare_fusion_data
    from fusilli.train import train_and_save_models
    from lightning.pytorch.callbacks import Timer
    from torch import nn

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    module, cls = MODELS[args.peer]
    model_class = getattr(importlib.import_module(module), cls)
    data = Payload(args.payload)
    images = data.images.astype(np.float32) / 255.0
    if images.ndim == 4:  # colour: fusilli's 2-D models read one channel
        images = images @ np.array([0.299, 0.587, 0.114], np.float32)
    if args.peer == "fusilli_image_masked":
        edge = round(images.shape[1] * MASKED_EDGE)
        centre = images[:, edge:-edge, edge:-edge].copy()
        images[:] = 0.0
        images[:, edge:-edge, edge:-edge] = centre
    images = torch.from_numpy(images[:, None])
    y, k = data.labels, len(data.classes)
    binary = k == 2
    layer_mods = None
    if args.peer != "fusilli_subspace":
        layer_mods = {cls: {"img_layers": padded_image_layers(nn, pooled=args.peer == "fusilli_image_pooled")}}

    deadline = {"at": 0.0}
    build_trainer = fusilli.train.init_trainer

    def init_trainer(*a, **kw):
        trainer = build_trainer(*a, **kw)
        left = max(deadline["at"] - time.perf_counter(), 1.0)
        trainer.callbacks.append(Timer(duration=datetime.timedelta(seconds=left), interval="step"))
        return trainer

    fusilli.train.init_trainer = init_trainer

    image_only = args.peer.startswith("fusilli_image")

    def predict(model, tab, img, batch: int = 256) -> np.ndarray:
        model.eval()
        out = []
        with torch.no_grad():
            for s in range(0, len(tab), batch):
                inputs = (img[s : s + batch],) if image_only else (tab[s : s + batch], img[s : s + batch])
                got = model(*inputs)
                logits = (got[0] if isinstance(got, list) else got).reshape(len(inputs[0]), -1)
                if binary:
                    p = torch.sigmoid(logits[:, 0])
                    out.append(torch.stack([1 - p, p], dim=1))
                else:
                    out.append(torch.softmax(logits, dim=1))
        return torch.cat(out).numpy()

    proba, seconds, chosen, epochs, batches = np.zeros((len(y), k)), [], [], [], []
    batched = np.zeros_like(proba)
    for fold in data.folds:
        start = time.perf_counter()
        tr, va, te = fold["inner_train"], fold["inner_val"], fold["test"]
        table = numeric_table(data.records, data.numeric, data.categorical, tr)
        part = tr + va  # what fusilli sees; its "test" split is the inner validation
        # fusilli fails on a last batch of one row (its logits are squeezed to the class
        # axis), in training and in validation: its default batch of 8 unless that leaves one
        batch = next(b for b in (8, 9, 7, 10, 11) if len(tr) % b != 1 and len(va) % b != 1)
        best = None
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            csv = table.iloc[part].reset_index(drop=True)
            csv.insert(0, "ID", np.arange(len(part)))
            csv["prediction_label"] = y[part].astype(np.int64)
            csv.to_csv(tmp / "tabular1.csv", index=False)
            torch.save(images[part], tmp / "image.pt")
            paths = {d: tmp / d for d in ("checkpoints", "figures", "losses")}
            for path in paths.values():
                path.mkdir()
            x_tab = torch.tensor(table.to_numpy(np.float32))
            for i, lr in enumerate(LEARNING_RATES):
                deadline["at"] = start + args.budget_s * (i + 1) / len(LEARNING_RATES)
                torch.manual_seed(args.seed)
                with contextlib.redirect_stdout(io.StringIO()):
                    dm = prepare_fusion_data(
                        prediction_task="binary" if binary else "multiclass",
                        fusion_model=model_class,
                        data_paths={"tabular1": str(tmp / "tabular1.csv"), "image": str(tmp / "image.pt")},
                        output_paths={d: str(p) for d, p in paths.items()},
                        multiclass_dimensions=None if binary else k,
                        test_indices=list(range(len(tr), len(part))),
                        layer_mods=layer_mods,
                        batch_size=batch,
                    )
                    trained = train_and_save_models(
                        data_module=dm,
                        fusion_model=model_class,
                        layer_mods=layer_mods,
                        enable_checkpointing=False,
                        new_optimiser={"learning rate": lr},
                    )[0]
                p_val = predict(trained.model, x_tab[va], images[va])
                loss = log_loss(y[va], p_val)
                if best is None or loss < best[1]:
                    best = (trained, loss, lr)
                epochs.append(int(trained.current_epoch))
            if args.peer in ONE_AT_A_TIME:
                proba[te] = predict(best[0].model, x_tab[te], images[te], batch=1)
                batched[te] = predict(best[0].model, x_tab[te], images[te])
            else:
                proba[te] = predict(best[0].model, x_tab[te], images[te])
        seconds.append(time.perf_counter() - start)
        chosen.append(best[2])
        batches.append(batch)
    notes = {
        "model": f"{module}.{cls}",
        "learning_rate_per_fold": chosen,
        "epochs_per_fit": epochs,
        "batch_size_per_fold": batches,
        "by_hand": "median imputation with missing indicators, one-hot categories with a 'missing' level and "
        "standardisation (fusilli reads numbers only); images in [0, 1], colour converted to gray (its 2-D models "
        "read one channel); its image layers padded through layer_mods for 64 px; the grouped validation split "
        "given as test_indices (its default splits rows at random, and it validates on its test split); a batch "
        "size that leaves no last batch of one row (fusilli fails on it); a time "
        "limit added to its trainer; predictions for new rows written by hand (its eval module plots, and needs "
        "CSV files); rows without a record or an image cannot be predicted",
    }
    if args.peer in ONE_AT_A_TIME:
        notes["answers"] = "each test row alone (a batch of one): its attention mixes the rows of a batch"
        notes["macro_auroc_in_batches_of_256"] = macro_auroc(y, batched)
    write(args.out, proba, seconds, notes)


if __name__ == "__main__":
    main()
