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

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ShippedWeights:
    """Weights that come inside the installed package (``fusion/weights/``), loaded
    offline by name, with the input size and data they were trained on.

    Attributes
    ----------
    file : str
        File stem in ``fusion/weights/``: ``<file>.safetensors`` holds the tensors,
        ``<file>.json`` their SHA-256, normalisation and provenance.
    image_size : int
        The input side the weights were trained at (the default when they are used).
    channels : int
        The image channels they read (1: gray films).
    detail : int or None
        The detail limit they were trained with (``image.detail``): a model started from
        them reads its images with the same limit unless set otherwise, since weights
        that learnt from blurred films read sharp ones as another kind of film.
    """

    file: str
    image_size: int
    channels: int = 1
    detail: int | None = None


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
    shipped : dict of str -> ShippedWeights
        Weights inside the package, by the name ``image.pretrained`` takes.
    description : str
    """

    name: str
    default_size: int
    factory: str
    imagenet_file: str | None = None
    shipped: dict[str, ShippedWeights] = field(default_factory=dict)
    description: str = ""

    def input_size(self, pretrained: str | None) -> int:
        """The default input side: that of the shipped weights when they are used."""
        if pretrained in self.shipped:
            return self.shipped[pretrained].image_size
        return self.default_size


DEFAULT_BACKBONE = "custom"

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "custom",
            64,
            "fusion.nets.backbones:CustomCNN",
            shipped={"cxr": ShippedWeights("custom_cxr", 128)},
            description="fast CNN for grayscale films",
        ),
        BackboneSpec(
            "densenet169",
            224,
            "fusion.nets.backbones:DenseNet169",
            imagenet_file="densenet169-b2777c0a.pth",
            description="torchvision DenseNet169 with a one-channel stem",
        ),
    )
}


# What image.pretrained accepts: published sets looked up on this machine, and the
# weights shipped inside the package.
PRETRAINED = ("imagenet", *sorted({n for spec in BACKBONES.values() for n in spec.shipped}))


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
