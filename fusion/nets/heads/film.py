"""The ``film`` head: the record modulates the image features.

The record's embedding ``t`` gives each channel of the image embedding ``z`` a scale
and a shift (feature-wise linear modulation, Perez et al. 2018), and the classifier
reads the modulated image features::

    film(z, t) = (1 + tanh(W_s t + b_s)) * z + (W_b t + b_b)

The scale stays in (0, 2), so the record can damp or stress a channel but never flip
its sign; it starts at exactly 1 (``W_s``, ``b_s`` start at zero), so training begins
from an image model with an additive record term and learns the interaction. This is
the design of MetaBlock (Pacheco & Krohling, IEEE JBHI 2021), which gates the image
features with the metadata and beat concatenation on skin-lesion images with age, sex
and body site; MetaBlock's own form, ``sigmoid(tanh(z * f(t)) + g(t))``, has no
identity to fall back to when the record is missing, so the affine form is used.

Missing modalities, through the presence weights ``w_image`` and ``w_record``::

    film = (1 + w_record * tanh(W_s t + b_s)) * (w_image * z) + w_record * (W_b t + b_b)

- record missing: scale 1, shift 0 exactly, so the classifier reads the image
  embedding unchanged: the image alone answers (the image path);
- image missing: the image features are zeros, and the classifier reads the shift
  ``W_b t + b_b`` alone: the record's own path, a linear map of the record embedding
  into the image's feature space, which modality dropout trains on the rows it hides
  the image of;
- both missing: the classifier reads zeros (its bias: the training prior).
"""

from __future__ import annotations

import torch
from torch import nn

from fusion.nets.heads.base import FusionHead


class FilmHead(FusionHead):
    """Per-channel scale and shift of the image embedding from the record's.

    ``output_dim`` is the image embedding's size.

    Example
    -------
    >>> head = FilmHead({"image": 4, "tabular": 2}, width=8)
    >>> z = torch.rand(3, 4)
    >>> torch.equal(head({"image": z, "tabular": torch.rand(3, 2)}, torch.tensor([[1.0, 0.0]] * 3)), z)
    True
    """

    def __init__(self, dims: dict[str, int], width: int):
        super().__init__(dims, width)
        image, record = dims["image"], dims["tabular"]
        self.scale = nn.Linear(record, image)
        self.shift = nn.Linear(record, image)
        nn.init.zeros_(self.scale.weight)  # scale 1 at the start: an image model plus a record term
        nn.init.zeros_(self.scale.bias)
        self.output_dim = image

    def forward(self, embeddings: dict[str, torch.Tensor], presence: torch.Tensor | None) -> torch.Tensor:
        z, t = embeddings["image"], embeddings["tabular"]
        scale, shift = torch.tanh(self.scale(t)), self.shift(t)
        w_image, w_record = self.weight(presence, "image", z), self.weight(presence, "tabular", z)
        if presence is not None:
            z, scale, shift = z * w_image, scale * w_record, shift * w_record
        return z + scale * z + shift
