"""AutoGluon's MultiModalPredictor over the film and the record in one network: a timm
image backbone, its numerical and categorical MLPs and its fusion MLP, trained with its
own data processing (imputation, scaling, category encoding, image transforms), on the
fold's grouped inner split as its tuning data.

Nothing may download here, so the backbone starts from random weights, and is ResNet-18
rather than its default Swin-B (a transformer trained from scratch on a few hundred films
has no chance, and is slow on 2 cores). ``MultiModalPredictor(pretrained=False)`` is
documented for this, but in 1.6.3 ``fit`` ignores it (only zero-shot prediction passes
it on) and timm then fetches the weights from the Hugging Face hub; the working way is
its local-checkpoint path: a folder with ``config.json`` and ``pytorch_model.bin`` of a
randomly initialised timm model, given as ``model.timm_image.checkpoint_name``.

Images are given as files, as it requires: each fold's films written as PNG, at fusion's
image size (``model.timm_image.image_size``). Its defaults otherwise; the learning rate
tried at its default 1e-4 and at 1e-3 (a network from scratch usually wants more),
chosen by log loss on the inner split, each with half the fold's budget as its
``time_limit``."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from common import Payload, by_class, log_loss, parse_args, require, write

LEARNING_RATES = (1e-4, 1e-3)
BACKBONE = "resnet18"


def random_backbone(folder: Path) -> str:
    """A randomly initialised timm backbone saved as AutoGluon reads a local checkpoint."""
    import json

    import timm
    import torch

    model = timm.create_model(BACKBONE, pretrained=False, num_classes=0)
    folder.mkdir()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    config = {"architecture": BACKBONE, "num_features": model.num_features, "pretrained_cfg": model.pretrained_cfg}
    (folder / "config.json").write_text(json.dumps(config, default=str))
    return str(folder)


def main() -> None:
    args = parse_args()
    require("autogluon.multimodal", '"autogluon.multimodal"')
    from autogluon.multimodal import MultiModalPredictor
    from PIL import Image

    data = Payload(args.payload)
    k = len(data.classes)
    image_size = int(data.images.shape[1])
    proba, seconds, chosen = np.zeros((len(data.labels), k)), [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        backbone = random_backbone(tmp / "backbone")
        paths = []
        for i, image in enumerate(data.images):
            path = tmp / f"{i}.png"
            Image.fromarray(image).convert("RGB").save(path)
            paths.append(str(path))
        table = data.records.copy()
        table["film"] = paths
        table["__label__"] = [data.classes[i] for i in data.labels]
        column_types = {"film": "image_path"}
        for name in data.numeric:
            column_types[name] = "numerical"
        for name in data.categorical:
            column_types[name] = "categorical"
        for fold in data.folds:
            start = time.perf_counter()
            best = None
            for lr in LEARNING_RATES:
                predictor = MultiModalPredictor(
                    label="__label__",
                    problem_type="multiclass" if k > 2 else "binary",
                    eval_metric="log_loss",
                    path=str(tmp / f"model_{len(seconds)}_{lr}"),
                    verbosity=0,
                )
                predictor.fit(
                    table.iloc[fold["inner_train"]],
                    tuning_data=table.iloc[fold["inner_val"]],
                    column_types=column_types,
                    time_limit=args.budget_s / len(LEARNING_RATES),
                    seed=args.seed,
                    hyperparameters={
                        "model.names": ["timm_image", "numerical_mlp", "categorical_mlp", "fusion_mlp"],
                        "model.timm_image.checkpoint_name": backbone,
                        "model.timm_image.image_size": image_size,
                        "optim.lr": lr,
                        "env.num_workers": 0,
                        "env.num_workers_inference": 0,
                    },
                )
                val = predictor.predict_proba(table.iloc[fold["inner_val"]].drop(columns="__label__"))
                loss = log_loss(data.labels[fold["inner_val"]], by_class(val, data.classes))
                if best is None or loss < best[1]:
                    best = (predictor, loss, lr)
            got = best[0].predict_proba(table.iloc[fold["test"]].drop(columns="__label__"))
            proba[fold["test"]] = by_class(got, data.classes)
            seconds.append(time.perf_counter() - start)
            chosen.append(best[2])
    notes = {
        "backbone": f"{BACKBONE}, no pretrained weights (nothing may download)",
        "learning_rate_per_fold": chosen,
        "by_hand": "films written as image files (it reads paths); the grouped tuning split (its default holds out "
        "rows at random); a randomly initialised backbone saved as a local checkpoint (pretrained=False is "
        "ignored by fit in 1.6.3, which then downloads)",
    }
    write(args.out, proba, seconds, notes)


if __name__ == "__main__":
    main()
