"""Dense blocks: DenseNet and DenseNet-BC (Huang et al. 2017, arXiv:1608.06993).

Module names and order follow torchvision's ``densenet.py`` so that its weights load.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from typing import Literal

from pydantic import Field

from ..config import StageConfig, Stride
from ..registry import Family, register_family


class DenseStage(StageConfig):
    """A dense block (Huang et al. 2017, arXiv:1608.06993).

    A stride-2 stage opens with a transition: BN-ReLU-1x1 conv to
    ``floor(compression * channels)`` channels and 2x2 average pooling.
    """

    family: Literal["dense"] = "dense"
    stride: Stride = 1
    num_layers: int = Field(ge=1, description="layers in the block")
    growth_rate: int = Field(12, ge=1, description="k: channels each layer adds")
    bn_size: int = Field(4, ge=0, description="bottleneck width as a multiple of k (DenseNet-B); 0 for no bottleneck")
    compression: float = Field(0.5, gt=0.0, le=1.0, description="theta of the opening transition (DenseNet-C)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after each layer")
    memory_efficient: bool = Field(False, description="recompute concat-BN-ReLU-conv in backward instead of storing it")

    def output_size(self, size: int) -> int:
        return size // 2 if self.stride == 2 else size


class _DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (bottleneck of ``bn_size * growth_rate``) then BN-ReLU-conv3x3 to ``growth_rate``."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int, dropout: float, memory_efficient: bool) -> None:
        super().__init__()
        first_out = bn_size * growth_rate if bn_size else growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        if bn_size:
            self.conv1 = nn.Conv2d(in_channels, first_out, kernel_size=1, bias=False)
            self.norm2 = nn.BatchNorm2d(first_out)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(first_out, growth_rate, kernel_size=3, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, first_out, kernel_size=3, padding=1, bias=False)
        self.bottleneck = bool(bn_size)
        self.dropout = dropout
        self.memory_efficient = memory_efficient

    def _concat_norm_conv(self, *features: Tensor) -> Tensor:
        return self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))

    @contextlib.contextmanager
    def _keep_running_stats(self) -> Iterator[None]:
        # Recomputation runs norm1 a second time; its running averages must count one step.
        saved = [buffer.clone() for buffer in self.norm1.buffers()]
        try:
            yield
        finally:
            with torch.no_grad():
                for buffer, value in zip(self.norm1.buffers(), saved):
                    buffer.copy_(value)

    def forward(self, features: list[Tensor]) -> Tensor:
        if self.memory_efficient and torch.is_grad_enabled() and any(f.requires_grad for f in features):
            # The concatenation is the memory hog (quadratic in depth): keep only the inputs
            # and recompute it in backward (Pleiss et al. 2017, arXiv:1707.06990).
            if torch.compiler.is_compiling():
                # Compiled, the recomputation is part of the compiler's graph, which updates no
                # buffer twice; there a context_fn may only give selective-checkpoint contexts.
                out = checkpoint(self._concat_norm_conv, *features, use_reentrant=False)
            else:
                recompute = self._keep_running_stats if self.training else contextlib.nullcontext
                out = checkpoint(
                    self._concat_norm_conv,
                    *features,
                    use_reentrant=False,
                    context_fn=lambda: (contextlib.nullcontext(), recompute()),
                )
        else:
            out = self._concat_norm_conv(*features)
        if self.bottleneck:
            out = self.conv2(self.relu2(self.norm2(out)))
        if self.dropout:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return out


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, **layer_args: object) -> None:
        super().__init__()
        for index in range(num_layers):
            self[f"denselayer{index + 1}"] = _DenseLayer(in_channels + index * growth_rate, growth_rate, **layer_args)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


def build_stage(config: DenseStage, in_channels: int) -> tuple[nn.Module, int]:
    """A dense block, opened by a compressing transition when the stage has stride 2."""
    layers = nn.Sequential()
    if config.stride == 2:
        compressed = int(in_channels * config.compression)
        layers.add_module("transition", _Transition(in_channels, compressed))
        in_channels = compressed
    layers.add_module(
        "block",
        _DenseBlock(
            config.num_layers,
            in_channels,
            config.growth_rate,
            bn_size=config.bn_size,
            dropout=config.dropout,
            memory_efficient=config.memory_efficient,
        ),
    )
    return layers, in_channels + config.num_layers * config.growth_rate


# Layers are BN-ReLU-conv, so the network needs a final BN-ReLU.
register_family(Family(DenseStage, build_stage, pre_activation=True))
