"""The ``attention`` head: one token per modality, mixed by a small transformer.

Each modality's embedding is projected to a token of the head's width (the projection's
bias tells the tokens apart); a learned summary token ([CLS], as in BERT and ViT) is
put first, two pre-norm transformer layers (four attention heads, a feed-forward layer
twice as wide) let every token read the others, and the summary token, normalised, is
what the classifier reads. In the first layer the image token reads the record's and
the other way round (an interaction that depends on both); in the second the summary
token reads tokens that have already read each other.

Missing modalities are masked out of attention through their presence weights ``w``:
a token's attention weights are ``w_j exp(s_j) / sum_k w_k exp(s_k)`` (the scores
``s`` plus ``log w``), so a token of presence 0 gets exactly zero weight from every
query in every layer and its input cannot reach the output, and a presence between
0 and 1 scales its say smoothly. The summary token is always present, so some
attention remains when every modality is missing (the classifier then reads what the
summary token holds alone: the training prior).

The attention is written out (a few matrix products over three tokens) rather than
taken from ``nn.MultiheadAttention``: its masks are boolean or additive but its fast
path and exporters treat them differently, and the weighted form above needs neither.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fusion.nets.heads.base import FusionHead

HEADS = 4  # attention heads per layer
LAYERS = 2


class AttentionHead(FusionHead):
    """Modality tokens and a summary token through a small transformer.

    Parameters
    ----------
    dims : dict of str -> int
    width : int
        Token width (``head.hidden``); rounded up to a multiple of the number of
        attention heads.

    Example
    -------
    >>> head = AttentionHead({"image": 6, "tabular": 3}, width=16)
    >>> head({"image": torch.rand(2, 6), "tabular": torch.rand(2, 3)}, None).shape
    torch.Size([2, 16])
    """

    def __init__(self, dims: dict[str, int], width: int):
        super().__init__(dims, width)
        width = HEADS * math.ceil(width / HEADS)
        self.tokens = nn.ModuleDict({name: nn.Linear(size, width) for name, size in dims.items()})
        self.summary = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.summary, std=0.02)
        self.layers = nn.ModuleList([Block(width, HEADS) for _ in range(LAYERS)])
        self.norm = nn.LayerNorm(width)
        self.output_dim = width

    def forward(self, embeddings: dict[str, torch.Tensor], presence: torch.Tensor | None) -> torch.Tensor:
        tokens = [self.tokens[name](embeddings[name]) for name in self.modalities]
        batch = tokens[0].shape[0]
        x = torch.stack([self.summary.expand(batch, 1, -1)[:, 0].to(tokens[0].dtype), *tokens], dim=1)
        bias = None
        if presence is not None:
            # log 0 = -inf: a missing token's attention weight is exactly 0 (softmax
            # takes its maximum over the summary token's finite score).
            keep = torch.cat([torch.ones_like(presence[:, :1]), presence], dim=1).float()
            bias = torch.log(keep)[:, None, None, :]  # (batch, 1, 1, keys): every head, every query
        for layer in self.layers:
            x = layer(x, bias)
        return self.norm(x[:, 0])


class Block(nn.Module):
    """One pre-norm transformer layer: attention over the tokens, then a feed-forward
    layer, each added to its input.

    Parameters
    ----------
    width : int
        Token width, a multiple of ``heads``.
    heads : int
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(width // heads)
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``x`` (batch, tokens, width); ``bias`` (batch, 1, 1, tokens) added to the
        attention scores, or None."""
        # (batch, tokens, 3, heads, head width) -> three of (batch, heads, tokens, head width)
        q, k, v = self.qkv(self.norm1(x)).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if bias is not None:
            scores = scores + bias.to(scores.dtype)
        mixed = (scores.softmax(dim=-1) @ v).transpose(1, 2).flatten(2)
        x = x + self.out(mixed)
        return x + self.mlp(self.norm2(x))
