"""The block-family registry: a family's name -> its knobs, its stage builder and its hooks.

The registry knows names; the family knows everything else (timm's ``_registry.py``,
torchvision's ``_api.py``). Each module of :mod:`cnnsearch.blocks` registers its family
when it is imported, and importing :mod:`cnnsearch` imports them all. Besides its
stages, a family may contribute stem styles, head classifiers, auxiliary heads and the
names under which ``zero_init_residual`` silences its blocks; the registry finds each
by its name, so that :mod:`cnnsearch.model` names no family. This module imports no
torch and nothing of cnnsearch, so that :mod:`cnnsearch.config` and
:mod:`cnnsearch.space` read the families from it without depending on the blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from torch import nn

# The values the hooks take are cnnsearch.config's StageConfig, Stem and Head: typed here by
# their base class, pydantic's BaseModel, since config imports this module.

__all__ = [
    "Family",
    "StemStyle",
    "get_classifier",
    "get_family",
    "get_stem",
    "list_families",
    "list_stems",
    "register_family",
    "zero_init_names",
]


@dataclass(frozen=True)
class StemStyle:
    """A stem that a family contributes, chosen by ``stem.style``.

    Attributes:
        build: ``build(stem, in_channels) -> module`` with ``stem.channels`` outputs.
        output_size: ``output_size(size) -> size`` of its output, torch-free, for the
            validation of an architecture.
    """

    build: Callable[[BaseModel, int], nn.Module]
    output_size: Callable[[int], int]


@dataclass(frozen=True)
class Family:
    """One block family and its hooks.

    Attributes:
        knobs: the validated stage value; its ``family`` field's default is the family's name.
        build_stage: ``build_stage(config, in_channels) -> (module, out_channels)``.
        pre_activation: its blocks end without an activation, so the network needs a final
            BN-ReLU (DenseNet's BN-ReLU-conv layers, NAS-Bench-201's ReLU-conv-BN cells).
        stems: stem styles the family contributes, by name (GoogLeNet's).
        classifiers: head classifiers it contributes, by the name ``head.classifier``
            gives: ``build(head, in_channels, num_classes) -> nn.Sequential``, whose
            children the model appends to the head (NiN's conv classifier).
        aux_heads: ``aux_heads(config, num_classes) -> [(name, module), ...]``: auxiliary
            classifiers that read the outputs of the stage's children of those names, in
            training only (GoogLeNet's).
        zero_init: the names ``zero_init_residual`` may give for the family, each with
            whether it selects a stage; a selected stage's blocks start silent through
            their own ``zero_init_last()`` (timm's ``init_weights(zero_init_last=True)``).
    """

    knobs: type[BaseModel]
    build_stage: Callable[[Any, int], tuple[nn.Module, int]]
    pre_activation: bool = False
    stems: Mapping[str, StemStyle] = field(default_factory=dict)
    classifiers: Mapping[str, Callable[[BaseModel, int, int], nn.Sequential]] = field(default_factory=dict)
    aux_heads: Callable[[Any, int], list[tuple[str, nn.Module]]] | None = None
    zero_init: Mapping[str, Callable[[Any], bool]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.knobs.model_fields["family"].default

    def starts_silent(self, config: BaseModel, names: Collection[str]) -> bool:
        """Whether one of ``names`` (a recipe's ``zero_init_residual``) selects this stage."""
        return any(name in names and selects(config) for name, selects in self.zero_init.items())


_FAMILIES: dict[str, Family] = {}
# The hooks whose names are global: one family's stem style is every architecture's.
_NAMED_HOOKS = {"stem style": "stems", "classifier": "classifiers", "zero_init name": "zero_init"}


def register_family(family: Family) -> Family:
    """Add ``family`` under its name; a name of a family, stem style, classifier or zero-init given twice is an error."""
    if family.name in _FAMILIES:
        raise ValueError(f"block family {family.name!r} is registered twice")
    for kind, hook in _NAMED_HOOKS.items():
        owners = {name: other.name for other in _FAMILIES.values() for name in getattr(other, hook)}
        for name in getattr(family, hook):
            if name in owners:
                raise ValueError(f"{kind} {name!r} of family {family.name!r} is family {owners[name]!r}'s already")
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


def list_stems() -> list[str]:
    """Stem styles that the families contribute, in registration order."""
    return [name for family in _FAMILIES.values() for name in family.stems]


def get_stem(style: str) -> StemStyle:
    """The stem style a family contributes as ``style``.

    Raises:
        KeyError: no family contributes it; the message lists the known ones.
    """
    return _lookup("stem style", style)


def get_classifier(name: str) -> Callable[[BaseModel, int, int], nn.Sequential]:
    """The head classifier a family contributes as ``name``.

    Raises:
        KeyError: no family contributes it; the message lists the known ones.
    """
    return _lookup("classifier", name)


def zero_init_names() -> list[str]:
    """The names a recipe's ``zero_init_residual`` may give, in registration order."""
    return [name for family in _FAMILIES.values() for name in family.zero_init]


def _lookup(kind: str, name: str) -> Any:
    table = {key: value for family in _FAMILIES.values() for key, value in getattr(family, _NAMED_HOOKS[kind]).items()}
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"unknown {kind} {name!r}; known: {', '.join(table)}") from None
