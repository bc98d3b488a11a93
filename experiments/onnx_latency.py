"""Latency of the exported ONNX graph in onnxruntime against the same computation in torch.

Exports a model (``fusion.export.export_onnx``) and times, on identical inputs, the
graph that is exported run by torch (``fusion.export.calibrated_network``: the
inference copy of the network, softmax, calibration) and by onnxruntime: one patient
(batch 1, median and p95 over ``--reps`` calls after a warm-up) and batches of 64
(images per second). Both run on one thread (``torch.set_num_threads(1)``,
``intra_op_num_threads=1``), as the service runs each request. Their largest
difference in probability is reported beside the timings.

    python experiments/onnx_latency.py --model RUN_DIR [--reps 500] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from fusion import FusionClassifier
from fusion.export import calibrated_network, export_onnx


def _inputs(clf, batch: int, rng) -> dict[str, np.ndarray]:
    out = {}
    for m in clf.modalities_:
        if m == "image":
            out["image"] = rng.random((batch, clf.image_channels_, clf.image_size_, clf.image_size_), dtype=np.float32)
        else:
            out["tabular"] = rng.standard_normal((batch, clf.preprocessor_.n_features_out), dtype=np.float32)
    if len(clf.modalities_) > 1:
        out["presence"] = np.ones((batch, len(clf.modalities_)), dtype=np.float32)
    return out


def _time(fn, reps: int) -> np.ndarray:
    for _ in range(max(10, reps // 10)):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return np.asarray(times) * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="run folder written by fusion.train (a network model)")
    p.add_argument("--reps", type=int, default=500)
    p.add_argument("--out")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    clf = FusionClassifier.load(args.model)
    module = calibrated_network(clf)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(clf, Path(tmp) / "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    report = {"model": str(args.model), "image_size": clf.image_size_, "modalities": list(clf.modalities_)}
    for batch, reps in ((1, args.reps), (64, max(20, args.reps // 10))):
        feeds = _inputs(clf, batch, rng)
        tensors = [torch.from_numpy(v) for v in feeds.values()]

        def run_torch(tensors=tensors):
            with torch.inference_mode():
                return module(*tensors)

        def run_onnx(feeds=feeds):
            return session.run(["probabilities"], feeds)[0]

        diff = float(np.abs(run_torch().numpy() - run_onnx()).max())
        t_torch, t_onnx = _time(run_torch, reps), _time(run_onnx, reps)
        key = f"batch_{batch}"
        report[key] = {
            "torch_ms_p50": round(float(np.median(t_torch)), 3),
            "torch_ms_p95": round(float(np.percentile(t_torch, 95)), 3),
            "onnxruntime_ms_p50": round(float(np.median(t_onnx)), 3),
            "onnxruntime_ms_p95": round(float(np.percentile(t_onnx, 95)), 3),
            "max_abs_diff": diff,
        }
        if batch > 1:
            report[key]["torch_images_per_s"] = round(batch / (np.median(t_torch) / 1000))
            report[key]["onnxruntime_images_per_s"] = round(batch / (np.median(t_onnx) / 1000))
    report["versions"] = {"torch": torch.__version__, "onnxruntime": ort.__version__}
    report["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
