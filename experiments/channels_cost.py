"""What colour costs: images per second of an image branch reading 1 or 3 channels.

Times the image branch as training runs it (forward, backward and an AdamW step on a
batch of 32, channels-last, under the precision training would choose here, or
``--precision``) and as prediction runs it (the inference copy, batches of 256), for
each size and channel count. Gray and colour are measured back to back, round after
round; each rate is the median over rounds and each ratio the median of the rounds'
ratios, so load from other processes on a shared machine falls on both alike.

    python experiments/channels_cost.py [--backbone custom] [--sizes 64 96] [--rounds 5] [--seconds 1.5]
        [--precision auto|fp32|bf16] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from fusion.nets.backbones import ImageBranch, create_backbone
from fusion.nets.joint import inference_copy
from fusion.training.hardware import autocast, resolve_precision


def _rate(step, batch: int, seconds: float) -> float:
    """Images per second of ``step`` (one batch), run for about ``seconds`` after a warm-up."""
    step()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    return count * batch / (time.perf_counter() - start)


def _trainer(backbone: str, size: int, channels: int, precision: str):
    branch = ImageBranch(create_backbone(backbone, in_chans=channels)).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(branch.parameters(), lr=1e-3)
    x = torch.rand(32, channels, size, size).contiguous(memory_format=torch.channels_last)

    def step():
        with autocast(torch.device("cpu"), precision):
            loss = branch(x).float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, len(x)


def _predictor(backbone: str, size: int, channels: int, precision: str):
    branch = inference_copy(ImageBranch(create_backbone(backbone, in_chans=channels)), precision)
    x = torch.rand(256, channels, size, size).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.no_grad():
            branch(x)

    return step, len(x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="custom")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.5)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    cases = [(kind, size, channels) for kind in ("train", "predict") for size in args.sizes for channels in (1, 3)]
    built = {c: (_trainer if c[0] == "train" else _predictor)(args.backbone, c[1], c[2], precision) for c in cases}
    rates: dict = {c: [] for c in cases}
    ratios: dict = {(k, s): [] for k, s, c in cases if c == 1}
    for _ in range(args.rounds):
        for kind, size in ratios:
            for channels in (1, 3):
                step, batch = built[(kind, size, channels)]
                rates[(kind, size, channels)].append(_rate(step, batch, args.seconds))
            ratios[(kind, size)].append(rates[(kind, size, 3)][-1] / rates[(kind, size, 1)][-1])
    out = {
        "backbone": args.backbone,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "images_per_second": {
            f"{k} {s} px, {c} channel(s)": round(statistics.median(rates[(k, s, c)])) for k, s, c in cases
        },
    }
    for (kind, size), values in ratios.items():
        out[f"colour / gray, {kind} {size} px"] = round(statistics.median(values), 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
