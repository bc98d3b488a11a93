"""Measure training on a folder larger than memory: cache build rate, peak memory,
throughput from disk against throughput from memory.

    python experiments/make_folder.py --n 60000 --out /tmp/cxr60k --workers 2
    python experiments/scale_bench.py --data /tmp/cxr60k --cache-dir /tmp/cxr60k-cache --out scale.json

Steps, each timed on its own (run nothing else on the machine meanwhile):

1. the image cache is built with 1 worker, then deleted and built again with 2 (or
   ``--workers``), through ``fusion.data.loaders.load_dataset``: films/s of each;
2. ``python -m fusion.train --data DATA --image-size 224 --epochs 1 --memory-map always``
   (images read batch by batch from the cache on disk) and the same with
   ``--memory-map never`` (the whole cache read into memory), each in a fresh
   process: peak resident memory of the process (``ru_maxrss``), wall time, and
   training images/s (``train_images / train_seconds`` of ``metrics.json``).

The JSON written to ``--out`` holds every figure, the cache size in GB and the CPU
kind (cpu_capability, bf16 units).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_rate(data: Path, cache: Path, workers: int, size: int) -> dict:
    """Build the cache from nothing with ``workers`` processes; its films/s."""
    from fusion.data.loaders import load_dataset

    shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    ds = load_dataset(data, image_size=size, cache_dir=cache, cache_workers=workers, memory_map=True)
    seconds = time.perf_counter() - t0
    gb = sum(p.stat().st_size for p in cache.glob("images-*.npy")) / 1e9
    return {
        "workers": workers,
        "films": len(ds) + len(ds.skipped),
        "seconds": round(seconds, 1),
        "films_per_s": round((len(ds) + len(ds.skipped)) / seconds, 1),
        "cache_gb": round(gb, 2),
    }


def train_run(data: Path, cache: Path, mode: str, size: int, epochs: int) -> dict:
    """One ``fusion.train`` process reading its images ``mode`` (always/never mapped)."""
    out = Path(tempfile.mkdtemp(prefix=f"scale-{mode}-"))
    shutil.rmtree(out)
    command = [
        sys.executable,
        "-m",
        "fusion.train",
        "--data",
        str(data),
        "--image-size",
        str(size),
        "--epochs",
        str(epochs),
        "--cache-dir",
        str(cache),
        "--memory-map",
        mode,
        "--out",
        str(out),
        "--quiet",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)  # this process's own peak, not any other child's
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command)} failed with exit status {os.waitstatus_to_exitcode(status)}")
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    images = sum(h["train_images"] for h in history)
    seconds = sum(h["train_seconds"] for h in history)
    shutil.rmtree(out, ignore_errors=True)
    return {
        "memory_map": mode,
        "command": " ".join(command[1:]),
        "wall_s": round(wall, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3),  # ru_maxrss is in KiB on Linux
        "train_images": images,
        "train_seconds": round(seconds, 1),
        "train_images_per_s": round(images / seconds, 1),
        "test_macro_f1": round(metrics["test"]["macro_f1"], 3),
        "n_train": metrics["n_train"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder from experiments/make_folder.py")
    p.add_argument("--cache-dir", required=True, help="a cache folder of its own (it is deleted and rebuilt)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to build the cache with")
    p.add_argument("--skip-build", action="store_true", help="use the cache as it is (measure training only)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    import torch

    from fusion.data.cache import available_cores

    data, cache = Path(args.data), Path(args.cache_dir)
    result = {
        "machine": {
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
            "cores": available_cores(),
        },
        "image_size": args.image_size,
        "build": [],
        "train": [],
    }
    if not args.skip_build:
        for workers in args.workers:  # the last build is the cache training reads
            result["build"].append(build_rate(data, cache, workers, args.image_size))
            print(json.dumps(result["build"][-1]), flush=True)
    for mode in ("always", "never"):
        result["train"].append(train_run(data, cache, mode, args.image_size, args.epochs))
        print(json.dumps(result["train"][-1]), flush=True)
    mapped, memory = result["train"]
    result["disk_over_memory_throughput"] = round(mapped["train_images_per_s"] / memory["train_images_per_s"], 3)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("disk_over_memory_throughput",)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
