"""Backends: one module per kind of model, behind one protocol (:mod:`.base`).

The registry maps a backend's name, as a model folder records it, to where its class
lives; a backend is imported only when a model of its kind is trained or loaded, so
``import fusion`` never pays for xgboost or torch it does not use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fusion.backends.base import Backend
    from fusion.config import Config

BACKENDS = {
    "joint": "fusion.backends.joint:JointBackend",
    "xgboost": "fusion.backends.xgb:XGBoostBackend",
    "stacked": "fusion.backends.stacked:StackedBackend",
    "gbm": "fusion.backends.gbm:GBMBackend",
    "auto": "fusion.backends.auto:AutoBackend",
}
# A backend is named as the user chooses it: the fusion strategy (Config.fusion), or
# "xgboost" for the XGBoost baseline (Config.model). Folders saved before the names
# matched say "network" and "booster": read as "joint" and "xgboost".
ALIASES = {"network": "joint", "booster": "xgboost"}


def backend_name(config: Config) -> str:
    """The backend a (validated) configuration trains."""
    return "xgboost" if config.model == "xgboost" else config.fusion


def check_distributed(cfg: Config) -> None:
    """Under torch.distributed only the joint network trains: XGBoost, the stacking
    combiners and the other scikit-learn steps are single-process, and N copies of
    them would only repeat the same work and race on the same files.

    Raises
    ------
    ValueError
        For any other backend when the job has more than one process.
    """
    from fusion.errors import ConfigError
    from fusion.training import distributed

    name = backend_name(cfg)
    if not backend_class(name).distributed and distributed.world_size() > 1:
        raise ConfigError(
            f"model {cfg.model!r} with fusion {cfg.fusion!r} (backend {name!r}) trains in one process only, "
            f"but this job has {distributed.world_size()} processes (WORLD_SIZE); distributed training "
            "serves the network: model 'fusion' with fusion 'joint'. Run other strategies without torchrun.",
            field="model",
            related=("fusion", "WORLD_SIZE"),
            value=cfg.model,
            accepted="model 'fusion' with fusion 'joint' under torchrun",
        )


def backend_class(name: str) -> type[Backend]:
    """The class of a registered backend.

    Raises
    ------
    ValueError
        For an unknown name (a model folder from a newer fusion, say); the message
        lists the known ones.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; this fusion knows {sorted(BACKENDS)}")
    module, attribute = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), attribute)
