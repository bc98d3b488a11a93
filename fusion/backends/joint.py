"""The network backend: joint late fusion, trained end to end (and every single-modality
network, which is the same model with one branch).

Training runs :func:`fusion.training.loop.fit_network` with the standard hooks
(:func:`fusion.training.hooks.standard_hooks`); predictions and explanations
run an :func:`~fusion.nets.joint.inference_copy` of the trained network, made when first
needed and made again whenever the network is replaced, moved or edited in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fusion.backends.base import Batch, ModelSpec
from fusion.config import Config
from fusion.data.cache import MappedImages
from fusion.data.dataset import Dataset, fingerprint, intensity_stats
from fusion.errors import ModelFolderError
from fusion.explain import DEFAULT_STEPS, Explanation, explain_network, sum_by_source
from fusion.nets.backbones import ImageBranch, create_backbone, freeze_blocks
from fusion.nets.joint import FusionModel, inference_copy
from fusion.nets.tabular import TabularMLP
from fusion.persistence import WEIGHTS, ModelFiles, state_dict_bytes
from fusion.training import distributed
from fusion.training.hardware import channels_first, prepare_model, resolve_device, resolve_precision
from fusion.training.hooks import standard_hooks
from fusion.training.loop import Arrays, fit_network, predict_network


@dataclass
class _Runtime:
    """The network predictions run, with the device and precision it runs in, and the
    stamp of the weights it was copied from."""

    source: torch.nn.Module
    device: torch.device
    precision: str
    network: torch.nn.Module
    tensors: list[torch.Tensor]
    stamps: tuple

    @classmethod
    def of(cls, source: torch.nn.Module, precision: str) -> _Runtime:
        device = next(source.parameters()).device
        precision = resolve_precision(precision, device)
        tensors = list(source.state_dict(keep_vars=True).values())
        runtime = cls(source, device, precision, inference_copy(source, precision), tensors, ())
        runtime.stamps = runtime.stamp()
        return runtime

    def stamp(self) -> tuple:
        """Where each weight lives and how often it was changed in place. A move to
        another device or an in-place edit of the weights changes it. torch offers no
        public counter of in-place changes; ``Tensor._version`` is the one autograd
        itself relies on."""
        return tuple((t.data_ptr(), t._version) for t in self.tensors)


def build_network(spec: ModelSpec, train: Dataset | None = None) -> FusionModel:
    """The network of ``spec``; given the training data, with its starting weights
    (the configured ones) and the data's intensity normalisation."""
    cfg = spec.config
    branches: dict[str, torch.nn.Module] = {}
    if "image" in spec.modalities:
        weights = cfg.starting_weights if train is not None else None
        backbone = create_backbone(cfg.image.backbone, weights, in_chans=spec.image_channels)
        mean, std = 0.5, 0.25
        if train is not None:
            # A transferred branch keeps the intensity scale it was trained with.
            mean, std = backbone.input_stats or intensity_stats(train.images)
            if cfg.image.freeze:
                freeze_blocks(backbone, cfg.image.freeze)
        branches["image"] = ImageBranch(backbone, mean, std, cfg.image.detail)
    if "tabular" in spec.modalities:
        branches["tabular"] = TabularMLP(spec.preprocessor.n_features_out, cfg.tabular.hidden, cfg.tabular.dropout)
    head = cfg.head
    return FusionModel(branches, len(spec.classes), head.hidden, head.dropout, head.modality_dropout, head.kind)


class JointBackend:
    """Joint late fusion: branches -> embeddings -> one head, trained together.

    Attributes
    ----------
    network_ : FusionModel
        The trained network (in eval mode).
    history_ : dict
        Training history: per-epoch losses and scores, best epoch, device, precision.
    """

    name = "joint"
    distributed = True
    exportable = True
    portable_file = None

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self._runtime: _Runtime | None = None

    # ----------------------------------------------------------------- fitting
    def fit(
        self, train: Dataset, val: Dataset | None, *, verbose: bool = False, checkpoint_dir=None, resume: bool = False
    ) -> JointBackend:
        cfg: Config = self.spec.config
        device = distributed.local_device(resolve_device(cfg.train.device))
        precision = resolve_precision(cfg.train.precision, device)
        has_val = val is not None and len(val) > 0
        # Seeded inside a fork: the caller's random state (CPU, and the GPU's when
        # training there) is left as it was.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.train.seed)
            self.network_ = prepare_model(build_network(self.spec, train), device, precision)
            hooks = standard_hooks(
                cfg.train,
                verbose=verbose,
                checkpoint_dir=checkpoint_dir,
                fingerprint=self._fingerprint(train, val) if checkpoint_dir is not None else None,
                resume=resume,
            )
            self.history_ = fit_network(
                self.network_,
                self.arrays(Batch.from_dataset(train, self.spec.modalities), train.labels),
                self.arrays(Batch.from_dataset(val, self.spec.modalities), val.labels) if has_val else None,
                cfg.train,
                cfg.head,
                epochs=cfg.epochs_for(len(train)),
                augment=cfg.image.augment,
                flip_rotate=cfg.image.flip_rotate,
                device=device,
                precision=precision,
                hooks=hooks,
            )
        self.history_.update(device=str(device), precision=precision)
        self._runtime = None
        return self

    def _fingerprint(self, train: Dataset, val: Dataset | None) -> dict:
        """What a checkpoint must match to be resumed: configuration, data, preprocessing.
        Not where the run is tracked (``tracking``): that changes nothing of what is
        trained, and checkpoints made before the setting existed still resume."""
        prep = self.spec.preprocessor
        return {
            "config": {k: v for k, v in self.spec.config.to_dict().items() if k != "tracking"},
            "data": fingerprint(train, val),
            "preprocessing": prep.to_dict() if prep else None,
        }

    def arrays(self, batch: Batch, labels: np.ndarray | None = None) -> Arrays:
        """Model-ready tensors of a batch (the record preprocessed, images as uint8)."""
        images = tabular = presence = None
        if batch.images is not None:
            check_images(batch.images, self.spec)
            if isinstance(batch.images, MappedImages):
                images = batch.images  # stays on disk: the training loop reads each batch
            else:
                images = channels_first(torch.from_numpy(np.ascontiguousarray(batch.images)))
        if batch.records is not None:
            tabular = torch.from_numpy(self.spec.preprocessor.transform(batch.records))
        if batch.presence is not None:
            presence = torch.from_numpy(np.asarray(batch.presence, dtype=np.float32))
        labels = torch.from_numpy(labels) if labels is not None else torch.zeros(len(batch), dtype=torch.int64)
        return Arrays(labels=labels, images=images, tabular=tabular, presence=presence)

    # --------------------------------------------------------------- inference
    def runtime(self) -> _Runtime:
        """Device, precision and the network predictions run (an inference copy of
        ``network_``), made once and kept: probing the CPU for bf16 or copying the
        network on every prediction would be wasted work. Made again when
        ``network_`` is replaced, moved, or has its weights changed in place, so
        predictions always follow ``network_``."""
        runtime = self._runtime
        if runtime is None or runtime.source is not self.network_ or runtime.stamp() != runtime.stamps:
            self._runtime = _Runtime.of(self.network_, self.spec.config.train.precision)
        return self._runtime

    def predict_proba(self, batch: Batch, *, batch_size: int = 256, gather: bool = False) -> np.ndarray:
        """``gather``: under torch.distributed, every process predicts a share of the
        rows and receives them all (every process must call it; see
        :func:`~fusion.training.loop.predict_network`)."""
        rt = self.runtime()
        if gather and distributed.is_distributed():
            return predict_network(
                rt.network, self.arrays(batch), rt.device, rt.precision, batch_size=batch_size, frozen=True, gather=True
            )
        if len(batch) == 1 and batch.presence is None:
            # One patient: straight through the network, no batching loop.
            with torch.no_grad():  # the inference copy holds its own precision: no autocast
                logits = rt.network(self.tensors(batch, rt.device))
            return torch.softmax(logits.float(), dim=1).cpu().numpy().astype(np.float64)
        return predict_network(
            rt.network, self.arrays(batch), rt.device, rt.precision, batch_size=batch_size, frozen=True
        )

    def tensors(self, batch: Batch, device: torch.device) -> dict[str, torch.Tensor | None]:
        """A batch's inputs as the network takes them, on ``device``."""
        arrays = self.arrays(batch)
        image = arrays.images
        if image is not None and not isinstance(image, torch.Tensor):  # MappedImages
            image = channels_first(torch.from_numpy(image[:]))
        image = None if image is None else image.to(device).float().div_(255.0)
        tabular = None if arrays.tabular is None else arrays.tabular.to(device)
        return {"image": image, "tabular": tabular}

    def explain(self, batch: Batch, target: int | None, *, n_steps: int = DEFAULT_STEPS) -> Explanation:
        rt = self.runtime()
        branch = self.network_.branches["image"] if "image" in self.spec.modalities else None
        # The network predictions run (bf16 where they are), so the explained
        # probability is the predicted one.
        result = explain_network(
            rt.network,
            self.tensors(batch, rt.device),
            target,
            image_mean=branch.mean if branch is not None else None,
            n_steps=n_steps,
        )
        classes = self.spec.classes
        tabular = None
        if result.tabular_attribution is not None:
            prep = self.spec.preprocessor
            tabular = sum_by_source(result.tabular_attribution, prep.sources_, prep.schema.feature_names)
        return Explanation(
            target=classes[result.target],
            probability=float(result.probabilities[result.target]),
            probabilities=dict(zip(classes, map(float, result.probabilities), strict=True)),
            modality_share=result.modality_share,
            image_attribution=result.image_attribution,
            tabular_attribution=tabular,
            image=batch.image(0),
            record=batch.record(0),
            units=self.spec.units,
        )

    # ------------------------------------------------------------- persistence
    @property
    def image_state(self) -> dict | None:
        if "image" not in self.spec.modalities:
            return None
        mean, std = self.network_.branches["image"].stats()
        return {
            "size": self.spec.image_size,
            "mean": mean,
            "std": std,
            "channels": self.spec.image_channels,
            "resize": "bilinear, squash to square",
        }

    @classmethod
    def files(cls, modalities: tuple[str, ...]) -> tuple[str, ...]:
        return (WEIGHTS,)

    def save(self) -> dict[str, bytes]:
        return {WEIGHTS: state_dict_bytes(self.network_.state_dict())}

    @classmethod
    def load(cls, spec: ModelSpec, files: ModelFiles, *, device: str = "cpu") -> JointBackend:
        state = files.tensors(WEIGHTS)
        check_fits(lambda: build_network(spec), state, files.origin(WEIGHTS))
        network = build_network(spec)
        network.load_state_dict(state)
        backend = cls(spec)
        dev = resolve_device(device)
        backend.network_ = prepare_model(network, dev, resolve_precision(spec.config.train.precision, dev)).eval()
        backend.history_ = {}
        return backend


def check_images(images, spec: ModelSpec) -> None:
    """Images of the model's size and channels: (n, S, S) for a gray model, (n, S, S, 3)
    for a colour one."""
    size, channels = int(images.shape[1]), 1 if images.ndim == 3 else int(images.shape[-1])
    if size != spec.image_size:
        raise ValueError(f"images are {size} px; this model takes {spec.image_size} px")
    if channels != spec.image_channels:
        raise ValueError(
            f"images have {channels} channel(s); this model reads {spec.image_channels} "
            f"({'gray' if spec.image_channels == 1 else 'colour'}): load them with channels={spec.image_channels}"
        )


def check_fits(build, state: dict[str, torch.Tensor], origin: str) -> None:
    """Refuse weights that do not fit the network ``build()`` makes, comparing names and
    shapes on a network built on the meta device (which allocates nothing): a
    configuration edited to ask for a billion-wide layer is refused before the real
    network is allocated, which then holds exactly what the weights file holds."""
    with torch.device("meta"):
        skeleton = build()
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"{k} missing" for k in expected if k not in found]
    problems += [f"{k} unexpected" for k in found if k not in expected]
    problems += [f"{k} is {found[k]}, the configuration needs {v}" for k, v in expected.items() if found.get(k, v) != v]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ModelFolderError(
            f"{origin} does not fit the model config.json describes ({'; '.join(problems[:3])}{more}): "
            "the weights or the configuration were changed",
            file=origin,
            value=problems,
        )
