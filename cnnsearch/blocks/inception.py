"""Inception modules: GoogLeNet (Szegedy et al. 2015, arXiv:1409.4842), its stem and its auxiliary classifiers.

Module names and order follow torchvision's ``googlenet.py`` so that its weights load.
The family contributes the ``googlenet`` stem style. The auxiliary classifiers read a
stage's modules but :mod:`cnnsearch.model` holds them, after the stages, where
torchvision's tensors have them.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

from typing import Literal

from pydantic import Field, model_validator

from ..config import Row, StageConfig, Stem, Stride, window_out
from ..registry import Family, StemStyle, register_family


class InceptionModule(Row):
    """Branch widths of one Inception module (Szegedy et al. 2015, arXiv:1409.4842, table 1).

    A row as in the paper's table: [1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj].
    The "5x5" branch uses a 3x3 conv, as torchvision's GoogLeNet does.
    """

    ch1x1: int = Field(ge=1)
    ch3x3_reduce: int = Field(ge=1)
    ch3x3: int = Field(ge=1)
    ch5x5_reduce: int = Field(ge=1)
    ch5x5: int = Field(ge=1)
    pool_proj: int = Field(ge=1)

    @property
    def out_channels(self) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj


class InceptionStage(StageConfig):
    """Inception modules; a stride-2 stage opens with a ceil-mode max-pool."""

    family: Literal["inception"] = "inception"
    stride: Stride = 1
    modules: tuple[InceptionModule, ...] = Field(min_length=1)
    batch_norm: bool = Field(True, description="BN after every conv (torchvision); false is the 2014 paper")
    pool_kernel_size: int = Field(3, ge=2, description="kernel of the downsampling max-pool")
    aux_classifiers: bool = Field(
        False, description="an auxiliary classifier after the first module and one after the next-to-last (4a and 4d)",
        exclude_if=lambda value: not value,
    )

    @model_validator(mode="after")
    def _aux_classifiers_apart(self) -> InceptionStage:
        if self.aux_classifiers and len(self.modules) < 3:
            raise ValueError(
                f"aux_classifiers read the first and the next-to-last module: give at least 3, got {len(self.modules)}"
            )
        return self

    def output_size(self, size: int) -> int:
        return window_out(size, self.pool_kernel_size, 2, ceil_mode=True) if self.stride == 2 else size


def conv_block(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, batch_norm: bool = True) -> nn.Module:
    """Conv-BN-ReLU with GoogLeNet's BN epsilon of 1e-3; without BN the conv has a bias, as in the paper."""
    norm = partial(nn.BatchNorm2d, eps=0.001) if batch_norm else None
    return Conv2dNormActivation(in_channels, out_channels, kernel_size, stride, norm_layer=norm)


class Inception(nn.Module):
    """Four parallel branches concatenated: 1x1; 1x1-3x3; 1x1-3x3 (the paper's 5x5); 3x3 max-pool-1x1."""

    def __init__(self, in_channels: int, widths: InceptionModule, batch_norm: bool) -> None:
        super().__init__()
        conv = partial(conv_block, batch_norm=batch_norm)
        self.branch1 = conv(in_channels, widths.ch1x1, 1)
        self.branch2 = nn.Sequential(conv(in_channels, widths.ch3x3_reduce, 1), conv(widths.ch3x3_reduce, widths.ch3x3, 3))
        self.branch3 = nn.Sequential(conv(in_channels, widths.ch5x5_reduce, 1), conv(widths.ch5x5_reduce, widths.ch5x5, 3))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True), conv(in_channels, widths.pool_proj, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def build_stage(config: InceptionStage, in_channels: int) -> tuple[nn.Module, int]:
    """Inception modules, opened by a ceil-mode max-pool when the stage has stride 2."""
    layers = nn.Sequential()
    if config.stride == 2:
        layers.add_module("pool", nn.MaxPool2d(config.pool_kernel_size, stride=2, ceil_mode=True))
    for index, widths in enumerate(config.modules):
        layers.add_module(f"inception{index}", Inception(in_channels, widths, config.batch_norm))
        in_channels = widths.out_channels
    return layers, in_channels


def build_stem(stem: Stem, in_channels: int) -> nn.Sequential:
    """7x7/2 conv, max-pool, 1x1 conv, 3x3 conv, max-pool; the first two convs with ``channels // 3`` outputs."""
    hidden = stem.channels // 3  # 64 of 192 in the paper
    conv = partial(conv_block, batch_norm=stem.norm)
    return nn.Sequential(
        conv(in_channels, hidden, 7, stride=2),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        conv(hidden, hidden, 1),
        conv(hidden, stem.channels, 3),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
    )


def stem_output_size(size: int) -> int:
    size = window_out(window_out(size, 7, 2, 3), 3, 2, ceil_mode=True)
    return window_out(size, 3, 2, ceil_mode=True)


AUX_WIDTH, AUX_POOL_SIZE, AUX_HIDDEN, AUX_DROPOUT = 128, 4, 1024, 0.7  # torchvision's InceptionAux


class InceptionAux(nn.Module):
    """An auxiliary classifier (Szegedy et al. 2015, section 5): 4x4 average pool, 1x1 conv, two linear layers.

    torchvision's ``InceptionAux``: the paper's 5x5/3 pool made adaptive, and 70% dropout.
    """

    def __init__(self, in_channels: int, num_classes: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(AUX_POOL_SIZE)
        self.conv = conv_block(in_channels, AUX_WIDTH, 1, batch_norm=batch_norm)
        self.fc1 = nn.Linear(AUX_WIDTH * AUX_POOL_SIZE**2, AUX_HIDDEN)
        self.dropout = nn.Dropout(AUX_DROPOUT)
        self.fc2 = nn.Linear(AUX_HIDDEN, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))


def aux_heads(config: InceptionStage, num_classes: int) -> list[tuple[str, nn.Module]]:
    """The stage's auxiliary classifiers, each with the name in the stage of the module whose output it reads."""
    if not config.aux_classifiers:
        return []
    return [
        (f"inception{index}", InceptionAux(config.modules[index].out_channels, num_classes, config.batch_norm))
        for index in (0, len(config.modules) - 2)
    ]


GOOGLENET_STEM = StemStyle(build_stem, stem_output_size)
register_family(Family(InceptionStage, build_stage, stems={"googlenet": GOOGLENET_STEM}, aux_heads=aux_heads))
