"""Rejecting a proposal before it becomes a trial: fitting it to the data and checking it against the limits.

A proposal (an Optuna trial, or an ablation's cell) becomes an architecture fitted to the
data's classes, image size and channels; it is profiled on the meta device, checked
against the space's limits and the largest node's memory, and its latency is measured on
the driver (a tabular study's latency is its table's, and nothing trains to need memory).
What passes becomes a trial's config, with the memory it reserves in Ray. For a proposal
over the limits, :class:`WithinLimits` finds the nearest point of the space that meets
them, to be proposed in its place (:mod:`.propose` says why). Imports neither Ray nor Optuna.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..config import Arch, ConfigError, Recipe
from ..experiment import Cell, FixedSuggester
from ..names import Metrics, Params
from ..costs import WORKER_BASE, latency, over_limits, profile, training_memory
from ..space import Fixed, Space, Suggester
from ..space.knobs import CornerTrial
from ..tabular import Table, nasbench201_cost
from ..train import data_shape, fit_to_data, resolve_precision
from .settings import Plan

__all__ = ["OverLimits", "Target", "WithinLimits", "cell_config", "check_resumed", "exhausted", "fitted", "fixed_values", "level_param",
           "reservation", "target", "trial_config"]


class OverLimits(ConfigError):
    """A proposal whose architecture is over the space's limits: :class:`WithinLimits` finds one near it that is not."""


@dataclass(frozen=True)
class Target:
    """What each proposal is fitted to and checked against before it becomes a trial."""

    shape: dict[str, int]  # of the data: classes, image size, channels
    memory: float | None  # the largest Ray node's memory resource, in bytes; None when trials train on GPUs
    precision: str  # of the trials: the size of their activations follows it (see target)
    latency_device: str  # what measures latency_ms: cpu, cuda or onnxruntime
    table: Table | None = None  # a tabular study's: its latencies are the table's, and no trial trains


def target(plan: Plan) -> Target:
    """What the plan's proposals are fitted to and checked against.

    Trials on GPUs keep their activations in the GPU's memory, which the driver does not
    check: their precision is the recipe's own (the driver may have no GPU to resolve
    ``auto`` with). A CPU trial's follows this machine's CPU.
    """
    precision = plan.space.recipe.precision
    if plan.table is not None:  # nothing trains: no memory to check, and the networks are the table's
        return Target(plan.table.shape, None, precision, plan.settings["latency_device"], plan.table)
    if not plan.gpus:
        precision = resolve_precision(precision, torch.device("cpu"))
    elif precision == "auto":
        precision = "fp32"  # the larger activations, for an estimate that nothing reserves
    return Target(data_shape(plan.data), None if plan.gpus else plan.memory, precision, plan.settings["latency_device"])


def fitted(space: Space, draw: Suggester, target: Target) -> tuple[Arch, Recipe, dict[str, int]]:
    """The architecture and recipe that ``draw`` (an Optuna trial, or a cell's fixed values) samples from the space, the architecture fitted to the data, and its costs.

    Raises:
        OverLimits: it is over the space's limits.
        ConfigError: it cannot be built or cannot train at the recipe's batch size, or a trial
            of it needs more memory than any node has.
    """
    arch = fit_to_data(space.sample(draw), target.shape)
    recipe = space.sample_recipe(draw)
    if target.table is not None:
        return arch, recipe, _tabular_cost(space, arch, target.table)
    try:
        cost = profile(arch)  # on the meta device: nothing is allocated
    except (RuntimeError, ValueError) as error:  # e.g. a feature map shrunk to nothing
        raise ConfigError(f"cannot be built: {str(error).strip().splitlines()[0]}") from None
    violation = over_limits(space.limits, cost)
    if violation:
        raise OverLimits(violation)
    # A training forward on the meta device: an architecture that cannot train at this batch
    # size is rejected here rather than failed in a worker.
    estimate = training_memory(arch, recipe.batch_size, target.precision).total
    # On a GPU the activations live in its memory; the host keeps a worker's base.
    memory = WORKER_BASE if target.memory is None else estimate
    if target.memory is not None and memory > target.memory:
        raise ConfigError(
            f"a trial needs about {memory / 2**30:.1f} GiB of memory at batch {recipe.batch_size}, more than the "
            f"{target.memory / 2**30:.1f} GiB of the largest Ray node; lower recipe.batch_size or narrow the space"
        )
    try:
        # Here, not in the trial: one machine measures every trial, and the value is known
        # before training, as MACs are, to the sampler and to a resumed trial's config.
        milliseconds = latency(arch, target.latency_device)
    except Exception as error:  # e.g. an operation the ONNX exporter lacks: the network cannot run there
        raise ConfigError(f"its latency cannot be measured on {target.latency_device}: {str(error).strip().splitlines()[0]}") from None
    return arch, recipe, {Metrics.PARAMS: cost.params, Metrics.MACS: cost.macs, Metrics.FLOPS: cost.flops, Metrics.LATENCY: milliseconds,
                          Metrics.MEMORY_ESTIMATE: memory / 2**20}


# Bringing a proposal within the limits: at most this many combinations of its categorical
# knobs are tried, nearest first (as many as Space.smallest enumerates), and each bisection of
# how far its numeric knobs go back toward it halves the interval this many times (a numeric
# knob of 16 values or fewer lands on the last one that fits). A try is a profile on the meta
# device: tens of milliseconds.
WITHIN_LIMITS_CORNERS = 32
WITHIN_LIMITS_STEPS = 4


class WithinLimits:
    """Points of a space that meet its limits, near the proposals that do not.

    Each point's architecture is fitted to data of ``shape`` and profiled at most once: the
    corners that proposals share (their numeric knobs at their smallest) are profiled once a study.
    """

    def __init__(self, space: Space, shape: dict[str, int]) -> None:
        self.space, self.shape = space, shape
        self._meets: dict[str, bool] = {}  # by a point's knobs

    def nearest(self, values: dict[str, Any]) -> dict[str, Any] | None:
        """A point near ``values`` (a proposal's knobs) that meets the limits: its knobs; None when no point tried does.

        The proposal's categorical knobs (family, block type, flags, ...) stay as they are if
        its smallest numeric values meet the limits; else the nearest combination that does is
        taken, changing the last-asked knobs first. Then all numeric knobs move from their
        smallest values toward the proposal's by one common fraction, the largest that meets
        the limits, and then each in turn as far on as it can: no knob of the point can grow
        toward the proposal without breaking the limits. Costs are taken to grow with every
        numeric knob, as in :meth:`Space.smallest`. The recipe's knobs stay the proposal's.
        """
        pending: list[list[int]] = [[]]
        for _ in range(WITHIN_LIMITS_CORNERS):
            if not pending:
                break
            corner = CornerTrial(pending.pop(), values)
            if self._fits(corner):
                recipe = {name: values[name] for name in (f"recipe.{key}" for key in self.space.recipe_knobs) if name in values}
                return self._grown(corner, values) | recipe
            pending += [corner.taken[:depth] + [alternative]
                        for depth in range(len(corner.prefix), len(corner.arities)) for alternative in range(1, corner.arities[depth])]
        return None

    def _fits(self, trial: CornerTrial) -> bool:
        """Whether the point ``trial`` draws meets the limits; a point that is no valid network does not."""
        try:
            arch = fit_to_data(self.space.sample(trial), self.shape)
        except ConfigError:
            return False
        point = json.dumps(trial.drawn, sort_keys=True)
        if point not in self._meets:
            try:
                self._meets[point] = over_limits(self.space.limits, profile(arch)) is None
            except (RuntimeError, ValueError):  # e.g. a feature map shrunk to nothing, as fitted() finds
                self._meets[point] = False
        return self._meets[point]

    def _grown(self, corner: CornerTrial, values: dict[str, Any]) -> dict[str, Any]:
        """The knobs of a point that meets the limits: ``corner`` (which does) with its numeric knobs grown toward ``values``."""
        def at(keep: float | dict[str, float]) -> CornerTrial | None:
            trial = CornerTrial(corner.prefix, values, keep)
            return trial if self._fits(trial) else None

        common, point = _furthest(at, 0.0, corner)
        keeps = dict.fromkeys(point.drawn, common)
        for name in list(point.shrunk):
            keeps[name], point = _furthest(lambda keep, name=name: at(keeps | {name: keep}), common, point)
        return point.drawn


def _furthest(at: Callable[[float], CornerTrial | None], low: float, at_low: CornerTrial) -> tuple[float, CornerTrial]:
    """The largest fraction from ``low`` (whose point ``at_low`` meets the limits) to 1 at which ``at`` gives a point, and that point."""
    if (trial := at(1.0)) is not None:
        return 1.0, trial
    high = 1.0
    for _ in range(WITHIN_LIMITS_STEPS):
        middle = (low + high) / 2
        if (trial := at(middle)) is not None:
            low, at_low = middle, trial
        else:
            high = middle
    return low, at_low


def _tabular_cost(space: Space, arch: Arch, table: Table) -> dict[str, float]:
    """The costs of a tabular trial's network, checked against the limits: its own params, MACs and FLOPs, the table's latency."""
    cost = nasbench201_cost(arch)
    violation = over_limits(space.limits, cost)
    if violation:
        raise OverLimits(violation)
    return {Metrics.PARAMS: cost.params, Metrics.MACS: cost.macs, Metrics.FLOPS: cost.flops, Metrics.LATENCY: table.latency_ms(arch)}


# Tune reuses a finished trial's worker only for a trial that asks for exactly the same
# resources: reservations rounded up to this grain keep workers alive across trials whose
# estimates differ by a few MiB (a fresh worker costs about 2 s).
MEMORY_GRAIN = 256 * 2**20


def reservation(config: dict[str, Any], largest: float) -> int:
    """The bytes of memory a trial reserves in Ray: its estimate rounded up to the grain, but never
    past ``largest``, the largest node's memory: a reservation that no node can hold would leave the
    trial pending for ever, and Tune does not say so."""
    estimate = config["cost"].get(Metrics.MEMORY_ESTIMATE, WORKER_BASE / 2**20) * 2**20
    return min(math.ceil(estimate / MEMORY_GRAIN) * MEMORY_GRAIN, max(int(largest), math.ceil(estimate)))


def check_resumed(configs: list[dict[str, Any]], target: Target) -> None:
    """Refuse to resume trials that need more memory than the largest node has now (a smaller
    cluster than the one they began on), as :func:`fitted` refuses a new proposal."""
    for config in configs if target.memory is not None else ():
        needed = config["cost"].get(Metrics.MEMORY_ESTIMATE, 0) * 2**20
        if needed > target.memory:
            raise ConfigError(
                f"an interrupted trial needs about {needed / 2**30:.1f} GiB of memory, more than the {target.memory / 2**30:.1f} GiB "
                "of the largest Ray node now; resume it on nodes with more memory"
            )


def trial_config(arch: Arch, recipe: Recipe, cost: dict[str, int], record: dict[str, Any], seed: int,
                 cell: str | None = None) -> dict[str, Any]:
    """What a Tune trial receives: the architecture and recipe to train, and what the driver records of it (the seed among it)."""
    return {"arch": arch.to_dict(), "recipe": recipe.model_dump(mode="json"), "cost": cost, "record": record | {Params.SEED: seed}, "cell": cell}


def fixed_values(space: Space) -> dict[str, Any]:
    """The knobs that the space fixes: recorded with every trial, though never searched."""
    return {name: knob.value for name, knob in space.knobs().items() if isinstance(knob, Fixed)}


def level_param(level: Any) -> Any:
    """A factor's level as a trial's param: a level that sets several knobs is a JSON list."""
    return json.dumps(level) if isinstance(level, list) else level


def cell_config(space: Space, cell: Cell, target: Target, seed: int) -> dict[str, Any]:
    """An ablation cell as a trial: its replicate offsets the seed."""
    try:
        arch, recipe, cost = fitted(space, FixedSuggester(cell.knobs), target)
    except ConfigError as error:  # the experiment checked the cells before they were fitted to the data
        raise ConfigError(f"{space.source}: cell {cell.levels}: {error}") from None
    levels = {name: level_param(level) for name, level in cell.levels.items()}
    record = fixed_values(space) | cell.knobs | levels | {"replicate": cell.replicate}
    return trial_config(arch, recipe, cost, record, seed + cell.replicate, cell=cell.key)


def exhausted(space: Space, turned_away: int, rejected: list[dict[str, Any]], trained: int, missing: int) -> ConfigError:
    """The error of a search whose proposals were turned away ``turned_away`` times in this session, so that too few trials trained.

    ``rejected`` holds the study's rejected proposals, each with its reason.
    """
    trained_line = f"so only {trained} of {missing} trials trained"
    # A reason's kind: "cannot be built", "cannot train at batch 128", or over a limit (over_limits's "... > max_params ...").
    kinds = Counter("limits" if "> max_" in row["reason"] else row["reason"].split(":")[0] for row in rejected)
    kind, count = kinds.most_common(1)[0]
    if kind == "limits":
        return ConfigError(f"{space.source}: its limits turned away {turned_away} proposals in this session, {trained_line}; "
                           "raise limits.max_params or limits.max_macs, or narrow the space")
    return ConfigError(f"{space.source}: {turned_away} proposals were turned away in this session ({count} of the study's "
                       f"{len(rejected)}: {kind}), {trained_line}; narrow the space")
