"""What a result was computed with: the versions of the packages that shape it and the
machine's kind. A run folder records both (``metrics.json`` and the model card), because
the same command can give other figures under another torch or on a CPU without bf16
units, and a reader comparing two runs must be able to tell.

This module imports nothing heavy at load time: the versions are read from the installed
packages' metadata, not by importing them.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

PACKAGES = (
    "fusion",
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "scikit-learn",
    "xgboost",
    "pillow",
    "captum",
    "safetensors",
)
"""The distributions whose versions a run records: fusion and what its figures depend on."""


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """``{distribution: version}``, with Python's own first; a distribution that is not
    installed reads ``"not installed"`` (an optional one may be absent)."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> dict:
    """The machine's kind, as the figures depend on it: operating system, processor,
    torch's CPU capability (``avx512``, ``avx2``, ...) and whether the CPU has bf16
    units (without them bf16 is emulated, ~100x slower), cores, and the CUDA device
    if there is one."""
    import torch

    record = {
        "system": f"{platform.system()} {platform.release()}",
        "processor": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        record["cuda"] = torch.cuda.get_device_name(0)
    return record


def environment() -> dict:
    """``{"versions": ..., "machine": ...}``: what a run folder records."""
    return {"versions": versions(), "machine": machine()}
