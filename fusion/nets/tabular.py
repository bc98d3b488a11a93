"""The structured-data branch: an MLP over preprocessed clinical features.

Its input is the output of :class:`fusion.preprocessing.TabularPreprocessor`
(standardised numbers, one-hot categories, missing-value indicators); like the image
branch it exposes ``output_dim`` and ``forward_features``.

Example
-------
>>> import torch
>>> mlp = TabularMLP(n_inputs=12)
>>> mlp(torch.zeros(3, 12)).shape == (3, mlp.output_dim)
True
"""

from __future__ import annotations

import torch
from torch import nn


class TabularMLP(nn.Module):
    """Fully connected layers with ReLU and dropout.

    Parameters
    ----------
    n_inputs : int
        Number of preprocessed feature columns.
    hidden : tuple of int
        Widths of the hidden layers; the last one is ``output_dim``.
    dropout : float
    """

    def __init__(self, n_inputs: int, hidden: tuple[int, ...] = (64, 32), dropout: float = 0.1):
        super().__init__()
        if n_inputs < 1:
            raise ValueError(f"the tabular branch needs at least one input feature; got {n_inputs}")
        if not hidden:
            raise ValueError("hidden must list at least one layer width")
        layers, width = [], n_inputs
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.net = nn.Sequential(*layers)
        self.output_dim = width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
