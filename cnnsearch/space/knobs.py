"""Knobs of a search space and what samples them.

A knob is a fixed value (:class:`Fixed`), a list of choices (:class:`Choice`) or a range
(:class:`IntRange`, :class:`FloatRange`). Each draws its value through a
:class:`Suggester`, anything with Optuna's ``suggest_*`` methods, so every Optuna sampler
works. Two suggesters of our own serve without Optuna: :class:`RandomTrial` draws at
random (previews and tests), :class:`CornerTrial` walks the cheapest corners of a space
(candidates for its cheapest point), or the points between a proposal and its cheapest
corners (to bring a proposal within the limits). No torch here.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Choice", "CornerTrial", "Fixed", "FloatRange", "IntRange", "Knob", "RandomTrial", "Suggester", "knob_values"]


class Suggester(Protocol):
    """What :meth:`~.space.Space.sample` needs from a trial: :class:`optuna.trial.Trial` has it."""

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float: ...


@dataclass(frozen=True)
class Fixed:
    """A value that is not searched."""

    value: Any

    def suggest(self, trial: Suggester, name: str) -> Any:
        return self.value

    @property
    def size(self) -> int:
        return 1

    def __str__(self) -> str:
        return json.dumps(self.value)


@dataclass(frozen=True)
class Choice:
    """One of a list of values."""

    choices: tuple[Any, ...]

    def suggest(self, trial: Suggester, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    @property
    def size(self) -> int:
        return len(self.choices)

    def __str__(self) -> str:
        return "one of " + ", ".join(json.dumps(c) for c in self.choices)


@dataclass(frozen=True)
class IntRange:
    """An integer from low to high, both included, in steps of ``step`` or on a log scale."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def suggest(self, trial: Suggester, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    @property
    def size(self) -> int:
        return (self.high - self.low) // self.step + 1

    def __str__(self) -> str:
        return f"int {self.low}..{self.high}" + (f" step {self.step}" if self.step != 1 else "") + (" log" if self.log else "")


@dataclass(frozen=True)
class FloatRange:
    """A number from low to high, continuous unless it has a step, or on a log scale."""

    low: float
    high: float
    step: float | None = None
    log: bool = False

    def suggest(self, trial: Suggester, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    @property
    def size(self) -> int | None:
        return None if self.step is None else int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1

    def __str__(self) -> str:
        return f"float {self.low}..{self.high}" + (f" step {self.step}" if self.step else "") + (" log" if self.log else "")


Knob = Fixed | Choice | IntRange | FloatRange


def knob_values(knob: Knob) -> list[Any]:
    """Every value a discrete knob may take (a float range needs a step)."""
    if isinstance(knob, Fixed):
        return [knob.value]
    if isinstance(knob, Choice):
        return list(knob.choices)
    if isinstance(knob, IntRange):
        return list(range(knob.low, knob.high + 1, knob.step))
    return [round(knob.low + i * knob.step, 12) for i in range(knob.size)]  # no 0.30000000000000004


class RandomTrial:
    """Draws every knob at random from a seeded generator: uniformly, or log-uniformly on a log range.

    :attr:`drawn` holds each value it gave, by name: the knobs of what it sampled.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.drawn: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.drawn[name] = self.rng.choice(choices)
        return self.drawn[name]

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        if log:
            self.drawn[name] = int(round(math.exp(self.rng.uniform(math.log(low), math.log(high)))))
        else:
            self.drawn[name] = low + step * self.rng.randint(0, (high - low) // step)
        return self.drawn[name]

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        if step:
            self.drawn[name] = low + step * self.rng.randint(0, int(math.floor((high - low) / step + 1e-9)))
        elif log:
            self.drawn[name] = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        else:
            self.drawn[name] = self.rng.uniform(low, high)
        return self.drawn[name]


class CornerTrial:
    """The cheap corners of a space, or of the box between them and a point; the categorical knobs are walked like an odometer.

    Each categorical knob (family, block type, stride, flags, ...) takes the choice at the
    prefix's index, 0 past the prefix, its choices ordered with ``near``'s value first: the
    prefix [] keeps the point's own. Each numeric knob (a range, or numeric choices other than
    a stride) takes its smallest value, moved ``keep`` of the way (a number from 0 to 1, or one
    per knob name, else 0) to ``near``'s: costs grow with every numeric knob. With no ``near``
    these are the space's cheapest corners. :attr:`drawn` holds each value it gave, by name,
    and :attr:`shrunk` the numeric knobs it gave less than ``near``'s.
    """

    def __init__(self, prefix: list[int], near: dict[str, Any] | None = None, keep: float | dict[str, float] = 0.0) -> None:
        self.prefix, self.near, self.keep = prefix, near or {}, keep
        self.taken: list[int] = []
        self.arities: list[int] = []
        self.drawn: dict[str, Any] = {}
        self.shrunk: list[str] = []

    def _kept(self, name: str) -> float:
        return self.keep.get(name, 0.0) if isinstance(self.keep, dict) else self.keep

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices)
        own = self.near.get(name)
        if numeric and not name.endswith(".stride"):
            ordered = sorted(choices)
            return self._numeric(name, ordered[math.floor(self._kept(name) * ordered.index(own)) if own in ordered else 0])
        ordered = [own, *(c for c in choices if c != own)] if own in choices else list(choices)
        index = self.prefix[len(self.taken)] if len(self.taken) < len(self.prefix) else 0
        self.taken.append(index)
        self.arities.append(len(choices))
        self.drawn[name] = ordered[index]
        return ordered[index]

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        own, keep = self.near.get(name, low), self._kept(name)
        if log:  # a log range has no step
            value = min(own, max(low, math.floor(low * (own / low) ** keep + 1e-9)))
        else:
            value = low + step * math.floor(keep * ((own - low) // step))
        return self._numeric(name, value)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        own, keep = self.near.get(name, low), self._kept(name)
        if step:
            value = round(low + step * math.floor(keep * round((own - low) / step)), 12)  # on the knob's values (knob_values)
        else:
            value = min(own, low * (own / low) ** keep if log else low + keep * (own - low))  # no rounding past own
        return self._numeric(name, value)

    def _numeric(self, name: str, value: Any) -> Any:
        self.drawn[name] = value
        if name in self.near and value != self.near[name]:
            self.shrunk.append(name)
        return value
