"""Designed ablations: factors with levels over a search space, replicated cells, a budget.

An experiment file names a space, fixes every searched knob that is not a factor
(``base``), and gives the factors and their levels. A factor is one knob
(``dense.growth_rate: [12, 24, 32]``) or a named group of knobs that move together
(``depth: {knobs: [stages.0.residual.num_blocks, ...], levels: [1, 3, 5]}``; a level is
one value for every knob or a list with one value per knob). The design enumerates the
cells: every combination of levels (full factorial) or the base with one factor changed
at a time; each cell runs ``replicates`` times with different seeds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import ConfigError, format_validation_error, load_yaml
from .costs import over_limits, profile
from .space import Choice, FloatRange, Fixed, IntRange, Knob, Space, load_space

__all__ = ["Cell", "Experiment", "Factor", "FixedSuggester", "load_experiment"]


class Factor(BaseModel):
    """A factor: the knobs it sets and its levels."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    knobs: tuple[str, ...] = Field(min_length=1)
    levels: tuple[Any, ...] = Field(min_length=1)

    def values(self, level: Any) -> dict[str, Any]:
        """The knob values of one level."""
        if isinstance(level, list):
            return dict(zip(self.knobs, level))
        return {knob: level for knob in self.knobs}


class FixedSuggester:
    """A :class:`~cnnsearch.space.Suggester` that draws the given value of each knob: a cell's architecture from its knob values."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def _value(self, name: str) -> Any:
        if name not in self.values:
            # Optuna's FixedTrial's words, which this suggester replaced: the user reads them after "base: ".
            raise ValueError(f"The value of the parameter '{name}' is not found. Please set it at the construction of the FixedTrial object.")
        return self.values[name]

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self._value(name)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return int(self._value(name))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        return self._value(name)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    description: str = ""
    space: str
    base: dict[str, Any] = {}
    factors: dict[str, list[Any] | Factor] = Field(min_length=1)
    design: Literal["full_factorial", "one_at_a_time"] = "full_factorial"
    replicates: int = Field(default=3, ge=1)
    dataset: dict[str, Any] = {}
    budget: dict[str, Any] = {}
    recipe: dict[str, Any] = {}
    limits: dict[str, Any] = {}


@dataclass(frozen=True)
class Cell:
    """One trial of the design: a level of each factor, the knob values, which replicate."""

    index: int
    levels: dict[str, Any]  # factor name -> level
    knobs: dict[str, Any]  # every searched knob of the space -> value
    replicate: int

    @property
    def key(self) -> str:
        """Names the cell across runs of the experiment (an index changes with the replicates)."""
        return json.dumps([self.levels, self.replicate], sort_keys=True)


@dataclass(frozen=True)
class Experiment:
    """A validated experiment. Build one with :func:`load_experiment`."""

    name: str
    source: str
    digest: str
    description: str
    space: Space
    factors: dict[str, Factor]
    design: str
    replicates: int
    base: dict[str, Any]  # the searched knobs that no factor sets (and, one at a time, the factors' baseline)
    cells: tuple[Cell, ...]

    @property
    def baseline(self) -> dict[str, Any]:
        """One factor at a time: each factor's baseline level; empty for a full factorial."""
        return _baseline(self.factors, self.base, self.source) if self.design == "one_at_a_time" else {}

    def with_replicates(self, replicates: int) -> Experiment:
        """The same design with another number of replicates per cell."""
        cells = _cells(self.space, self.factors, self.base, self.design, replicates, self.source)
        return dataclasses.replace(self, replicates=replicates, cells=cells)


def _allowed(knob: Knob, value: Any) -> bool:
    if isinstance(knob, Choice):
        return any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in knob.choices)
    if isinstance(knob, IntRange):
        return isinstance(value, int) and knob.low <= value <= knob.high and (value - knob.low) % knob.step == 0
    if isinstance(knob, FloatRange):
        return isinstance(value, (int, float)) and knob.low <= value <= knob.high
    return False


def _baseline(factors: dict[str, Factor], base: dict[str, Any], source: str) -> dict[str, Any]:
    """Each factor's level that the base holds: one factor at a time varies them from there."""
    baseline = {}
    for n, factor in factors.items():
        values = {k: base.get(k) for k in factor.knobs}
        level = next((lvl for lvl in factor.levels if factor.values(lvl) == values), None)
        if level is None:
            raise ConfigError(f"{source}: base: one factor at a time needs the base to hold a level of factor {n!r}")
        baseline[n] = level
    return baseline


def _cells(space: Space, factors: dict[str, Factor], base: dict[str, Any], design: str, replicates: int, source: str) -> tuple[Cell, ...]:
    names = list(factors)
    if design == "full_factorial":
        combos = list(itertools.product(*(factors[n].levels for n in names)))
    else:
        baseline = list(_baseline(factors, base, source).values())
        combos = [tuple(baseline)]
        for i, n in enumerate(names):
            combos += [tuple(baseline[:i]) + (lvl,) + tuple(baseline[i + 1 :]) for lvl in factors[n].levels if lvl != baseline[i]]
    cells = []
    for combo in combos:
        values = dict(base)
        for n, level in zip(names, combo):
            values |= factors[n].values(level)
        try:
            cost = profile(space.sample(FixedSuggester(values)))
        except ValueError as error:  # FixedSuggester: a searched knob with no value; ConfigError: an invalid network
            missing = str(error)
            if isinstance(error, ConfigError):
                raise ConfigError(f"{source}: cell {dict(zip(names, combo))}: {error}") from None
            raise ConfigError(f"{source}: base: {missing} (give every searched knob that is not a factor a value)") from None
        violation = over_limits(space.limits, cost)
        if violation:
            raise ConfigError(f"{source}: cell {dict(zip(names, combo))}: {violation}; raise the limits in the experiment file")
        for replicate in range(replicates):
            cells.append(Cell(len(cells), dict(zip(names, combo)), values, replicate))
    return tuple(cells)


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment file; its space path is relative to the file.

    Raises:
        ConfigError: the file, its space or its factors are invalid; the message names
            the file and the key.
    """
    path = Path(path)
    doc = load_yaml(path)
    try:
        raw = _File.model_validate(doc)
    except ValidationError as error:
        raise format_validation_error(error, str(path)) from None
    space_path = (path.parent / raw.space) if not Path(raw.space).is_absolute() else Path(raw.space)
    space = load_space(space_path)
    sections = {key: getattr(raw, key) for key in ("dataset", "budget", "recipe", "limits") if getattr(raw, key)}
    space = space.override(**sections) if sections else space
    knobs = space.knobs()
    factors = {name: f if isinstance(f, Factor) else Factor(knobs=(name,), levels=tuple(f)) for name, f in raw.factors.items()}
    for name, factor in factors.items():
        for level in factor.levels:
            if isinstance(level, list) and len(level) != len(factor.knobs):
                raise ConfigError(f"{path}: factors.{name}: level {level} needs one value per knob ({len(factor.knobs)})")
            for knob, value in factor.values(level).items():
                _check_knob(path, f"factors.{name}", knobs, knob, value)
    for knob, value in raw.base.items():
        _check_knob(path, "base", knobs, knob, value)
    cells = _cells(space, factors, raw.base, raw.design, raw.replicates, str(path))
    digest = hashlib.sha256(json.dumps([doc, space.digest], sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Experiment(raw.name or path.stem, str(path), digest, raw.description, space, factors, raw.design, raw.replicates, raw.base, cells)


def _check_knob(path: Path, where: str, knobs: dict[str, Knob], name: str, value: Any) -> None:
    knob = knobs.get(name)
    if knob is None:
        raise ConfigError(f"{path}: {where}: {name!r} is not a knob of the space (its knobs: {', '.join(knobs)})")
    if isinstance(knob, Fixed):
        raise ConfigError(f"{path}: {where}: {name} is fixed at {knob} in the space; only searched knobs can vary")
    if not _allowed(knob, value):
        raise ConfigError(f"{path}: {where}: {name}: {value!r} is outside the space ({knob})")
