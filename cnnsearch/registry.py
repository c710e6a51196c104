"""The block-family registry: a family's name -> its knobs, its stage builder and its traits.

The registry knows names; the family knows everything else (timm's ``_registry.py``,
torchvision's ``_api.py``). Each module of :mod:`cnnsearch.blocks` registers its family
when it is imported, and importing :mod:`cnnsearch` imports them all. This module imports
no torch and nothing of cnnsearch, so that :mod:`cnnsearch.config` and
:mod:`cnnsearch.space` read the families from it without depending on the blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from .config import StageConfig

__all__ = ["Family", "get_family", "list_families", "register_family"]


@dataclass(frozen=True)
class Family:
    """One block family.

    Attributes:
        knobs: the validated stage value; its ``family`` field's default is the family's name.
        build_stage: ``build_stage(config, in_channels) -> (module, out_channels)``.
        pre_activation: its blocks end without a norm and activation, so the network needs
            a final BN-ReLU (DenseNet).
    """

    knobs: type[StageConfig]
    build_stage: Callable[[Any, int], tuple[nn.Module, int]]
    pre_activation: bool = False

    @property
    def name(self) -> str:
        return self.knobs.model_fields["family"].default


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add ``family`` under its name; a name registered twice is an error."""
    if family.name in _FAMILIES:
        raise ValueError(f"block family {family.name!r} is registered twice")
    _FAMILIES[family.name] = family
    return family


def list_families() -> list[str]:
    """Names of the registered families, in registration order."""
    return list(_FAMILIES)


def get_family(name: str) -> Family:
    """The family registered as ``name``.

    Raises:
        KeyError: no family has that name; the message lists the known ones.
    """
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown block family {name!r}; known: {', '.join(_FAMILIES)}") from None
