"""Speed and memory of training, prediction and explanation, in one process.

On the embedded synthetic cohort, for one backbone, measures:

- ``train_images_per_s``: the real training loop (``FusionClassifier.fit``: batch
  slicing, uint8 -> float, augmentation, forward, backward, optimiser), validation
  excluded; ``bare_step_images_per_s``: the same model's training step on pre-made
  tensors of the same batch size; ``pipeline_efficiency`` = their ratio;
- ``predict_ms_p50`` / ``p95``: one ``predict(record, image_path)`` from a PNG file;
  ``decode_ms_p50``: decoding and resizing that file alone; ``bare_forward_ms_p50``:
  the forward of the network predictions run (``inference_copy``) on a ready tensor
  of batch 1, in a tight loop;
- ``sequence_ms_p50``: decode that file, then the bare forward on a ready tensor, one
  after the other, as a prediction must (no validation, preprocessing or softmax):
  the floor under ``predict``. ``forward_after_decode_ms_p50`` is its forward part:
  on a small model it is well above ``bare_forward_ms_p50`` because the decode has
  flushed the caches the tight loop keeps warm. ``predict_overhead_ms`` =
  ``predict_ms_p50`` - ``sequence_ms_p50``: all the work ``predict`` adds;
- ``predict_batch_images_per_s``: ``predict_proba`` over 256 (record, image) pairs;
- ``explain_s_p50``: ``explain(record, image)`` (Integrated Gradients, 50 steps, plus
  the modality ablation);
- ``image_branch_mflops``: floating-point operations of one forward of the image
  branch for one film (multiply-add = 2), counted by ``torch.utils.flop_counter``;
- ``peak_rss_mb`` and the machine, with its CPU capability (``cpu_capability``:
  AVX2, AVX512...; ``bf16``: whether the CPU has bf16 units) so that figures from
  different kinds of CPU are never compared blind.

Medians over repetitions after a warm-up. Do not run two benchmarks at once.

    python experiments/bench.py [--backbone custom|densenet169] [--precision auto|fp32|bf16] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fusion import Config, FusionClassifier, load_dataset, synthetic, tune_allocator
from fusion.data import load_image
from fusion.nets.joint import inference_copy


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn, repeat: int, warmup: int = 2, returns: bool = False):
    """Seconds per call of ``fn``; with ``returns``, also what each call returned."""
    for _ in range(warmup):
        fn()
    out, values = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        values.append(fn())
        out.append(time.perf_counter() - start)
    return (np.asarray(out), np.asarray(values)) if returns else np.asarray(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="custom", choices=["custom", "densenet169"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--n-train", type=int, help="training images (default: 1400 custom, 192 densenet169)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="few repetitions: checks the script, not the figures")
    args = p.parse_args()
    tune_allocator()

    cfg = Config()
    cfg.image.backbone = args.backbone
    cfg.train.precision, cfg.train.device, cfg.train.epochs = args.precision, args.device, args.epochs
    cfg = cfg.resolved()
    size = cfg.image.image_size
    n_train = args.n_train or (1400 if args.backbone == "custom" else 192)
    if args.backbone == "densenet169":
        cfg.train.batch_size = 16
    ds = load_dataset(None, image_size=size, synthetic_n=n_train + 64, seed=0)
    train, val = ds.subset(np.arange(n_train)), ds.subset(np.arange(n_train, n_train + 64))

    # The real training loop.
    clf = FusionClassifier(cfg).fit(train, val)
    history = clf.history_["history"][1:] or clf.history_["history"]  # the first epoch warms up
    train_ips = sum(h["train_images"] for h in history) / sum(h["train_seconds"] for h in history)
    device, precision = torch.device(clf.history_["device"]), clf.history_["precision"]
    model = clf.network_

    # The bare training step on ready tensors, same model, batch size and settings.
    bs = cfg.train.batch_size
    image = torch.rand(bs, 1, size, size, device=device).contiguous(memory_format=torch.channels_last)
    inputs = {"image": image, "tabular": torch.randn(bs, clf.preprocessor_.n_features_out, device=device)}
    labels = torch.randint(0, 3, (bs,), device=device)
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if precision == "bf16"
        else torch.autocast(device.type, enabled=False)
    )

    def step():
        model.train()
        with autocast:
            logits, aux = model.forward_with_aux(inputs)
            loss = F.cross_entropy(logits.float(), labels) + sum(
                0.5 * F.cross_entropy(a.float(), labels) for a in aux.values()
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    reps = 0.2 if args.quick else 1.0
    n_steps = max(3, round((8 if args.backbone == "densenet169" else 40) * reps))
    bare_ips = bs / float(np.median(timed(step, n_steps, warmup=3)))
    model.eval()

    # Prediction from a file, as a user calls it.
    record, picture = synthetic.example(seed=7, image_size=1024)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "film.png"
        picture.save(path)
        one = {
            "image": torch.rand(1, 1, size, size, device=device),
            "tabular": torch.randn(1, clf.preprocessor_.n_features_out, device=device),
        }
        network = inference_copy(model, precision)  # what predict runs: BatchNorm folded, weights pre-cast

        def forward():
            with torch.no_grad():  # an inference copy holds its own precision
                network(one)
            if device.type == "cuda":
                torch.cuda.synchronize()

        def sequence():
            start = time.perf_counter()
            load_image(path, size)
            middle = time.perf_counter()
            forward()
            return middle - start

        n = max(5, round((60 if args.backbone == "custom" else 20) * reps))
        predict = timed(lambda: clf.predict(record, path), n, warmup=3)
        decode = timed(lambda: load_image(path, size), n, warmup=3)
        bare_forward = timed(forward, n, warmup=3)
        sequence_total, sequence_decode = timed(sequence, n, warmup=3, returns=True)
    n_batch = 64 if args.quick else 256
    table, images = synthetic.make_cohort(n_batch, seed=3, image_size=size)
    features = table[list(synthetic.FEATURES)]
    batch = timed(lambda: clf.predict_proba(features, list(images)), 1 if args.quick else 3, warmup=1)
    explain = timed(lambda: clf.explain(record, picture), 2 if args.quick else 5, warmup=1)
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        model.branches["image"](torch.rand(1, 1, size, size, device=device))

    result = {
        "backbone": args.backbone,
        "image_size": size,
        "batch_size": bs,
        "precision": precision,
        "n_train": n_train,
        "train_images_per_s": round(train_ips, 1),
        "bare_step_images_per_s": round(bare_ips, 1),
        "pipeline_efficiency": round(train_ips / bare_ips, 3),
        "predict_ms_p50": round(1000 * float(np.median(predict)), 2),
        "predict_ms_p95": round(1000 * float(np.percentile(predict, 95)), 2),
        "decode_ms_p50": round(1000 * float(np.median(decode)), 2),
        "bare_forward_ms_p50": round(1000 * float(np.median(bare_forward)), 2),
        "sequence_ms_p50": round(1000 * float(np.median(sequence_total)), 2),
        "forward_after_decode_ms_p50": round(1000 * float(np.median(sequence_total - sequence_decode)), 2),
        "predict_overhead_ms": round(1000 * float(np.median(predict) - np.median(sequence_total)), 2),
        "predict_batch_images_per_s": round(n_batch / float(np.median(batch)), 1),
        "explain_s_p50": round(float(np.median(explain)), 3),
        "image_branch_mflops": round(flops.get_total_flops() / 1e6, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": {
            "cpu": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "python": platform.python_version(),
        },
    }
    # The target, literally: tight-loop forward and decode, each measured alone.
    result["predict_within_target"] = (
        result["predict_ms_p50"] <= 1.5 * result["bare_forward_ms_p50"] + result["decode_ms_p50"]
    )
    # The same allowance over what a prediction cannot avoid: at most half a bare
    # forward more than decoding and then running the network.
    result["predict_overhead_within_half_forward"] = (
        result["predict_overhead_ms"] <= 0.5 * result["bare_forward_ms_p50"]
    )
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
