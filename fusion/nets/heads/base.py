"""What every fusion head honours.

A head is an ``nn.Module`` built from the branches' embedding sizes (in the network's
modality order) and a working width, with ``output_dim``: the size of the vector the
network's classifier reads. It is called with

- ``embeddings``: each modality's embedding, (batch, its size), float; a modality
  whose input is missing has zeros there;
- ``presence``: (batch, n_modalities) in [0, 1], or None when every modality is given
  (the prediction path, which then does no mask arithmetic).

and returns (batch, ``output_dim``). The contract, tested for every head
(``tests/test_heads.py``):

- a modality of presence 0 does not change the output, whatever its embedding: that is
  how a missing input, modality dropout and the modality-share explanation (which
  removes modalities through the presence vector) all reach the head;
- presence 1 everywhere gives what ``presence=None`` gives;
- no batch statistics (no BatchNorm): a head answers one patient as it answers a batch,
  the same in one process or many.
"""

from __future__ import annotations

import torch
from torch import nn


class FusionHead(nn.Module):
    """Base class of the fusion heads (see the module docstring for the contract).

    Parameters
    ----------
    dims : dict of str -> int
        Each modality's embedding size, in the network's modality order.
    width : int
        The head's working width, for heads that have one.
    """

    output_dim: int

    def __init__(self, dims: dict[str, int], width: int):
        super().__init__()
        self.modalities = tuple(dims)

    def forward(self, embeddings: dict[str, torch.Tensor], presence: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def weight(self, presence: torch.Tensor | None, modality: str, like: torch.Tensor) -> torch.Tensor | None:
        """The (batch, 1) presence of ``modality`` in ``like``'s dtype; None when every
        modality is given."""
        if presence is None:
            return None
        i = self.modalities.index(modality)
        return presence[:, i : i + 1].to(like.dtype)
