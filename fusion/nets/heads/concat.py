"""The ``concat`` head: the branches' embeddings side by side.

With two or more modalities a 0/1 presence flag per modality follows the embeddings,
so the classifier can tell a missing modality from one whose embedding happens to be
small; a modality of presence ``w`` enters as ``w`` times its embedding. The head has
no weights: the classifier after it does all the learning. It is the head of every
model saved before heads could be chosen, and gives them bit-identical results.
"""

from __future__ import annotations

import torch

from fusion.nets.heads.base import FusionHead


class ConcatHead(FusionHead):
    """Embeddings (times their presence), then one presence flag per modality.

    ``output_dim`` is the sum of the embedding sizes, plus one flag per modality with
    two or more modalities.

    Example
    -------
    >>> head = ConcatHead({"image": 4, "tabular": 2}, width=8)
    >>> head({"image": torch.ones(3, 4), "tabular": torch.ones(3, 2)}, None).shape
    torch.Size([3, 8])
    """

    def __init__(self, dims: dict[str, int], width: int):
        super().__init__(dims, width)
        self.flags = len(dims) > 1
        self.output_dim = sum(dims.values()) + (len(dims) if self.flags else 0)

    def forward(self, embeddings: dict[str, torch.Tensor], presence: torch.Tensor | None) -> torch.Tensor:
        parts, flags = [], []
        for name in self.modalities:
            emb = embeddings[name]
            weight = self.weight(presence, name, emb)
            if weight is None:  # everything given: no mask arithmetic on the prediction path
                parts.append(emb)
                flags.append(torch.ones(emb.shape[0], 1, device=emb.device))
            else:
                parts.append(emb * weight)
                flags.append(weight)
        if self.flags:
            parts += flags
        return torch.cat(parts, dim=1)
