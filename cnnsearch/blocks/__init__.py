"""Block families, one module each, registered by name.

Every family module has the same contract: ``build_stage(config, in_channels) ->
(module, out_channels)`` and ``PRE_ACTIVATION`` (whether its blocks end without a
norm and activation, so the network needs a final BN-ReLU). A block with a residual
branch has ``zero_init_last()``, which zeroes the branch's last norm scale so that the
block starts as the identity, when its shortcut is the identity. Families never import
each other; only :mod:`cnnsearch.model` walks stages.
"""

from __future__ import annotations

from types import ModuleType

from . import dense, inception, inverted_residual, residual

__all__ = ["get_family", "list_families"]

_FAMILIES: dict[str, ModuleType] = {}


def _register(name: str, module: ModuleType) -> None:
    if name in _FAMILIES:
        raise ValueError(f"block family {name!r} is registered twice")
    _FAMILIES[name] = module


_register("dense", dense)
_register("residual", residual)
_register("inception", inception)
_register("inverted_residual", inverted_residual)


def list_families() -> list[str]:
    return list(_FAMILIES)


def get_family(name: str) -> ModuleType:
    """The module that builds stages of family ``name``."""
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown block family {name!r}; known: {', '.join(_FAMILIES)}") from None
