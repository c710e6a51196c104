"""A family is one module and one registration: its knobs, builder, stem, auxiliary heads and zero-init names."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
import torch
from pydantic import Field, ValidationError
from torch import Tensor, nn

import cnnsearch.model
from cnnsearch import Arch, ConfigError, build_model, registry
from cnnsearch.config import Recipe, StageConfig, Stem, window_out
from cnnsearch.model import TrainingOutput
from cnnsearch.registry import Family, StemStyle, list_families, list_stems, register_family, zero_init_names


# A throwaway family, written as a module of cnnsearch.blocks would write it ---------------


class ToyStage(StageConfig):
    """``num_blocks`` blocks of a 3x3 conv-BN-ReLU, residual where the shape allows; the first carries the stride."""

    family: Literal["toy"] = "toy"
    channels: int = Field(ge=1)
    num_blocks: int = Field(2, ge=1)

    def output_size(self, size: int) -> int:
        return window_out(size, 3, self.stride, 1)


class _ToyBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def zero_init_last(self) -> None:
        if self.residual:
            nn.init.zeros_(self.norm.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.norm(self.conv(x)))
        return x + out if self.residual else out


def build_stage(config: ToyStage, in_channels: int) -> tuple[nn.Module, int]:
    blocks = nn.Sequential()
    for index in range(config.num_blocks):
        blocks.add_module(f"block{index}", _ToyBlock(in_channels, config.channels, config.stride if index == 0 else 1))
        in_channels = config.channels
    return blocks, in_channels


def build_stem(stem: Stem, in_channels: int) -> nn.Module:
    """Non-overlapping 2x2 patches, as a vision transformer's stem."""
    return nn.Sequential(nn.Conv2d(in_channels, stem.channels, 2, stride=2))


def aux_heads(config: ToyStage, num_classes: int) -> list[tuple[str, nn.Module]]:
    """One classifier on the stage's first block."""
    return [("block0", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(config.channels, num_classes)))]


TOY = Family(
    ToyStage,
    build_stage,
    stems={"toy_patches": StemStyle(build_stem, lambda size: size // 2)},
    aux_heads=aux_heads,
    zero_init={"toy": lambda config: True},
)


@contextlib.contextmanager
def registered(family: Family) -> Iterator[Family]:
    register_family(family)
    try:
        yield family
    finally:
        del registry._FAMILIES[family.name]  # only tests take a family out again


# Tests ------------------------------------------------------------------------------------


def toy_arch() -> Arch:
    stages = [{"family": "toy", "channels": 8}, {"family": "toy", "stride": 2, "channels": 16}]
    return Arch.from_dict({"stem": {"style": "toy_patches", "channels": 8}, "stages": stages})


def test_a_registered_family_builds_with_its_stem_aux_heads_and_zero_init():
    with registered(TOY):
        arch = toy_arch()
        assert arch.stem.output_size(32) == 16 and arch.stages[1].output_size(16) == 8
        recipe = Recipe.model_validate({"zero_init_residual": ["toy"]})
        torch.manual_seed(0)
        network = build_model(arch, zero_init_residual=recipe.zero_init_residual)
    images = torch.randn(2, 3, 32, 32)
    assert network.stem(images).shape == (2, 8, 16, 16)
    output = network.train()(images)
    assert isinstance(output, TrainingOutput) and output.logits.shape == (2, 10)
    assert [logits.shape for logits in output.aux_logits] == [(2, 10), (2, 10)]
    (output.logits.sum() + sum(logits.sum() for logits in output.aux_logits)).backward()
    assert all(p.grad is not None for p in network.aux_classifiers.parameters())
    assert network.eval()(images).shape == (2, 10)
    # Its blocks start silent where they can be the identity: all but the first of stage 1, which changes the shape.
    blocks = [(name, block) for name, block in network.stages.named_modules() if isinstance(block, _ToyBlock)]
    silent = {name: bool((block.norm.weight == 0).all()) for name, block in blocks}
    assert silent == {"0.block0": True, "0.block1": True, "1.block0": False, "1.block1": True}


def test_what_a_family_contributes_is_known_while_it_is_registered_only():
    with pytest.raises(
        ConfigError, match="stem.style: Input should be 'imagenet', 'cifar', 'mobilenet', 'googlenet' or 'none'"
    ):
        toy_arch()
    with registered(TOY):
        assert "toy" in list_families() and "toy_patches" in list_stems() and "toy" in zero_init_names()
        assert Stem(style="toy_patches").out_channels(3) == 64
        assert Recipe.model_json_schema()["properties"]["zero_init_residual"]["items"]["enum"][-1] == "toy"
    assert "toy" not in list_families() + list_stems() + zero_init_names()
    with pytest.raises(ValidationError, match="Input should be 'inverted_residual', 'residual' or 'bottleneck'"):
        Recipe.model_validate({"zero_init_residual": ["toy"]})


def test_a_name_another_family_contributes_is_refused_and_nothing_is_registered():
    thief = Family(ToyStage, build_stage, stems={"googlenet": StemStyle(build_stem, lambda size: size // 2)})
    with pytest.raises(ValueError, match="stem style 'googlenet' of family 'toy' is family 'inception''s already"):
        register_family(thief)
    assert "toy" not in list_families()
    with pytest.raises(KeyError, match="unknown stem style 'toy_patches'; known: googlenet"):
        registry.get_stem("toy_patches")


def test_model_names_no_family():
    source = Path(cnnsearch.model.__file__).read_text()
    for name in list_families() + list_stems() + zero_init_names():
        assert not re.search(rf"\b{name}\b", source), name
