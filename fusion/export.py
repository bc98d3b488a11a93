"""Export a trained network to ONNX: ``python -m fusion.export --model RUN_DIR --onnx OUT.onnx``.

The exported graph is the joint network as predictions run it (the inference copy, in
float32) with the rest of the way to the probabilities the library returns:

- inputs ``image`` (batch, C, S, S) float32, the film decoded to one gray channel
  (C = 1), or a colour model's image to its three RGB channels (C = 3, in that order),
  resized to the model's side ``S`` and divided by 255 (the intensity normalisation,
  ``(x - mean) / std``, per channel for colour, is inside the graph); ``tabular`` (batch, F) float32, the
  record preprocessed as ``preprocessing.json`` says; ``presence`` (batch, 2) float32,
  1 where a modality is given and 0 where it is missing (its input is then ignored:
  pass zeros), for fused models only;
- output ``probabilities`` (batch, n_classes): softmax, then the calibration of
  ``calibration.json`` (temperature or vector scaling of the log-probabilities), so
  they equal :meth:`~fusion.classifier.FusionClassifier.predict_proba`'s;
- a dynamic batch axis; the classes, modalities, columns, image side and channels are
  in the model's metadata (``metadata_props``).

The preprocessing state stays in the model folder's JSON, read by the consumer; only
the joint backend (``--fusion joint``, every single-modality network) is exported.
XGBoost models are refused with a message pointing at their own portable JSON, and the
``stacked`` and ``gbm`` strategies (scikit-learn and XGBoost members around a frozen
backbone) are refused naming the strategy.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from fusion.cli import (
    add_verbosity_arguments,
    fail,
    log_to_terminal,
    output_file,
    positive_int,
    verbosity,
    write_failure,
)

logger = logging.getLogger(__name__)

OPSET = 17
FLOOR = 1e-12  # as fusion.evaluation.calibration: log-probabilities are taken of p >= 1e-12


def calibrated_network(clf):
    """What is exported, as a torch module: the classifier's network (its inference
    copy, float32) followed by softmax and calibration.

    Called with the inputs in the exported order (``image``, ``tabular``, then
    ``presence`` for a fused model; see the module docstring), it returns the
    calibrated probabilities, shape (batch, n_classes).
    """
    import torch

    from fusion.nets.joint import inference_copy

    calibration = clf.calibration_
    modalities = clf.modalities_

    class Calibrated(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network
            self.method = calibration.method
            if calibration.method == "temperature":
                self.register_buffer("scale", torch.tensor(1.0 / calibration.temperature, dtype=torch.float32))
                self.register_buffer("shift", torch.zeros((), dtype=torch.float32))
            elif calibration.method == "vector":
                self.register_buffer("scale", torch.tensor(calibration.scale, dtype=torch.float32))
                self.register_buffer("shift", torch.tensor(calibration.shift, dtype=torch.float32))

        def forward(self, *inputs):
            fused = len(modalities) > 1
            given = dict(zip(modalities, inputs[: len(modalities)], strict=True))
            presence = inputs[len(modalities)] if fused else None
            logits = self.network(given, presence=presence).float()
            proba = torch.softmax(logits, dim=1)
            if self.method == "none":
                return proba
            logp = torch.log(torch.clamp(proba, min=FLOOR, max=1.0))
            return torch.softmax(logp * self.scale + self.shift, dim=1)

    return Calibrated(inference_copy(clf.network_, "fp32")).eval()


def check_exportable(clf, model_dir: str | Path = "the model") -> None:
    """Refuse, with what to do instead, a model the ONNX export does not cover.

    Raises
    ------
    ValueError
        For an XGBoost booster, or a ``stacked`` or ``gbm`` model.
    """
    backend = clf.backend_
    if backend.exportable:
        return
    if backend.portable_file:
        raise ValueError(
            f"{model_dir} holds an XGBoost model, which is not exported to ONNX: its booster is already in "
            f"XGBoost's own portable JSON format, {Path(model_dir) / backend.portable_file} (no pickle; XGBoost "
            "loads it from C, Java, R or Python), with preprocessing.json and calibration.json beside it"
        )
    raise ValueError(
        f"{model_dir} holds a {backend.name!r} fusion model (fusion = {clf.config_.fusion!r}); ONNX export covers "
        "the joint network only (--fusion joint, and single-modality networks): the stacked and gbm strategies "
        "join scikit-learn and XGBoost members that one ONNX graph does not hold"
    )


def export_onnx(model, path: str | Path, *, opset: int = OPSET) -> Path:
    """Write ``model``'s network, calibration included, as an ONNX file.

    Parameters
    ----------
    model : FusionClassifier, str or Path
        A fitted classifier or its run folder.
    path : str or Path
        The file to write (written whole or not at all).
    opset : int
        ONNX operator set.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        A model the export does not cover (see :func:`check_exportable`).
    ImportError
        Without the ``onnx`` package (``pip install "fusion[export]"``).
    """
    import torch

    from fusion.classifier import FusionClassifier
    from fusion.persistence import atomic_write

    model_dir = model if isinstance(model, (str, Path)) else "the model"
    clf = FusionClassifier.load(model) if isinstance(model, (str, Path)) else model
    check_exportable(clf, model_dir)
    try:
        import onnx
    except ImportError as err:
        raise ImportError(f"ONNX export needs the onnx package ({err}): pip install 'fusion[export]'") from None
    wrapper = calibrated_network(clf)
    examples, names = [], []
    for m in clf.modalities_:
        if m == "image":
            examples.append(torch.rand(2, clf.image_channels_, clf.image_size_, clf.image_size_))
        else:
            examples.append(torch.zeros(2, clf.preprocessor_.n_features_out))
        names.append(m)
    if len(clf.modalities_) > 1:
        examples.append(torch.ones(2, len(clf.modalities_)))
        names.append("presence")
    path = Path(path)

    def write(tmp: Path) -> None:
        # TorchScript-based export: exact for this graph of convolutions and small
        # layers, and a fraction of a second, where the dynamo-based exporter takes
        # ~10 s. The deprecation warning says the default changed, not that it is wrong.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                tuple(examples),
                str(tmp),
                input_names=names,
                output_names=["probabilities"],
                dynamic_axes={n: {0: "batch"} for n in [*names, "probabilities"]},
                opset_version=opset,
                dynamo=False,
            )
        graph = onnx.load(str(tmp))
        onnx.checker.check_model(graph)
        onnx.helper.set_model_props(graph, _metadata(clf))
        onnx.save(graph, str(tmp))

    atomic_write(path, write)
    logger.info("exported %s to %s", model_dir, path)
    return path


def _metadata(clf) -> dict[str, str]:
    """What a consumer needs beside the graph, as ONNX metadata (strings)."""
    from fusion.version import __version__

    meta = {
        "fusion_version": __version__,
        "classes": json.dumps(list(clf.classes_)),
        "modalities": json.dumps(list(clf.modalities_)),
        "calibration": clf.calibration_.method,
        "inputs": "image: (batch, C, S, S) float32, pixels / 255 (C = 1 gray, 3 RGB); tabular: (batch, F) float32, "
        "preprocessed as preprocessing.json says; presence: (batch, n_modalities) float32, 1 given / 0 missing",
    }
    if clf.image_size_:
        meta["image_size"] = str(clf.image_size_)
        meta["image_channels"] = str(clf.image_channels_)
    if clf.preprocessor_ is not None:
        meta["tabular_columns"] = json.dumps(clf.preprocessor_.columns_)
    return meta


def main(argv: list[str] | None = None, *, prog: str = "python -m fusion.export") -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Export a trained network (calibration included) to ONNX for runtimes outside Python.",
    )
    p.add_argument("--model", required=True, help="run folder written by fusion.train")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write (a new .onnx file)")
    p.add_argument("--opset", type=positive_int, default=OPSET, help=f"ONNX operator set (default {OPSET})")
    add_verbosity_arguments(p)
    args = p.parse_args(argv)
    verbose = verbosity(args) > 0
    try:
        out = output_file(args.onnx, "--onnx", inputs=[args.model], suffix=".onnx")
        from fusion.classifier import FusionClassifier

        with log_to_terminal(verbosity(args)):
            clf = FusionClassifier.load(args.model)
            check_exportable(clf, args.model)
    except (ValueError, FileNotFoundError, ImportError) as err:
        return fail(err, p, verbose=verbose)
    try:
        with log_to_terminal(verbosity(args)):
            export_onnx(clf, out, opset=args.opset)
    except (ValueError, ImportError) as err:
        return fail(err, p, verbose=verbose)
    except OSError as err:  # a full disk: the temporary file is removed, the name never created
        print(f"error: {write_failure(err, out, 'the ONNX model')}", file=sys.stderr)
        return 2
    print(f"ONNX model written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
