"""The image branch: X-ray (and colour image) backbones and the weights they start from.

Every backbone is an ``nn.Module`` that takes images of ``in_chans`` channels (1 for
gray films, the default; 3 for colour) normalised to zero mean and unit variance,
exposes ``output_dim`` and ``forward_features`` (an embedding of shape (batch,
output_dim)), and can freeze its first blocks for fine-tuning. They are built by name
from the registry (:mod:`fusion.nets.registry`) with :func:`create_backbone`, which also
resolves the starting weights: a published set (``"imagenet"``), a local weights file,
or an earlier run's folder. The :class:`ImageBranch` wraps a backbone with the
dataset's intensity normalisation (one mean and std, or one per colour channel), kept
as buffers so the saved weights carry it.

Example
-------
>>> import torch
>>> branch = ImageBranch(create_backbone("custom"), mean=0.5, std=0.25)
>>> branch(torch.rand(2, 1, 64, 64)).shape == (2, branch.output_dim)
True
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fusion.errors import ConfigError, MissingFileError, ModelFolderError
from fusion.nets.registry import BACKBONES, backbone_spec


class CustomCNN(nn.Module):
    """A fast CNN for grayscale X-rays: four conv-BN-ReLU-pool blocks and global pooling.

    The first convolution reads the film with a stride of 2 (a strided stem, as ResNets
    have), so each later block works on a quarter of the pixels it would otherwise:
    most of the cost of a small CNN lies in its first, full-resolution layers, and
    opacities are judged over regions, not single pixels. Its default input is 64 px;
    with the stem and four blocks the last features then see most of a lung field.

    Parameters
    ----------
    widths : tuple of int
        Channels of each block; each block halves the resolution.
    stem_stride : int
        Stride of the first convolution.
    in_chans : int
        Input channels: 1 (gray films) or 3 (colour).
    """

    def __init__(self, widths: tuple[int, ...] = (24, 48, 96, 192), stem_stride: int = 2, in_chans: int = 1):
        super().__init__()
        layers, channels = [], in_chans
        for i, width in enumerate(widths):
            layers += [
                nn.Conv2d(channels, width, 3, stride=stem_stride if i == 0 else 1, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.output_dim = channels
        self.n_blocks = len(widths)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def blocks(self) -> list[nn.Module]:
        """The feature blocks in input-to-output order, for :func:`freeze_blocks`."""
        return [self.features[i : i + 4] for i in range(0, len(self.features), 4)]


class DenseNet169(nn.Module):
    """torchvision's DenseNet169 with a one-channel stem (three with ``in_chans=3``:
    torchvision's own, which ImageNet weights fit as they are) and no classifier.

    The classifier of the seed project is replaced by the fusion head; ``freeze`` keeps
    the stem and the first dense blocks (and their transitions) fixed, as in classic
    transfer learning. ImageNet weights are never downloaded here; see
    :func:`load_backbone_weights`.
    """

    def __init__(self, in_chans: int = 1):
        super().__init__()
        from torchvision.models import densenet169

        net = densenet169(weights=None)
        if in_chans != 3:
            net.features.conv0 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.features = net.features
        self.output_dim = net.classifier.in_features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.n_blocks = 4

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # Not in place: Captum's backward hooks cannot follow an in-place ReLU.
        return self.pool(torch.relu(self.features(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def blocks(self) -> list[nn.Module]:
        f = self.features
        stem = nn.ModuleList([f.conv0, f.norm0])
        return [
            nn.ModuleList([stem, f.denseblock1, f.transition1]),
            nn.ModuleList([f.denseblock2, f.transition2]),
            nn.ModuleList([f.denseblock3, f.transition3]),
            nn.ModuleList([f.denseblock4, f.norm5]),
        ]


# torchvision's published DenseNet checkpoints use old key names ("norm.1"); it fixes them
# with this pattern in torchvision.models.densenet._load_state_dict.
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)
# In a run folder's weights, the image backbone's tensors and normalisation live here.
_RUN_BACKBONE, _RUN_MEAN, _RUN_STD = "branches.image.backbone.", "branches.image.mean", "branches.image.std"


def create_backbone(name: str, weights: str | Path | None = None, in_chans: int = 1) -> nn.Module:
    """Build a registered backbone, from scratch or from starting weights.

    Parameters
    ----------
    name : str
        A registry name (:data:`fusion.nets.registry.BACKBONES`).
    weights : str or Path, optional
        A name: ``"imagenet"`` (torchvision's checkpoint, only if already on this
        machine) or the name of weights shipped inside the package (``"cxr"`` for the
        custom CNN: see ``fusion/weights/``); a local weights file (a state dict saved
        with ``torch.save``, or safetensors; a stem of another channel count is
        adapted, see :func:`adapt_state_dict`); or the folder of an earlier fusion run
        whose image branch starts this one (it must read as many channels).
    in_chans : {1, 3}
        Input channels: 1 for gray films, 3 for colour images.

    Returns
    -------
    nn.Module
        The backbone, with ``default_size`` from the registry, ``in_chans`` and
        ``input_stats``: the (mean, std) intensity normalisation the weights were
        trained with (a float each, or one per channel), or None when they do not say
        (the training data's own is then used).

    Raises
    ------
    ValueError
        An unknown name (the message lists the known ones), weights for another
        backbone, or weights that do not fit; a
        :class:`~fusion.errors.ConfigError` (``image.pretrained``) for shipped weights
        of another channel count (the gray ``cxr`` on a colour backbone).
    FileNotFoundError
        The weights file or folder does not exist.
    """
    spec = backbone_spec(name)
    module_name, attribute = spec.factory.split(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    # One channel builds exactly as before channels existed (same arguments, same draws).
    backbone = factory() if in_chans == 1 else factory(in_chans=in_chans)
    backbone.default_size = spec.default_size
    backbone.in_chans = in_chans
    backbone.input_stats = None
    if weights is None:
        return backbone
    if weights == "imagenet":
        load_backbone_weights(backbone, imagenet_weights_path(name))
    elif weights in spec.shipped:
        _check_shipped_channels(name, weights, spec.shipped[weights].channels, in_chans)
        backbone.input_stats = _load_shipped(backbone, spec.shipped[weights].file)
    elif isinstance(weights, str) and weights.isidentifier() and not Path(weights).exists():
        known = ["imagenet", *spec.shipped]
        raise ValueError(f"no weights named {weights!r} for backbone {name!r}; named weights: {known}, or give a file")
    elif Path(weights).is_dir():
        backbone.input_stats = _load_run_backbone(backbone, name, Path(weights))
    else:
        load_backbone_weights(backbone, weights)
    return backbone


def _check_shipped_channels(name: str, weights: str, theirs: int, ours: int) -> None:
    if theirs == ours:
        return
    raise ConfigError(
        f"image.pretrained {weights!r}: the weights shipped for backbone {name!r} read {theirs} channel(s) "
        f"({'gray films' if theirs == 1 else 'colour images'}) and this backbone reads {ours} "
        "(image.channels); start from other weights (image.weights, image.init_from) or from scratch",
        field="image.pretrained",
        related=("image.channels",),
        value=weights,
    )


def shipped_weights_info(file: str) -> dict:
    """The provenance record of shipped weights (``fusion/weights/<file>.json``)."""
    from importlib import resources

    return json.loads(resources.files("fusion.weights").joinpath(f"{file}.json").read_text(encoding="utf-8"))


def _load_shipped(backbone: nn.Module, file: str) -> tuple[float, float]:
    """Load weights shipped inside the package, after checking their SHA-256 against
    the record beside them; returns the normalisation they were trained with."""
    import hashlib
    from importlib import resources

    from safetensors.torch import load

    info = shipped_weights_info(file)
    data = resources.files("fusion.weights").joinpath(f"{file}.safetensors").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != info["sha256"]:
        raise ValueError(
            f"shipped weights {file}.safetensors do not match their SHA-256 ({digest[:12]}...); reinstall fusion"
        )
    backbone.load_state_dict(load(data))
    return float(info["mean"]), float(info["std"])


def _load_run_backbone(backbone: nn.Module, name: str, folder: Path) -> tuple:
    """Load the image branch of an earlier run (its files verified first); returns the
    intensity normalisation it was trained with, which a transferred branch keeps (a
    float each, or one per colour channel). The run must read as many channels: its
    normalisation is of those channels, and a gray branch is no start for colour."""
    from fusion.persistence import WEIGHTS, verify_folder

    files = verify_folder(folder)  # the bytes parsed below are the bytes verified
    try:
        image = files.json("config.json")["config"]["image"]
        source = image["backbone"]
    except (KeyError, TypeError):
        raise ModelFolderError(
            f"{folder}: config.json holds no config.image.backbone",
            field="config.image.backbone",
            file=str(folder / "config.json"),
        ) from None
    if source != name:
        raise ValueError(
            f"{folder}: that run's image backbone is {source!r}, this one is {name!r}; they must be the same"
        )
    theirs = image.get("channels") or 1  # folders from before channels existed are gray
    if theirs != backbone.in_chans:
        raise ConfigError(
            f"image.init_from: the run in {folder} reads {theirs} image channel(s), this model reads "
            f"{backbone.in_chans} (image.channels); start from a run on images like these",
            field="image.init_from",
            related=("image.channels",),
            value=str(folder),
        )
    state = files.tensors(WEIGHTS) if WEIGHTS in files else {}
    tensors = {k[len(_RUN_BACKBONE) :]: v for k, v in state.items() if k.startswith(_RUN_BACKBONE)}
    if not tensors:
        raise ModelFolderError(f"{folder}: that run has no image branch to start from", file=str(folder / WEIGHTS))
    backbone.load_state_dict(tensors)
    return _stat(state[_RUN_MEAN]), _stat(state[_RUN_STD])


def _stat(tensor: torch.Tensor) -> float | list[float]:
    """A saved normalisation buffer as :class:`ImageBranch` takes it: a float, or one per channel."""
    return float(tensor) if tensor.numel() == 1 else [float(v) for v in tensor.flatten()]


def freeze_blocks(backbone: nn.Module, n: int) -> None:
    """Freeze the first ``n`` blocks: no gradients, batch-norm statistics fixed.

    Batch-norm layers of frozen blocks are put in eval mode by :class:`ImageBranch`
    whenever the model trains, so fine-tuning on a small dataset cannot drift them.
    """
    blocks = backbone.blocks()
    if not 0 <= n <= len(blocks):
        raise ValueError(f"freeze must be between 0 and {len(blocks)} for this backbone; got {n}")
    for block in blocks[:n]:
        for p in block.parameters():
            p.requires_grad_(False)


def _frozen_norms(backbone: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in backbone.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters())
    ]


def adapt_state_dict(state: dict[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Make a backbone state dict from torchvision's or our own layout fit ``backbone``.

    Accepts keys with or without the ``features.`` prefix, torchvision's old DenseNet key
    names, and a stem of another channel count: a three-channel (RGB) stem is summed
    over its colour axis into one grayscale channel for a gray backbone (as timm does
    for ``in_chans=1``), and a one-channel stem is spread over three, each a third, for
    a colour backbone, so that a gray image (three equal channels) gives the response
    the gray weights gave (timm's ``adapt_input_conv`` repeats and rescales alike).
    Classifier weights are dropped.
    """
    out = {}
    for key, value in state.items():
        key = _OLD_DENSENET_KEY.sub(r"\1\2", key)
        if key.startswith(("classifier.", "fc.", "head.")):
            continue
        if key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value
    own = backbone.state_dict()
    if not any(k in own for k in out) and any(("features." + k) in own for k in out):
        out = {"features." + k: v for k, v in out.items()}
    for key, value in list(out.items()):
        if key not in own or value.ndim != 4 or own[key].ndim != 4:
            continue
        if value.shape[1] == 3 and own[key].shape[1] == 1:
            out[key] = value.sum(dim=1, keepdim=True)
        elif value.shape[1] == 1 and own[key].shape[1] == 3:
            out[key] = value.repeat(1, 3, 1, 1) / 3.0
    return out


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a local weights file (a state dict saved with ``torch.save``, or safetensors).

    Loaded with ``weights_only=True``: a file that holds code is refused.

    Raises
    ------
    FileNotFoundError, ValueError
        The file is absent, unreadable, or its tensors do not fit the backbone (the
        message lists missing and unexpected keys).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"weights file {str(path)!r} is not a readable state dict ({err})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights file {str(path)!r} does not hold a state dict")
    state = adapt_state_dict(state, backbone)
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if "num_batches_tracked" not in k]
    if missing or unexpected:
        raise ValueError(
            f"weights file {str(path)!r} does not fit backbone {type(backbone).__name__}: "
            f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )


def imagenet_weights_path(name: str) -> Path:
    """Where torchvision keeps the ImageNet checkpoint of backbone ``name`` once downloaded.

    Raises
    ------
    ValueError
        When there are no ImageNet weights for ``name``.
    FileNotFoundError
        When the file is not on this machine; the message says how to supply one. Nothing
        is downloaded.
    """
    file = backbone_spec(name).imagenet_file
    if file is None:
        available = sorted(n for n, spec in BACKBONES.items() if spec.imagenet_file)
        raise ValueError(f"no ImageNet weights for backbone {name!r}; available for {available}")
    path = Path(torch.hub.get_dir()) / "checkpoints" / file
    if not path.is_file():
        raise MissingFileError(
            f"ImageNet weights for {name} are not on this machine (looked for {path}); fusion never "
            f"downloads at run time. On a machine with internet, download "
            f"https://download.pytorch.org/models/{file} and either put it at {path} "
            f"or give that file as image.weights.",
            field="image.weights",
            file=str(path),
        )
    return path


class ImageBranch(nn.Module):
    """A backbone plus the intensity normalisation of its training data.

    Input: images as float in [0, 1], shape (batch, C, H, W), C the backbone's channels
    (1 for gray films). Output: embeddings of shape (batch, ``output_dim``).

    ``mean`` and ``std``: one float each for a gray branch (scalar buffers, as saved
    folders have always held them); for a colour branch one per channel (buffers of
    shape (C, 1, 1), which broadcast over a batch), or one float for all channels.

    ``compute_dtype`` (default None: the input's) is the dtype the normalised image
    enters the backbone in; :func:`fusion.nets.joint.inference_copy` sets it to bfloat16
    when it stores the backbone's weights in bfloat16.

    ``detail`` (default None: all of it) is the finest detail the branch reads, as a side
    in pixels (``image.detail``): an input of side S larger than it is averaged over
    blocks of ``S // detail`` pixels and brought back to S by bilinear interpolation
    before anything else. Where the classes of a collection differ in sharpness for
    reasons of acquisition (larger originals of one class), a network that reads fine
    texture learns that instead of the anatomy; below the limit both classes look alike.
    It lives here, in the network, so training, prediction, explanations and the ONNX
    export all read the same image; it holds no weights, so the state dict is unchanged.
    """

    def __init__(
        self,
        backbone: nn.Module,
        mean: float | list[float] = 0.5,
        std: float | list[float] = 0.25,
        detail: int | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.detail = detail or None  # 0 in a configuration: no limit
        self.output_dim = backbone.output_dim
        self.in_chans = getattr(backbone, "in_chans", 1)
        self.compute_dtype: torch.dtype | None = None
        self.register_buffer("mean", _normalisation(mean, self.in_chans))
        self.register_buffer("std", _normalisation(std, self.in_chans))

    def stats(self) -> tuple[float | list[float], float | list[float]]:
        """(mean, std) as ``preprocessing.json`` writes them: floats for a gray branch,
        a list per channel for a colour one."""
        return _stat(self.mean), _stat(self.std)

    def train(self, mode: bool = True) -> ImageBranch:
        super().train(mode)
        for norm in _frozen_norms(self.backbone):
            norm.eval()
        return self

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def low_pass(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with no detail finer than the branch's ``detail`` (:func:`low_pass`)."""
        return low_pass(x, self.detail)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(self.low_pass(x))
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        return self.backbone.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def low_pass(x: torch.Tensor, detail: int | None) -> torch.Tensor:
    """``x`` (batch, C, S, S) with no detail finer than ``detail`` pixels a side: averaged
    over blocks of ``S // detail`` pixels and brought back to S by bilinear
    interpolation (unchanged without ``detail``, or when S is not larger than it). The
    one definition of ``image.detail``, for the image branch and for any pretraining
    whose weights declare a detail limit."""
    if not detail or x.shape[-1] <= detail:
        return x
    k = x.shape[-1] // detail
    return F.interpolate(F.avg_pool2d(x, k), size=x.shape[-2:], mode="bilinear", align_corners=False)


def _normalisation(value: float | list[float], channels: int) -> torch.Tensor:
    """A mean or std as a buffer: a scalar for one channel, (C, 1, 1) for C channels."""
    values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * channels
    if len(values) != channels:
        raise ValueError(f"image normalisation: {len(values)} value(s) for {channels} channel(s)")
    return torch.tensor(values[0]) if channels == 1 else torch.tensor(values).view(channels, 1, 1)
