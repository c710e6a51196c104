"""Parameters, multiply-accumulates and FLOPs of an architecture or a model.

Counted with :class:`torch.utils.flop_counter.FlopCounterMode` on a forward pass of one
image: convolutions (grouped and depthwise included) and matrix products (linear
layers, squeeze-and-excitation). It counts FLOPs = 2 x MACs for these operations; batch
norm, activations, pooling, element-wise additions and bias additions are not counted,
as in torchvision's published GFLOPS (which are MACs). Architectures are profiled on
the meta device: no weights are allocated and nothing is computed.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import Arch, ConfigError
from .model import build_model
from .space import Space

__all__ = ["Cost", "cheapest", "profile"]


@dataclass(frozen=True)
class Cost:
    """Cost of one forward pass of one image."""

    params: int
    macs: int
    flops: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def profile(arch_or_model: Arch | nn.Module, *, input_size: int | None = None, in_channels: int | None = None) -> Cost:
    """Count parameters, MACs and FLOPs.

    Args:
        arch_or_model: an architecture (built on the meta device) or any model taking NCHW images.
        input_size: image height and width; defaults to the architecture's own (required for a model).
        in_channels: image channels; defaults to the architecture's own, else 3.

    Returns:
        The :class:`Cost` of one image.
    """
    if isinstance(arch_or_model, Arch):
        with torch.device("meta"):
            model = build_model(arch_or_model)
        input_size = input_size or arch_or_model.input_size
        in_channels = in_channels or arch_or_model.in_channels
    else:
        if input_size is None:
            raise TypeError("profile(model) needs input_size")
        model = arch_or_model
        if any(not p.is_meta for p in model.parameters()):
            # Counting needs no values: a meta copy leaves the caller's model as it was.
            model = copy.deepcopy(model).to("meta")
    params = sum(p.numel() for p in model.parameters())
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.empty(1, in_channels or 3, input_size, input_size, device="meta"))
    model.train(was_training)
    flops = counter.get_total_flops()
    return Cost(params=params, macs=flops // 2, flops=flops)


def cheapest(space: Space) -> tuple[Arch, Cost] | None:
    """The cheapest architecture of a space that meets its cost limits.

    Returns None when the space is too large to be sure (see :meth:`Space.smallest`)
    and none of the candidates tried meets the limits.

    Raises:
        ConfigError: no point of the space is a valid network, or none meets the limits.
    """
    candidates, complete = space.smallest()
    costed: list[tuple[Arch, Cost]] = []
    errors: list[ConfigError] = []
    for candidate in candidates:
        try:
            if isinstance(candidate, ConfigError):
                raise candidate
            costed.append((candidate, profile(candidate)))
        except ConfigError as error:
            errors.append(error)
    for arch, cost in sorted(costed, key=lambda item: (item[1].params, item[1].macs)):
        if space.limits.violation(cost.params, cost.macs) is None:
            return arch, cost
    if not complete:
        return None
    if not costed:
        raise ConfigError(f"{space.source}: no point of the space is a valid network, for example: {errors[0]}")
    fewest_params = min(cost.params for _, cost in costed)
    fewest_macs = min(cost.macs for _, cost in costed)
    limits = space.limits
    if limits.max_params is not None and fewest_params > limits.max_params:
        raise ConfigError(
            f"{space.source}: limits.max_params: {limits.max_params:,} cannot be met: "
            f"the smallest architecture of the space has {fewest_params:,} params"
        )
    if limits.max_macs is not None and fewest_macs > limits.max_macs:
        raise ConfigError(
            f"{space.source}: limits.max_macs: {limits.max_macs:,} cannot be met: "
            f"the cheapest architecture of the space has {fewest_macs:,} MACs"
        )
    raise ConfigError(f"{space.source}: limits: no architecture of the space meets max_params and max_macs together")
