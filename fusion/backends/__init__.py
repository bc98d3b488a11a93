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
    "network": "fusion.backends.network:NetworkBackend",
    "booster": "fusion.backends.booster:BoosterBackend",
    "stacked": "fusion.backends.stacked:StackedBackend",
    "gbm": "fusion.backends.gbm:GBMBackend",
    "auto": "fusion.backends.auto:AutoBackend",
}
# The backend of each fusion strategy (Config.fusion); "auto" fits to one of the others.
STRATEGIES = {"joint": "network", "stacked": "stacked", "gbm": "gbm", "auto": "auto"}


def backend_name(config: Config) -> str:
    """The backend a (validated) configuration trains."""
    return "booster" if config.model == "xgboost" else STRATEGIES[config.fusion]


def check_distributed(cfg: Config) -> None:
    """Under torch.distributed only the joint network trains: XGBoost, the stacking
    combiners and the other scikit-learn steps are single-process, and N copies of
    them would only repeat the same work and race on the same files.

    Raises
    ------
    ValueError
        For any other backend when the job has more than one process.
    """
    from fusion.training import distributed

    name = backend_name(cfg)
    if name != "network" and distributed.world_size() > 1:
        raise ValueError(
            f"model {cfg.model!r} with fusion {cfg.fusion!r} (backend {name!r}) trains in one process only, "
            f"but this job has {distributed.world_size()} processes (WORLD_SIZE); distributed training "
            "serves the network: model 'fusion' with fusion 'joint'. Run other strategies without torchrun."
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
