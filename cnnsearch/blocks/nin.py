"""Network in Network blocks (Lin et al. 2014, arXiv:1312.4400), as in d2l.ai's NiN:
a k x k convolution followed by two 1x1 convolutions (the "micro network"), each with ReLU.

The family contributes NiN's ``conv`` head classifier.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from ..config import Head, StageConfig, window_out
from ..registry import Family, register_family

POOL_KERNEL_SIZE, POOL_STRIDE = 3, 2  # d2l's NiN pools 3x3/2 after each of its first three blocks


class NinStage(StageConfig):
    """One NiN block to ``channels``, optionally followed by a 3x3/2 max-pool."""

    family: Literal["nin"] = "nin"
    stride: int = Field(1, ge=1, description="of the k x k conv (d2l's first block: 4)")
    channels: int = Field(ge=1)
    kernel_size: int = Field(3, ge=1, description="k of the first conv")
    padding: int = Field(1, ge=0)
    pool: bool = Field(True, description="3x3 max-pool with stride 2 after the block")

    def output_size(self, size: int) -> int:
        size = window_out(size, self.kernel_size, self.stride, self.padding)
        return window_out(size, POOL_KERNEL_SIZE, POOL_STRIDE) if self.pool else size


def nin_block(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> nn.Sequential:
    """Conv k x k, ReLU, then two 1x1 conv-ReLU pairs."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=1),
        nn.ReLU(inplace=True),
    )


def build_stage(config: NinStage, in_channels: int) -> tuple[nn.Module, int]:
    block = nin_block(in_channels, config.channels, config.kernel_size, config.stride, config.padding)
    if config.pool:
        block.append(nn.MaxPool2d(POOL_KERNEL_SIZE, POOL_STRIDE))
    return block, config.channels


def conv_classifier(head: Head, in_channels: int, num_classes: int) -> nn.Sequential:
    """NiN's classifier: dropout, a NiN block to ``num_classes`` channels, global average pooling."""
    layers = nn.Sequential()
    if head.dropout:
        layers.add_module("dropout", nn.Dropout(head.dropout))
    layers.add_module("classifier", nin_block(in_channels, num_classes, kernel_size=3, stride=1, padding=1))
    layers.add_module("pool", nn.AdaptiveAvgPool2d(1))
    layers.add_module("flatten", nn.Flatten(1))
    return layers


register_family(Family(NinStage, build_stage, classifiers={"conv": conv_classifier}))
