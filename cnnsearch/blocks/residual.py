"""Residual blocks: ResNet (He et al. 2016, arXiv:1512.03385) and ResNeXt (Xie et al. 2017, arXiv:1611.05431).

Module names and order follow torchvision's ``resnet.py`` so that its weights load.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from typing import Literal

from pydantic import Field, model_validator

from ..config import StageConfig, Stride, window_out
from ..registry import Family, register_family


class ResidualStage(StageConfig):
    """A stage of residual blocks (He et al. 2016, arXiv:1512.03385; ResNeXt, arXiv:1611.05431).

    ``width`` is the stage's base width (planes); blocks output ``width * 1`` (basic)
    or ``width * 4`` (bottleneck) channels. The bottleneck's 3x3 conv has
    ``int(width * width_per_group / 64) * groups`` channels, strided as in ResNet v1.5.
    Shortcuts when the shape changes: ``pad`` subsamples and zero-pads channels
    (option A), ``projection`` uses a 1x1 conv + BN (option B), ``all_projection``
    projects in every block (option C).
    """

    family: Literal["residual"] = "residual"
    stride: Stride = 1
    block: Literal["basic", "bottleneck"] = "basic"
    num_blocks: int = Field(ge=1)
    width: int = Field(64, ge=1)
    groups: int = Field(1, ge=1, description="C: cardinality of the grouped 3x3 conv")
    width_per_group: int = Field(64, ge=1, description="d: channels per group at width 64")
    shortcut: Literal["pad", "projection", "all_projection"] = "projection"

    @model_validator(mode="after")
    def _basic_is_not_grouped(self) -> ResidualStage:
        if self.block == "basic" and (self.groups != 1 or self.width_per_group != 64):
            raise ValueError("basic blocks take only groups=1 and width_per_group=64; use block: bottleneck for ResNeXt")
        return self

    @property
    def out_channels(self) -> int:
        return self.width * (4 if self.block == "bottleneck" else 1)

    def output_size(self, size: int) -> int:
        return window_out(size, 3, self.stride, 1)


class _PadShortcut(nn.Module):
    """Option A: subsample and zero-pad the new channels; no parameters (used for CIFAR ResNets)."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra_channels))


def _shortcut(kind: str, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    if kind != "all_projection" and stride == 1 and in_channels == out_channels:
        return None
    if kind == "pad":
        if out_channels < in_channels:
            raise ValueError(f"a pad shortcut cannot go from {in_channels} to fewer ({out_channels}) channels")
        return _PadShortcut(stride, out_channels - in_channels)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs."""

    def __init__(self, in_channels: int, config: ResidualStage, stride: int) -> None:
        super().__init__()
        width = config.width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _shortcut(config.shortcut, in_channels, width, stride)

    def zero_init_last(self) -> None:
        if self.downsample is None:  # a block that changes shape cannot start as the identity: it keeps its branch
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, grouped 3x3 (strided, as in ResNet v1.5), 1x1 expand by 4."""

    def __init__(self, in_channels: int, config: ResidualStage, stride: int) -> None:
        super().__init__()
        inner = int(config.width * (config.width_per_group / 64.0)) * config.groups
        out_channels = config.out_channels
        self.conv1 = nn.Conv2d(in_channels, inner, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, inner, kernel_size=3, stride=stride, padding=1, groups=config.groups, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3 = nn.Conv2d(inner, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(config.shortcut, in_channels, out_channels, stride)

    def zero_init_last(self) -> None:
        # Measured: silencing the projection blocks too cost resnet50 10 points at 40 steps.
        if self.downsample is None:
            nn.init.zeros_(self.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def build_stage(config: ResidualStage, in_channels: int) -> tuple[nn.Module, int]:
    """``num_blocks`` blocks; the first one carries the stride."""
    block = _BLOCKS[config.block]
    blocks = []
    for index in range(config.num_blocks):
        blocks.append(block(in_channels, config, config.stride if index == 0 else 1))
        in_channels = config.out_channels
    return nn.Sequential(*blocks), in_channels


# zero_init_residual names every residual stage, or the stages of bottleneck blocks alone.
register_family(Family(ResidualStage, build_stage, zero_init={
    "residual": lambda config: True, "bottleneck": lambda config: config.block == "bottleneck",
}))
