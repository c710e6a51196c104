"""Plain stages: convolutions then a pool, as in LeNet-5 (LeCun et al. 1998), AlexNet
(Krizhevsky et al. 2012) and VGG (Simonyan and Zisserman 2015, arXiv:1409.1556).

Layers follow torchvision's ``vgg.py`` and ``alexnet.py`` (conv with bias, BN, activation;
a flat sequence) so that their weights load.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from ..config import StageConfig, window_out
from ..layers import activation
from ..registry import Family, register_family


class PlainStage(StageConfig):
    """``num_convs`` convolutions to ``channels``, each with its activation, then a pool, which downsamples."""

    family: Literal["plain"] = "plain"
    stride: int = Field(1, ge=1, description="of the first conv only (AlexNet's first: 4)")
    num_convs: int = Field(1, ge=1, description="convs in the stage (VGG-16: 2, 2, 3, 3, 3)")
    channels: int = Field(ge=1, description="output channels of every conv")
    kernel_size: int = Field(3, ge=1)
    padding: int = Field(1, ge=0)
    batch_norm: bool = Field(False, description="BN after every conv (VGG-BN); the conv keeps its bias, as in torchvision")
    activation: Literal["relu", "sigmoid", "tanh"] = "relu"
    pool: Literal["max", "avg", "none"] = Field("max", description="LeNet-5 averages; VGG and AlexNet take the max")
    pool_kernel_size: int = Field(2, ge=1)
    pool_stride: int = Field(2, ge=1)

    def output_size(self, size: int) -> int:
        for index in range(self.num_convs):
            size = window_out(size, self.kernel_size, self.stride if index == 0 else 1, self.padding)
        return size if self.pool == "none" else window_out(size, self.pool_kernel_size, self.pool_stride)


_POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def build_stage(config: PlainStage, in_channels: int) -> tuple[nn.Module, int]:
    """Conv[-BN]-activation ``num_convs`` times, then the pool."""
    layers: list[nn.Module] = []
    for index in range(config.num_convs):
        stride = config.stride if index == 0 else 1
        layers.append(nn.Conv2d(in_channels, config.channels, config.kernel_size, stride, config.padding))
        if config.batch_norm:
            layers.append(nn.BatchNorm2d(config.channels))
        layers.append(activation(config.activation))
        in_channels = config.channels
    if config.pool != "none":
        layers.append(_POOLS[config.pool](config.pool_kernel_size, config.pool_stride))
    return nn.Sequential(*layers), in_channels


register_family(Family(PlainStage, build_stage))
