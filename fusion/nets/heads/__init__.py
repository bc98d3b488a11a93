"""Fusion heads: how the joint network joins its branches' embeddings.

A fusion head takes every branch's embedding and the presence of each modality and
returns one vector, which the network's classifier reads
(:class:`fusion.nets.joint.FusionModel`). Heads are chosen by name (``head.kind``,
``--head``) from :data:`HEADS`, the way backbones are (:mod:`fusion.nets.registry`);
this module imports nothing heavy, so the configuration can list the names without
torch, and :func:`create_head` imports a head's module only when it is built.

- ``concat``: the embeddings side by side, with a 0/1 presence flag per modality
  (:mod:`.concat`); the head of every model saved before heads could be chosen.
- ``film``: the record scales and shifts each channel of the image embedding
  (feature-wise linear modulation, Perez et al. 2018; the gating of MetaBlock,
  Pacheco & Krohling 2021) (:mod:`.film`).
- ``attention``: each modality's embedding is a token; a small transformer mixes
  them with missing modalities masked out and a learned summary token is read
  (:mod:`.attention`).

Every head honours the same contract (:class:`fusion.nets.heads.base.FusionHead`): a
modality whose presence is 0 does not change the output, whatever its input. With one
modality there is nothing to join: every kind builds the ``concat`` head, so an
image-only or record-only network is the same whatever ``head.kind`` says.

Example
-------
>>> sorted(HEADS)
['attention', 'concat', 'film']
>>> head_spec("film").needs
('image', 'tabular')
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class HeadSpec:
    """A registered fusion head.

    Attributes
    ----------
    name : str
        Registry name (``head.kind``, ``--head``).
    factory : str
        ``module:attribute`` of the head's class, imported only when built.
    needs : tuple of str
        The modalities the head joins; empty: any two or more.
    description : str
    """

    name: str
    factory: str
    needs: tuple[str, ...] = ()
    description: str = ""


DEFAULT_HEAD = "concat"

HEADS: dict[str, HeadSpec] = {
    spec.name: spec
    for spec in (
        HeadSpec(
            "concat",
            "fusion.nets.heads.concat:ConcatHead",
            description="embeddings side by side with a presence flag per modality",
        ),
        HeadSpec(
            "film",
            "fusion.nets.heads.film:FilmHead",
            needs=("image", "tabular"),
            description="the record scales and shifts each channel of the image embedding (FiLM, MetaBlock)",
        ),
        HeadSpec(
            "attention",
            "fusion.nets.heads.attention:AttentionHead",
            description="one token per modality, mixed by a two-layer transformer with missing modalities masked",
        ),
    )
}


def head_spec(name: str) -> HeadSpec:
    """The spec of a registered head.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.
    """
    if name not in HEADS:
        raise ValueError(f"unknown fusion head {name!r}; known heads: {sorted(HEADS)}")
    return HEADS[name]


def create_head(name: str, dims: dict[str, int], width: int):
    """Build the fusion head ``name`` over branches of embedding sizes ``dims``.

    Parameters
    ----------
    name : str
        A key of :data:`HEADS`.
    dims : dict of str -> int
        Each modality's embedding size, in the network's modality order.
    width : int
        The head's working width (``head.hidden``), for heads that have one.

    Returns
    -------
    FusionHead
        With one modality, the ``concat`` head whatever ``name`` is (there is nothing
        to join).

    Raises
    ------
    ValueError
        An unknown name (listing the known ones), or modalities the head cannot join.
    """
    spec = head_spec(name)
    if len(dims) < 2:
        spec = HEADS["concat"]
    elif spec.needs and tuple(dims) != spec.needs:
        raise ValueError(f"the {spec.name!r} head joins {list(spec.needs)}; got {list(dims)}")
    module, _, attribute = spec.factory.partition(":")
    return getattr(importlib.import_module(module), attribute)(dict(dims), width)
