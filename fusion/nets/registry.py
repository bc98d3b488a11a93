"""What is known about each image backbone without building it (and without torch):
its default input size, where its class lives and the published weights it can start
from. One place for per-backbone metadata, the way torchvision's weight enums carry
their own metadata; :func:`fusion.nets.backbones.create_backbone` builds from it.

Example
-------
>>> BACKBONES[DEFAULT_BACKBONE].default_size
64
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone.

    Attributes
    ----------
    name : str
        Registry name (``--backbone``, ``image.backbone``).
    default_size : int
        Input side in pixels when ``image.image_size`` is not set.
    factory : str
        ``module:attribute`` of the ``nn.Module`` class, imported only when built.
    imagenet_file : str or None
        File name of torchvision's ImageNet checkpoint, when there is one.
    description : str
    """

    name: str
    default_size: int
    factory: str
    imagenet_file: str | None = None
    description: str = ""


DEFAULT_BACKBONE = "custom"

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("custom", 64, "fusion.nets.backbones:CustomCNN", description="fast CNN for grayscale films"),
        BackboneSpec(
            "densenet169",
            224,
            "fusion.nets.backbones:DenseNet169",
            imagenet_file="densenet169-b2777c0a.pth",
            description="torchvision DenseNet169 with a one-channel stem",
        ),
    )
}


def backbone_spec(name: str) -> BackboneSpec:
    """The spec of a registered backbone.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {sorted(BACKBONES)}")
    return BACKBONES[name]
