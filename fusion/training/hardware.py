"""The hardware a network runs on: device, numeric precision, memory layout."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from fusion.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU. Asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "train.device: 'cuda' was asked for but no CUDA GPU is available; use 'cpu' or 'auto'",
            field="train.device",
            value=name,
            accepted="'cpu' or 'auto' (no CUDA GPU is available)",
        )
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 autocast on CUDA and on CPUs with native bf16 units, else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device: torch.device, precision: str) -> nn.Module:
    """Move the model, in channels-last memory layout: oneDNN's CPU convolutions (fp32
    as well as bf16) and cuDNN's are fastest in it, and a network with no convolution
    is unaffected."""
    return model.to(device).to(memory_format=torch.channels_last)


def layout(inputs: dict) -> dict:
    """Images in the channels-last layout the model's weights are in (see
    :func:`prepare_model`)."""
    image = inputs.get("image")
    if image is not None:
        inputs = {**inputs, "image": image.contiguous(memory_format=torch.channels_last)}
    return inputs


def channels_first(images: torch.Tensor) -> torch.Tensor:
    """A batch of decoded images, (n, S, S) gray or (n, S, S, C) colour, as the networks
    take them: (n, C, S, S). Colour is a view whose memory is already channels-last, so
    :func:`layout` then copies nothing."""
    return images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
