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
