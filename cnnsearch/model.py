"""``build_model(arch)``: stem, stages, head. The only place that walks stages and tracks channels.

It names no block family: it calls each stage's family through :mod:`cnnsearch.registry`
for the stage, its auxiliary heads, whether the head needs a final BN-ReLU and whether
the stage's blocks start silent; a stem style or head classifier that no shared builder
here makes is a family's, found by its name. A network with auxiliary classifiers
(GoogLeNet's) returns a :class:`TrainingOutput` in training mode, the trainer adding
their losses; in eval mode every network returns its logits alone, which is what
profiling, validation and export see.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from functools import partial
from typing import NamedTuple

from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

from . import blocks  # noqa: F401  (importing it registers every family)
from .config import Arch, ConfigError, Head, Stem
from .layers import ACTIVATION_MODULES, activation
from .registry import get_classifier, get_family, get_stem

__all__ = ["Network", "TrainingOutput", "build_model"]


def _conv(stem: Stem) -> Callable[..., nn.Module]:
    return partial(
        Conv2dNormActivation,
        norm_layer=nn.BatchNorm2d if stem.norm else None,
        activation_layer=ACTIVATION_MODULES.get(stem.activation),
    )


# The stem styles that several families use; their output sizes are Stem.output_size's.
_STEMS: dict[str, Callable[[Stem, int], nn.Sequential]] = {
    "imagenet": lambda stem, in_channels: nn.Sequential(
        _conv(stem)(in_channels, stem.channels, 7, stride=2), nn.MaxPool2d(3, stride=2, padding=1)
    ),
    "cifar": lambda stem, in_channels: nn.Sequential(_conv(stem)(in_channels, stem.channels, 3)),
    "mobilenet": lambda stem, in_channels: nn.Sequential(_conv(stem)(in_channels, stem.channels, 3, stride=2)),
    "none": lambda stem, in_channels: nn.Sequential(),
}


def _stem(stem: Stem, in_channels: int) -> nn.Module:
    build = _STEMS[stem.style] if stem.style in _STEMS else get_stem(stem.style).build
    return build(stem, in_channels)


def _linear_classifier(head: Head, in_channels: int, num_classes: int) -> nn.Sequential:
    """Optional 1x1 conv, adaptive average pooling, the hidden linear layers, the classifier."""
    layers = nn.Sequential()
    if head.channels:
        conv = Conv2dNormActivation(in_channels, head.channels, 1, activation_layer=ACTIVATION_MODULES[head.activation], inplace=None)
        layers.add_module("conv", conv)
        in_channels = head.channels
    layers.add_module("pool", nn.AdaptiveAvgPool2d(head.pool_size))
    layers.add_module("flatten", nn.Flatten(1))
    features = in_channels * head.pool_size**2
    for index, width in enumerate(head.hidden):
        if index and head.dropout:
            layers.add_module(f"hidden{index}_dropout", nn.Dropout(head.dropout))
        layers.add_module(f"hidden{index}", nn.Linear(features, width))
        layers.add_module(f"hidden{index}_act", activation(head.activation))
        features = width
    if head.dropout:
        layers.add_module("dropout", nn.Dropout(head.dropout))
    layers.add_module("fc", nn.Linear(features, num_classes))
    return layers


def _head(head: Head, in_channels: int, num_classes: int, pre_activation: bool) -> nn.Sequential:
    layers = nn.Sequential()
    if pre_activation:
        layers.add_module("norm", nn.BatchNorm2d(in_channels))
        layers.add_module("relu", nn.ReLU(inplace=True))
    build = _linear_classifier if head.classifier == "linear" else get_classifier(head.classifier)
    for name, module in build(head, in_channels, num_classes).named_children():
        layers.add_module(name, module)
    return layers


def _aux_heads(arch: Arch) -> tuple[nn.ModuleList, dict[int, list[str]]]:
    """The auxiliary classifiers of the stages whose families give some, and the names of the modules they read."""
    classifiers, inputs = nn.ModuleList(), {}
    for index, config in enumerate(arch.stages):
        hook = get_family(config.family).aux_heads
        if hook is not None and (heads := hook(config, arch.num_classes)):
            inputs[index] = [name for name, _ in heads]
            classifiers.extend(module for _, module in heads)
    return classifiers, inputs


class TrainingOutput(NamedTuple):
    """What a network with auxiliary classifiers returns in training mode."""

    logits: Tensor
    aux_logits: tuple[Tensor, ...]  # in the order of the modules they read


class Network(nn.Module):
    """A CNN built from an :class:`Arch`; ``model.arch`` is the value it was built from.

    ``aux_inputs`` maps a stage's index to the names of its modules whose outputs the
    ``aux_classifiers`` read, in order; they run in training mode only.
    """

    def __init__(self, arch: Arch, stem: nn.Module, stages: nn.Sequential, head: nn.Module,
                 aux_classifiers: nn.ModuleList | None = None, aux_inputs: dict[int, list[str]] | None = None) -> None:
        super().__init__()
        self.arch = arch
        self.stem = stem
        self.stages = stages
        # Registered between the stages and the head, where torchvision's GoogLeNet has its aux1 and aux2.
        self.aux_classifiers = aux_classifiers or nn.ModuleList()
        self.aux_inputs = aux_inputs or {}
        self.head = head

    def forward(self, x: Tensor) -> Tensor | TrainingOutput:
        x = self.stem(x)
        if not (self.training and self.aux_inputs):
            return self.head(self.stages(x))
        aux_logits: list[Tensor] = []
        for index, stage in enumerate(self.stages):
            if index not in self.aux_inputs:
                x = stage(x)
                continue
            for name, module in stage.named_children():
                x = module(x)
                if name in self.aux_inputs[index]:
                    aux_logits.append(self.aux_classifiers[len(aux_logits)](x))
        return TrainingOutput(self.head(x), tuple(aux_logits))


def _init_weights(model: nn.Module) -> None:
    if next(model.parameters()).is_meta:
        return  # a meta build has no values to set; on meta, torch's init functions cost more than building
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            # He et al. 2015 (arXiv:1502.01852), fan-out as in torchvision's ResNet and MobileNetV2.
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


def build_model(arch: Arch, *, zero_init_residual: Collection[str] = ()) -> Network:
    """Build the network that ``arch`` describes, deterministically given torch's RNG state.

    Build under ``torch.device("meta")`` to get the structure without allocating weights.
    ``zero_init_residual`` gives names that families register (a recipe's are checked
    against :func:`cnnsearch.registry.zero_init_names`); the blocks of a stage that one of
    them selects start silent, each through its own ``zero_init_last()`` (its branch's last
    BN scale 0), so that each such block begins as the identity and a deep network trains
    from its first steps (Goyal et al. 2017, arXiv:1706.02677; torchvision's flag of the
    same name).

    Raises:
        ConfigError: a stage cannot follow the one before it (for example a ``pad``
            shortcut that would have to drop channels).
    """
    stem = _stem(arch.stem, arch.in_channels)
    channels = arch.stem.out_channels(arch.in_channels)
    stages = nn.Sequential()
    for index, config in enumerate(arch.stages):
        try:
            stage, channels = get_family(config.family).build_stage(config, channels)
        except ValueError as error:
            raise ConfigError(f"stages.{index}: {error}") from None
        stages.add_module(str(index), stage)
    pre_activation = get_family(arch.stages[-1].family).pre_activation
    aux_classifiers, aux_inputs = _aux_heads(arch)
    head = _head(arch.head, channels, arch.num_classes, pre_activation)
    model = Network(arch, stem, stages, head, aux_classifiers, aux_inputs)
    _init_weights(model)
    if arch.batch_norm is not None:
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps, module.momentum = arch.batch_norm.eps, arch.batch_norm.momentum
    for config, stage in zip(arch.stages, model.stages):
        if get_family(config.family).starts_silent(config, zero_init_residual):
            for module in stage.modules():
                if hasattr(module, "zero_init_last"):
                    module.zero_init_last()
    return model
