"""Inverted residual blocks: MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381).

Module names and order follow torchvision's ``mobilenetv2.py`` so that its weights load.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

from typing import Literal

from pydantic import Field

from ..config import StageConfig, Stride, window_out
from ..registry import Family, register_family


class InvertedResidualStage(StageConfig):
    """A row ``t, c, n, s`` of MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381, table 2).

    Output channels are ``channels * width_multiplier`` rounded to a multiple of 8.
    """

    family: Literal["inverted_residual"] = "inverted_residual"
    stride: Stride = 1
    expansion: float = Field(6.0, ge=1.0, description="t: expansion ratio of the hidden layer")
    channels: int = Field(ge=1, description="c: output channels at width 1.0")
    num_blocks: int = Field(1, ge=1, description="n: repeats")
    width_multiplier: float = Field(1.0, gt=0.0, description="alpha")
    squeeze_excitation: bool = Field(False, description="SE after the depthwise conv, as in MobileNetV3")

    def output_size(self, size: int) -> int:
        return window_out(size, 3, self.stride, 1)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor``, never more than 10% down (as the paper's code)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6), 3x3 depthwise (ReLU6), optional SE, 1x1 linear projection; residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: float, squeeze_excitation: bool) -> None:
        super().__init__()
        hidden = int(round(in_channels * expansion))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(Conv2dNormActivation(in_channels, hidden, kernel_size=1, activation_layer=nn.ReLU6))
        layers.append(Conv2dNormActivation(hidden, hidden, stride=stride, groups=hidden, activation_layer=nn.ReLU6))
        if squeeze_excitation:
            # MobileNetV3's SE: squeeze to a quarter, hard-sigmoid gate (Howard et al. 2019, arXiv:1905.02244).
            layers.append(SqueezeExcitation(hidden, make_divisible(hidden / 4), scale_activation=nn.Hardsigmoid))
        layers += [nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)

    def zero_init_last(self) -> None:
        if self.use_res_connect:  # without the identity path a silent branch would silence the network
            nn.init.zeros_(self.conv[-1].weight)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def build_stage(config: InvertedResidualStage, in_channels: int) -> tuple[nn.Module, int]:
    """``num_blocks`` blocks; the first one carries the stride."""
    out_channels = make_divisible(config.channels * config.width_multiplier)
    blocks = []
    for index in range(config.num_blocks):
        stride = config.stride if index == 0 else 1
        blocks.append(InvertedResidual(in_channels, out_channels, stride, config.expansion, config.squeeze_excitation))
        in_channels = out_channels
    return nn.Sequential(*blocks), out_channels


register_family(Family(InvertedResidualStage, build_stage))
