"""Depthwise separable convolutions: MobileNet V1 (Howard et al. 2017, arXiv:1704.04861)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn
from torchvision.ops import Conv2dNormActivation

from ..config import StageConfig, Stride, window_out
from ..registry import Family, register_family


class DepthwiseSeparableStage(StageConfig):
    """``num_blocks`` layers of a 3x3 depthwise conv and a 1x1 pointwise conv, each with BN and ReLU (figure 3).

    Output channels are ``int(channels * width_multiplier)``; the paper's alpha scales every
    layer, so give the stem ``alpha * 32`` channels too.
    """

    family: Literal["depthwise_separable"] = "depthwise_separable"
    stride: Stride = Field(1, description="of the first depthwise conv")
    channels: int = Field(ge=1, description="pointwise output channels at width 1.0")
    num_blocks: int = Field(1, ge=1)
    width_multiplier: float = Field(1.0, gt=0.0, description="alpha")

    def output_size(self, size: int) -> int:
        return window_out(size, 3, self.stride, 1)


def build_stage(config: DepthwiseSeparableStage, in_channels: int) -> tuple[nn.Module, int]:
    out_channels = max(1, int(config.channels * config.width_multiplier))
    layers = []
    for index in range(config.num_blocks):
        stride = config.stride if index == 0 else 1
        layers += [
            Conv2dNormActivation(in_channels, in_channels, 3, stride, groups=in_channels),
            Conv2dNormActivation(in_channels, out_channels, 1),
        ]
        in_channels = out_channels
    return nn.Sequential(*layers), out_channels


register_family(Family(DepthwiseSeparableStage, build_stage))
