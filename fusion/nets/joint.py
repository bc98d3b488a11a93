"""The late-fusion network: enabled branches, their embeddings joined, one classifier.

Modalities are data: the same :class:`FusionModel` serves image-only, tabular-only and
fused models; the head is sized from the enabled branches' ``output_dim``. A fusion
head (:mod:`fusion.nets.heads`: ``concat``, ``film``, ``attention``) joins the
embeddings, given each modality's presence (0 where it is missing), and a small
classifier reads what it joined. With more than one modality, training
drops a whole modality at random for some samples (modality dropout), so that the
fused model still answers when an image or a record is missing. Each branch also has
an auxiliary classifier trained beside the fused one: it keeps both branches learning
(one modality cannot starve the other) and gives per-modality predictions.

Example
-------
>>> import torch
>>> from fusion.nets.backbones import ImageBranch, create_backbone
>>> from fusion.nets.tabular import TabularMLP
>>> model = FusionModel({"image": ImageBranch(create_backbone("custom")), "tabular": TabularMLP(10)}, n_classes=3)
>>> model({"image": torch.rand(2, 1, 32, 32), "tabular": torch.zeros(2, 10)}).shape
torch.Size([2, 3])
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from fusion.config import parse_modalities
from fusion.nets.heads import DEFAULT_HEAD, create_head


class FusionModel(nn.Module):
    """Branches -> embeddings -> fusion head -> classifier MLP -> logits.

    Parameters
    ----------
    branches : dict of str -> nn.Module
        Keyed by modality; each module has ``output_dim``.
    n_classes : int
    hidden : int
        Width of the classifier's hidden layer (and of the fusion head, for heads
        that have a width).
    dropout : float
        Dropout in the classifier.
    modality_dropout : float
        Training only, with two or more modalities: probability that a sample loses one
        (randomly chosen) modality.
    head_kind : str
        How the embeddings are joined: a name of :data:`fusion.nets.heads.HEADS`
        (``concat``, ``film``, ``attention``); with one modality every kind is
        ``concat``.

    Attributes
    ----------
    fuse : FusionHead
        Joins the embeddings into one vector of ``fuse.output_dim``.
    head : nn.Sequential
        The classifier reading it (dropout, linear, ReLU, dropout, linear); named
        ``head`` since the first saved models, whose weights keep loading.
    """

    def __init__(
        self,
        branches: dict[str, nn.Module],
        n_classes: int,
        hidden: int = 64,
        dropout: float = 0.2,
        modality_dropout: float = 0.0,
        head_kind: str = DEFAULT_HEAD,
    ):
        super().__init__()
        modalities = parse_modalities(list(branches))
        self.modalities = modalities
        self.branches = nn.ModuleDict({m: branches[m] for m in modalities})
        self.modality_dropout = float(modality_dropout)
        self.n_classes = n_classes
        self.flags = len(modalities) > 1
        self.fuse = create_head(head_kind, {m: b.output_dim for m, b in self.branches.items()}, hidden)
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(self.fuse.output_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )
        self.aux_heads = (
            nn.ModuleDict({m: nn.Linear(b.output_dim, n_classes) for m, b in self.branches.items()})
            if self.flags
            else None
        )

    def embed(
        self, inputs: dict[str, torch.Tensor | None], presence: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Joined embedding of shape (batch, ``fuse.output_dim``), and each present
        branch's own embedding.

        An absent modality (``None``) is zeros with presence 0. ``presence``
        (batch, n_modalities) in [0, 1], optional, weighs each modality: 0 removes a
        modality exactly as a missing input does, which is what the modality-share
        explanation ablates; every fusion head honours it. Without it, training
        applies modality dropout and evaluation keeps everything.
        """
        batch = next((x.shape[0] for x in inputs.values() if x is not None), None)
        if batch is None:
            raise ValueError(f"at least one of the model's modalities {list(self.modalities)} is needed")
        unknown = [m for m, x in inputs.items() if x is not None and m not in self.modalities]
        if unknown:
            raise ValueError(f"this model was trained on {list(self.modalities)}; it cannot use {unknown}")
        device = next(self.parameters()).device
        if presence is None:
            presence = self._modality_mask(batch, device)
        parts, embeddings, absent = {}, {}, []
        for i, (name, branch) in enumerate(self.branches.items()):
            x = inputs.get(name)
            if x is None:
                parts[name] = torch.zeros(batch, branch.output_dim, device=device)
                absent.append(i)
                continue
            parts[name] = embeddings[name] = branch(x).float()
        if absent:
            given = torch.ones(1, len(self.modalities), device=device)
            given[:, absent] = 0.0
            presence = given.expand(batch, -1) if presence is None else presence * given
        # The fusion head runs in float32 even under autocast: its few small layers
        # gain nothing from bf16 and would pay a cast per operation.
        with torch.autocast(device.type, enabled=False):
            return self.fuse(parts, presence), embeddings

    def _modality_mask(self, batch: int, device) -> torch.Tensor | None:
        """Training's modality dropout as a (batch, n_modalities) 0/1 mask; None when
        nothing is dropped."""
        if not (self.training and self.flags and self.modality_dropout > 0):
            return None
        mask = torch.ones(batch, len(self.modalities), device=device)
        drop = torch.rand(batch, device=device) < self.modality_dropout
        which = torch.randint(len(self.modalities), (batch,), device=device)
        mask[drop, which[drop]] = 0.0
        return mask

    def forward(self, inputs: dict[str, torch.Tensor | None], presence: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of shape (batch, n_classes); see :meth:`embed` for ``presence``."""
        return self.head(self.embed(inputs, presence)[0])

    def forward_with_aux(self, inputs: dict[str, torch.Tensor | None]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fused logits and, with several modalities, each present branch's own logits."""
        joined, embeddings = self.embed(inputs)
        aux = {m: self.aux_heads[m](e) for m, e in embeddings.items()} if self.aux_heads is not None else {}
        return self.head(joined), aux


def inference_copy(model: nn.Module, precision: str = "fp32") -> nn.Module:
    """A frozen copy of a trained ``model`` that predicts the same with less work.
    Call it as it is, without autocast: it holds its own precision.

    - Every ``Conv2d`` followed directly by a ``BatchNorm2d`` (the custom CNN's blocks,
      DenseNet's stem) becomes one convolution with the normalisation folded into its
      weights (``torch.nn.utils.fusion.fuse_conv_bn_eval``), and the BatchNorm, like
      every ``Identity`` and (eval-mode, hence inert) ``Dropout`` of a
      ``Sequential``, is removed.
    - With ``precision="bf16"``, each image backbone's convolution and linear weights
      are stored in bfloat16 and its input is cast once (``ImageBranch.compute_dtype``):
      the arithmetic bf16 autocast does, without autocast's per-call weight copies and
      per-operation dispatch. BatchNorm layers that remain (DenseNet's) keep float32
      statistics, as under autocast; the tabular branch and the head, a few thousand
      multiply-adds, run in float32.

    Probabilities match the model's under autocast to about 1e-3 (bfloat16 rounding;
    folding reorders one multiplication).
    Training must keep using the original, whose BatchNorm statistics still move.

    Parameters
    ----------
    model : nn.Module
        A trained network; it is not modified.
    precision : {"fp32", "bf16"}

    Returns
    -------
    nn.Module
        In eval mode, without gradients.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from fusion.nets.backbones import ImageBranch

    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16'; got {precision!r}")
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    for parent in list(frozen.modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for first, second in itertools.pairwise(names):
            conv, norm = parent._modules[first], parent._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                parent._modules[first] = fuse_conv_bn_eval(conv, norm)
                parent._modules[second] = nn.Identity()
        # Identities and eval-mode dropout pass their input through; each call still
        # costs a Python module call and a dispatch (a tenth of a small CNN's forward).
        for name in [n for n, m in parent._modules.items() if isinstance(m, (nn.Identity, nn.Dropout))]:
            del parent._modules[name]
    if precision == "bf16":
        for branch in frozen.modules():
            if isinstance(branch, ImageBranch):
                branch.compute_dtype = torch.bfloat16
                for module in branch.backbone.modules():
                    if isinstance(module, (nn.Conv2d, nn.Linear)):
                        module.to(torch.bfloat16)
    return frozen
