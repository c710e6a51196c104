"""Inverted residual blocks: MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381) and
MobileNetV3 (Howard et al. 2019, arXiv:1905.02244).

A stage is either a row ``t, c, n, s`` of MobileNetV2's table, its blocks all alike, or
a table of ``blocks``, one row per block, as MobileNetV3's tables give them. Module
names and order follow torchvision's ``mobilenetv2.py`` (whose tensors come in the same
order as ``mobilenetv3.py``'s) so that its weights load.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_serializer, model_validator
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

from ..config import Row, StageConfig, Stride, window_out
from ..layers import ACTIVATION_MODULES
from ..registry import Family, register_family

KernelSize = Literal[3, 5]
Activation = Literal["relu6", "relu", "hardswish"]


class InvertedResidualBlock(Row):
    """One block, a row of MobileNetV3's tables (Howard et al. 2019, arXiv:1905.02244, tables 1 and 2).

    As the paper prints it: [kernel, exp size, #out, SE, NL, s], e.g. ``[5, 72, 40, true, relu, 2]``.
    """

    kernel_size: KernelSize = Field(description="k of the k x k depthwise conv")
    expanded_channels: int = Field(ge=1, description="exp size: width of the hidden layer at width 1.0")
    channels: int = Field(ge=1, description="#out: output channels at width 1.0")
    squeeze_excitation: bool = Field(description="SE")
    activation: Activation = Field(description="NL: relu (RE) or hardswish (HS)")
    stride: Stride = Field(description="s, of the depthwise conv")


# The knobs that a table of blocks gives per block: a stage with blocks leaves them at their defaults.
_PER_BLOCK = ("stride", "expansion", "channels", "num_blocks", "squeeze_excitation", "kernel_size", "activation")


class InvertedResidualStage(StageConfig):
    """A row ``t, c, n, s`` of MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381, table 2), or ``blocks``.

    Output channels are ``channels * width_multiplier`` rounded to a multiple of 8; with
    ``blocks``, every row's channels and exp size are, as in torchvision's MobileNetV3.
    ``kernel_size``, ``activation`` and ``blocks`` are left out of files and digests at
    their defaults, so that architectures written before they existed keep their digests.
    """

    family: Literal["inverted_residual"] = "inverted_residual"
    stride: Stride = 1
    expansion: float = Field(6.0, ge=1.0, description="t: expansion ratio of the hidden layer")
    channels: int | None = Field(None, ge=1, description="c: output channels at width 1.0; required without blocks")
    num_blocks: int = Field(1, ge=1, description="n: repeats")
    width_multiplier: float = Field(1.0, gt=0.0, description="alpha")
    squeeze_excitation: bool = Field(False, description="SE after the depthwise conv, as in MobileNetV3")
    kernel_size: KernelSize = Field(
        3, description="k of the depthwise convs (MobileNetV3: 3 or 5)", exclude_if=lambda value: value == 3
    )
    activation: Activation = Field(
        "relu6", description="after the expansion and the depthwise conv (MobileNetV3: relu or hardswish)",
        exclude_if=lambda value: value == "relu6",
    )
    blocks: tuple[InvertedResidualBlock, ...] = Field(
        (), description="one row per block (MobileNetV3), instead of t, c, n, s and the knobs above",
        exclude_if=lambda value: value == (),
    )

    @model_validator(mode="after")
    def _either_a_row_or_blocks(self) -> InvertedResidualStage:
        if not self.blocks:
            if self.channels is None:
                raise ValueError("an inverted_residual stage needs channels (c), or blocks, one row per block")
            return self
        given = [name for name in _PER_BLOCK if getattr(self, name) != type(self).model_fields[name].default]
        if given:
            raise ValueError(f"blocks give each block's {', '.join(given)}: leave the stage's out")
        return self

    @model_serializer(mode="wrap")
    def _blocks_alone(self, serialize: Any) -> dict[str, Any]:
        data = serialize(self)
        if self.blocks:  # the stage-wide knobs hold their unused defaults
            for name in _PER_BLOCK:
                data.pop(name, None)
        return data

    def output_size(self, size: int) -> int:
        windows = [(block.kernel_size, block.stride) for block in self.blocks] or [(self.kernel_size, self.stride)]
        for kernel_size, stride in windows:
            size = window_out(size, kernel_size, stride, kernel_size // 2)
        return size


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor``, never more than 10% down (as the paper's code)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """1x1 expansion, k x k depthwise conv, optional SE, 1x1 linear projection; residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, *, expand: bool, stride: int,
                 kernel_size: int = 3, activation: str = "relu6", squeeze_excitation: bool = False) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        act = ACTIVATION_MODULES[activation]
        layers: list[nn.Module] = []
        if expand:
            layers.append(Conv2dNormActivation(in_channels, hidden_channels, kernel_size=1, activation_layer=act))
        layers.append(Conv2dNormActivation(hidden_channels, hidden_channels, kernel_size, stride=stride,
                                           groups=hidden_channels, activation_layer=act))
        if squeeze_excitation:
            # MobileNetV3's SE: squeeze to a quarter, hard-sigmoid gate (Howard et al. 2019, arXiv:1905.02244),
            # the quarter rounded down before rounding to 8 as in torchvision.
            squeeze = make_divisible(hidden_channels // 4)
            layers.append(SqueezeExcitation(hidden_channels, squeeze, scale_activation=nn.Hardsigmoid))
        layers += [nn.Conv2d(hidden_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)

    def zero_init_last(self) -> None:
        if self.use_res_connect:  # without the identity path a silent branch would silence the network
            nn.init.zeros_(self.conv[-1].weight)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def build_stage(config: InvertedResidualStage, in_channels: int) -> tuple[nn.Module, int]:
    """The table's blocks, or ``num_blocks`` blocks alike, the first one carrying the stride."""
    blocks = []
    if config.blocks:
        for row in config.blocks:
            out_channels = make_divisible(row.channels * config.width_multiplier)
            hidden = make_divisible(row.expanded_channels * config.width_multiplier)
            # MobileNetV3 expands wherever the exp size differs from the input's width.
            blocks.append(InvertedResidual(in_channels, out_channels, hidden, expand=hidden != in_channels, stride=row.stride,
                                           kernel_size=row.kernel_size, activation=row.activation,
                                           squeeze_excitation=row.squeeze_excitation))
            in_channels = out_channels
        return nn.Sequential(*blocks), in_channels
    out_channels = make_divisible(config.channels * config.width_multiplier)
    for index in range(config.num_blocks):
        blocks.append(InvertedResidual(
            in_channels, out_channels, int(round(in_channels * config.expansion)), expand=config.expansion != 1,
            stride=config.stride if index == 0 else 1, kernel_size=config.kernel_size, activation=config.activation,
            squeeze_excitation=config.squeeze_excitation,
        ))
        in_channels = out_channels
    return nn.Sequential(*blocks), out_channels


register_family(Family(InvertedResidualStage, build_stage, zero_init={"inverted_residual": lambda config: True}))
