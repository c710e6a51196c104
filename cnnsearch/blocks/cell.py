"""NAS-Bench-201's cell (Dong & Yang 2020, arXiv:2001.00326), its stages, and its canonical architecture string.

A cell is a DAG of 4 nodes; node 0 is the cell's input. Each edge j -> i (j < i) carries
one operation of :data:`OPS`; a node is the sum of its incoming edges and the cell's
output is node 3. A stage is ``num_cells`` cells of ``channels`` channels; a stage with
stride 2 begins with the paper's reduction block, a ResNet basic block of stride 2 whose
shortcut is a 2x2 average pool and a 1x1 conv. The network of the benchmark is a 3x3
conv-BN stem to 16 channels (the ``cifar`` stem with ``activation: none``), three stages
of 5 cells at 16, 32 and 64 channels with strides 1, 2 and 2, all with the same cell,
and BN, ReLU, global pooling and a linear layer (the default head after this family's
final BN-ReLU). Layers follow the benchmark's own code (D-X-Y/AutoDL-Projects,
``cell_operations.py``: ``ReLUConvBN``, ``ResNetBasicblock``, ``POOLING``, ``Zero``;
``cell_infers/cells.py``: ``InferCell``; ``cell_infers/tiny_network.py``).

:func:`arch_string` writes a cell's canonical string (``|nor_conv_3x3~0|+|none~0|...``),
:func:`parse_arch_string` reads one, :func:`nasbench201_network` builds the benchmark's
architecture of a cell and :func:`nasbench201_arch` tells whether an architecture is one,
naming the first thing that differs when it is not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field
from torch import Tensor, nn

from ..config import Arch, StageConfig, Stride, window_out
from ..registry import Family, register_family

__all__ = [
    "EDGES",
    "OPS",
    "CellStage",
    "arch_string",
    "edge_knob",
    "is_nasbench201",
    "nasbench201_arch",
    "nasbench201_network",
    "parse_arch_string",
]

# The benchmark's operations, in the order of its table's op indices.
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# Edge i <- j, in the order of the architecture string |op~0|+|op~0|op~1|+|op~0|op~1|op~2|.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NODES = 4

Op = Literal[OPS]


def edge_knob(node: int, source: int) -> str:
    """The knob of :class:`CellStage` that holds the operation of edge ``node`` <- ``source``."""
    return f"node{node}_from{source}"


class CellStage(StageConfig):
    """A stage of NAS-Bench-201 cells: the reduction block where the shape changes, then N cells.

    The edges default to the benchmark's ResNet cell (``ResNet_CODE`` of its
    ``genotypes.py``): node 1 = conv3x3(node 0), node 2 = conv3x3(node 1),
    node 3 = node 0 + node 2. A stage that keeps the size but not the channels begins
    with the reduction block at stride 1, whose shortcut is then a ReLU-1x1 conv-BN, as in
    the benchmark's ``ResNetBasicblock``.
    """

    family: Literal["cell"] = "cell"
    stride: Stride = Field(1, description="of the reduction block that begins the stage")
    channels: int = Field(ge=1, description="C: channels of the stage's cells (the benchmark: 16, 32, 64)")
    num_cells: int = Field(5, ge=1, description="N: cells in the stage (the benchmark: 5)")
    node1_from0: Op = Field("nor_conv_3x3", description="operation of the edge node 0 -> node 1")
    node2_from0: Op = Field("none", description="operation of the edge node 0 -> node 2")
    node2_from1: Op = Field("nor_conv_3x3", description="operation of the edge node 1 -> node 2")
    node3_from0: Op = Field("skip_connect", description="operation of the edge node 0 -> node 3")
    node3_from1: Op = Field("none", description="operation of the edge node 1 -> node 3")
    node3_from2: Op = Field("skip_connect", description="operation of the edge node 2 -> node 3")

    @property
    def ops(self) -> tuple[str, ...]:
        """The operation of each edge, in the order of :data:`EDGES`."""
        return tuple(getattr(self, edge_knob(node, source)) for node, source in EDGES)

    def output_size(self, size: int) -> int:
        return window_out(size, 3, self.stride, 1)


# Layers ---------------------------------------------------------------------------------


class _ReLUConvBN(nn.Sequential):
    """ReLU, conv, BN. The ReLU is not in place: a node's value feeds several edges."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
        )


class _Zero(nn.Module):
    """The ``none`` operation: zeros of the input's shape, as the input times 0 (the benchmark's ``Zero``)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mul(0.0)


_OP_MODULES: dict[str, Callable[[int], nn.Module]] = {  # by name, each C -> C channels at stride 1
    "none": lambda channels: _Zero(),
    "skip_connect": lambda channels: nn.Identity(),
    "nor_conv_1x1": lambda channels: _ReLUConvBN(channels, channels, 1),
    "nor_conv_3x3": lambda channels: _ReLUConvBN(channels, channels, 3),
    "avg_pool_3x3": lambda channels: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
}


class _Cell(nn.Module):
    """One cell: ``edges`` holds the operation of each edge in the order of :data:`EDGES`."""

    def __init__(self, channels: int, ops: Sequence[str]) -> None:
        super().__init__()
        self.edges = nn.ModuleList(_OP_MODULES[op](channels) for op in ops)

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for node in range(1, NODES):
            nodes.append(sum(edge(nodes[source]) for edge, (target, source) in zip(self.edges, EDGES) if target == node))
        return nodes[-1]


class _ReductionBlock(nn.Module):
    """The benchmark's ``ResNetBasicblock``: ReLU-conv3x3-BN twice, the first strided, plus a shortcut; no ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv_a = _ReLUConvBN(in_channels, out_channels, 3, stride)
        self.conv_b = _ReLUConvBN(out_channels, out_channels, 3)
        if stride == 2:
            # ceil_mode keeps an odd input's size equal to the strided conv's; on even sizes (the benchmark's) it changes nothing.
            self.downsample = nn.Sequential(
                nn.AvgPool2d(2, stride=2, ceil_mode=True), nn.Conv2d(in_channels, out_channels, 1, bias=False)
            )
        else:
            self.downsample = _ReLUConvBN(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def build_stage(config: CellStage, in_channels: int) -> tuple[nn.Module, int]:
    """The reduction block when the stage changes the size or the channels, then ``num_cells`` cells."""
    layers = nn.Sequential()
    if config.stride == 2 or in_channels != config.channels:
        layers.add_module("reduction", _ReductionBlock(in_channels, config.channels, config.stride))
    for index in range(config.num_cells):
        layers.add_module(f"cell{index}", _Cell(config.channels, config.ops))
    return layers, config.channels


# The cell's convs are ReLU-conv-BN and its output a sum of them, so the network needs the
# benchmark's final BN-ReLU (its ``lastact``) before pooling.
register_family(Family(CellStage, build_stage, pre_activation=True))


# NAS-Bench-201's network and architecture strings ------------------------------------------

# The benchmark's stem, and each stage's stride, channels and cells (C = 16, N = 5).
_STEM = {"style": "cifar", "channels": 16, "norm": True, "activation": "none"}
_STAGES = ((1, 16, 5), (2, 32, 5), (2, 64, 5))
_TORCH_BATCH_NORM = {"eps": 1e-5, "momentum": 0.1}  # what a batch norm that sets none uses
_EDGE_KNOBS = tuple(edge_knob(node, source) for node, source in EDGES)
_ABSENT = object()


def arch_string(ops: Sequence[str]) -> str:
    """The benchmark's canonical string of the cell whose edges, in :data:`EDGES` order, carry ``ops``.

    Raises:
        ValueError: not 6 operations of :data:`OPS`.
    """
    if len(ops) != len(EDGES) or not set(ops) <= set(OPS):
        raise ValueError(f"a cell has {len(EDGES)} operations of {', '.join(OPS)}; got {list(ops)}")
    nodes = []
    for node in range(1, NODES):
        nodes.append("|" + "|".join(f"{op}~{source}" for op, (target, source) in zip(ops, EDGES) if target == node) + "|")
    return "+".join(nodes)


def parse_arch_string(text: str) -> tuple[str, ...]:
    """The operations, in :data:`EDGES` order, of a canonical string such as ``|nor_conv_3x3~0|+|none~0|...``.

    Raises:
        ValueError: ``text`` is not a canonical string of this space.
    """
    edges = [edge.partition("~") for node in text.split("+") for edge in node.removeprefix("|").removesuffix("|").split("|")]
    ops = tuple(op for op, _, _ in edges)
    if len(ops) != len(EDGES) or not set(ops) <= set(OPS) or arch_string(ops) != text:
        example = arch_string(CellStage(channels=1).ops)
        raise ValueError(f"{text!r} is not a NAS-Bench-201 architecture string, such as {example!r}")
    return ops


def nasbench201_network(ops: Sequence[str] | str, *, num_classes: int = 10, input_size: int = 32, name: str = "nasbench201") -> Arch:
    """The benchmark's network of one cell, given as its operations in :data:`EDGES` order or as its string.

    Raises:
        ValueError: not a cell of this space.
    """
    ops = parse_arch_string(ops) if isinstance(ops, str) else tuple(ops)
    arch_string(ops)  # refuses what is not a cell
    edges = dict(zip(_EDGE_KNOBS, ops))
    stages = [{"family": "cell", "stride": s, "channels": c, "num_cells": n, **edges} for s, c, n in _STAGES]
    return Arch.from_dict({"name": name, "num_classes": num_classes, "input_size": input_size, "stem": _STEM, "stages": stages})


def nasbench201_arch(arch: Arch) -> str:
    """The canonical string of ``arch``'s cell, if ``arch`` is a NAS-Bench-201 network (of any classes and input size).

    Raises:
        ValueError: it is not; the message names the first thing that differs, in one line.
    """
    first = arch.stages[0]
    ops = first.ops if isinstance(first, CellStage) else CellStage(channels=1).ops
    benchmark = nasbench201_network(ops, num_classes=arch.num_classes, input_size=arch.input_size, name=arch.name)
    difference = _first_difference(_network_data(arch), _network_data(benchmark), "")
    if difference is not None:
        raise ValueError(difference)
    return arch_string(ops)


def is_nasbench201(arch: Arch) -> bool:
    """Whether ``arch`` is a NAS-Bench-201 network, whose string :func:`nasbench201_arch` gives."""
    try:
        nasbench201_arch(arch)
    except ValueError:
        return False
    return True


def _network_data(arch: Arch) -> dict[str, Any]:
    """``arch`` as plain data, less what does not change its network: the head's activation acts only
    on hidden layers or a head conv, and a batch norm at torch's own constants is none set."""
    data = arch.to_dict()
    data["head"].pop("activation")
    if data.get("batch_norm") == _TORCH_BATCH_NORM:
        del data["batch_norm"]
    return data


def _first_difference(value: Any, wanted: Any, key: str) -> str | None:
    """Where ``value`` first differs from the benchmark's ``wanted``, walking mappings and equal-length lists, or None."""
    if isinstance(value, dict) and isinstance(wanted, dict):
        for name in {**wanted, **value}:  # the benchmark's keys first, in its order
            found = _first_difference(value.get(name, _ABSENT), wanted.get(name, _ABSENT), f"{key}.{name}" if key else name)
            if found is not None:
                return found
        return None
    if isinstance(value, list) and isinstance(wanted, list) and len(value) == len(wanted):
        return next(filter(None, (_first_difference(v, w, f"{key}.{i}") for i, (v, w) in enumerate(zip(value, wanted)))), None)
    if value == wanted:
        return None
    if key == "stages":
        return f"the network has {len(value)} stages; NAS-Bench-201 has {len(wanted)}"
    if wanted is _ABSENT:
        return f"{key} is {json.dumps(value)}; NAS-Bench-201 has none"
    repeated = key.rpartition(".")[2] in _EDGE_KNOBS and not key.startswith("stages.0.")
    return f"{key} is {_shown(value)}; NAS-Bench-201's is {_shown(wanted)}" + (
        " (stages.0's cell: NAS-Bench-201 repeats one cell in every stage)" if repeated else "")


def _shown(value: Any) -> str:
    return "none" if value is _ABSENT else value if isinstance(value, str) else json.dumps(value)
