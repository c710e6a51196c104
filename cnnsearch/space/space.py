"""The search space as a value: :class:`Space`, its sections, and what it answers.

A :class:`Space` holds templates of knobs (stem, head, each stage, the knobs a family's
stages share, the searched recipe keys) and the sections a study reads: :class:`Limits`,
:class:`DatasetSpec`, :class:`Budget`, :class:`SearchSpec` and its :class:`Objective`
list. It draws architectures and recipes (:meth:`Space.sample`, define-by-run), lists its
knobs, counts its points, gives its grid (a point holds the knobs of its own families only:
:mod:`.grid`), finds candidates for its cheapest point, and takes overrides of its sections.
Reading a space file is :mod:`.parse`'s job. No torch here.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from ..config import Arch, ConfigError, Recipe, format_validation_error
from ..names import DATASETS, PROXIES, PROXY_AGGREGATES, SAMPLERS, Metrics
from .grid import Grid
from .knobs import Choice, CornerTrial, Fixed, FloatRange, Knob, RandomTrial, Suggester, knob_values

__all__ = [
    "ACCURACY",
    "Budget",
    "DatasetSpec",
    "Limits",
    "Objective",
    "ObjectiveMetric",
    "SearchSpec",
    "Space",
    "StageTemplate",
    "Template",
    "count",
    "flatten",
]

# A template is a nested dict whose leaves are knobs; lists hold the rows of a table knob
# (templates) or the elements of a list knob (knobs).
Template = dict[str, Any]


def flatten(template: Template, prefix: str) -> dict[str, Knob]:
    """The knobs of a template by dotted name, each under ``prefix``."""
    knobs: dict[str, Knob] = {}
    for key, node in template.items():
        name = f"{prefix}.{key}"
        if isinstance(node, list):
            for index, item in enumerate(node):
                knobs.update(flatten(item, f"{name}.{index}") if isinstance(item, dict) else {f"{name}.{index}": item})
        else:
            knobs[name] = node
    return knobs


# Sections used by later stages of a study ------------------------------------------------


def count(value: Any) -> Any:
    """Counts may be written 1500000, 1.5e6 or 1.5M (K, M, G)."""
    if isinstance(value, str):
        text = value.strip().upper()
        scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
        try:
            value = float(text[:-1] if scale != 1 else text) * scale
        except ValueError:
            return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Count = Annotated[int, BeforeValidator(count), Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Limits(_Section):
    """Cost limits: an architecture over them is rejected before it is trained (:func:`cnnsearch.costs.over_limits`)."""

    max_params: Count | None = None
    max_macs: Count | None = None


class DatasetSpec(_Section):
    """``cifar10``, ``cifar100``, ``synthetic`` or ``imagefolder:PATH``, split into test, train and validation."""

    name: str = "cifar10"
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of the images left after the test hold-out")
    test_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="held out as the test split when the data set has no test images of its own; "
        "0.1: of 50,000 images, 5,000 test images put a 95% interval within 1.4 points"
    )
    subset: int | None = Field(None, ge=1, description="train on this many images only, for short trials")
    val_subset: int | None = Field(
        None, ge=1, description="validate trials on a fixed, seeded sample of this many held-out images; export uses them all"
    )
    split_seed: int = 0

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name in DATASETS or (name.startswith("imagefolder:") and len(name) > 12):
            return name
        raise ValueError(f"unknown dataset {name!r}; use {', '.join(DATASETS[:-1])} or {DATASETS[-1]}")

    @property
    def num_classes(self) -> int | None:
        return {"cifar10": 10, "cifar100": 100}.get(self.name)


class Budget(_Section):
    """Training budget of one trial; the first limit reached ends it."""

    epochs: int = Field(10, ge=1)
    max_images: Count | None = None
    max_seconds: float | None = Field(None, gt=0)


class Prefilter(_Section):
    """Each trial is the best of ``pool`` proposals by a zero-cost proxy (:mod:`cnnsearch.proxies`); the others are never trained."""

    proxy: Literal[PROXIES + PROXY_AGGREGATES] = Field(description="the proxy or aggregate that ranks a pool's proposals")
    pool: int = Field(ge=1, description="K: proposals scored per trial; 1 scores one and trains it")

    @classmethod
    def parse(cls, text: str) -> Prefilter:
        """``NAME:K``, as ``--prefilter`` takes it.

        Raises:
            ConfigError: not NAME:K, an unknown proxy, or K < 1; in one line.
        """
        name, _, pool = text.partition(":")
        if not pool.lstrip("-").isdigit():
            raise ConfigError(f"--prefilter {text}: expected PROXY:POOL, such as synflow:10")
        try:
            return cls(proxy=name, pool=int(pool))
        except ValidationError as error:
            raise ConfigError(f"--prefilter {text}: {format_validation_error(error, '')}") from None


class SearchSpec(_Section):
    sampler: Literal[SAMPLERS] | None = Field(None, description="default: tpe, or nsga2 with several objectives")
    trials: int = Field(20, ge=1)
    prefilter: Prefilter | None = Field(None, description="train only the best of each pool of proposals by a zero-cost proxy")


ObjectiveMetric = Literal[Metrics.VAL_ACC, Metrics.PARAMS, Metrics.MACS, Metrics.FLOPS, Metrics.LATENCY]


class Objective(_Section):
    """One objective of a study: a metric that each trial records, and whether more or less of it is better."""

    metric: ObjectiveMetric
    goal: Literal["max", "min"]

    @property
    def direction(self) -> str:
        """Optuna's word for the goal."""
        return "maximize" if self.goal == "max" else "minimize"


ACCURACY = Objective(metric=Metrics.VAL_ACC, goal="max")


# The space ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageTemplate:
    """One stage of a space: its family and stride knobs, and the knobs it sets for itself."""

    family: Knob
    stride: Knob
    overrides: dict[str, Template]  # family name -> knobs of that family for this stage only


@dataclass(frozen=True)
class Space:
    """A validated search space. Build one with :func:`~.parse.load_space`."""

    name: str
    source: str
    digest: str
    description: str
    fixed: dict[str, int]
    stem: Template
    head: Template
    stages: tuple[StageTemplate, ...]
    shared: dict[str, Template]  # family name -> knobs shared by its stages
    limits: Limits
    dataset: DatasetSpec
    budget: Budget
    recipe: Recipe  # with the searched keys at their defaults: see sample_recipe
    search: SearchSpec
    objectives: tuple[Objective, ...] = (ACCURACY,)
    recipe_knobs: dict[str, Knob] = dataclasses.field(default_factory=dict)  # the searched recipe keys, by key

    @property
    def sampler(self) -> str:
        """The sampler the space asks for; by default TPE, or NSGA-II for several objectives."""
        return self.search.sampler or ("nsga2" if len(self.objectives) > 1 else "tpe")

    def sample(self, trial: Suggester) -> Arch:
        """Draw one architecture, define-by-run: a family's knobs are asked for only when a stage uses it.

        Raises:
            ConfigError: the drawn values do not make a valid network (for example a
                32x32 input shrunk below 1x1); the message names the key. A search
                rejects such a trial.
        """
        drawn: dict[str, Any] = {}

        def value(name: str, knob: Knob) -> Any:
            if name not in drawn:
                drawn[name] = knob.suggest(trial, name)
            return drawn[name]

        def fill(template: Template, prefix: str) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, node in template.items():
                name = f"{prefix}.{key}"
                if isinstance(node, list):
                    out[key] = [fill(item, f"{name}.{i}") if isinstance(item, dict) else value(f"{name}.{i}", item) for i, item in enumerate(node)]
                else:
                    out[key] = value(name, node)
            return out

        stages = []
        for index, stage in enumerate(self.stages):
            family = value(f"stages.{index}.family", stage.family)
            config = {"family": family, "stride": value(f"stages.{index}.stride", stage.stride)}
            own = stage.overrides.get(family, {})
            shared = {key: node for key, node in self.shared.get(family, {}).items() if key not in own}
            config |= fill(shared, family) | fill(own, f"stages.{index}.{family}")
            stages.append(config)
        data = {"name": self.name, **self.fixed, "stem": fill(self.stem, "stem"), "head": fill(self.head, "head"), "stages": stages}
        return Arch.from_dict(data, source="")

    def sample_recipe(self, trial: Suggester) -> Recipe:
        """The recipe a trial trains with: the space's, with each searched key drawn (as ``recipe.KEY``)."""
        drawn = {key: knob.suggest(trial, f"recipe.{key}") for key, knob in self.recipe_knobs.items()}
        return self.recipe.model_copy(update=drawn) if drawn else self.recipe

    def override(self, **sections: dict[str, Any]) -> Space:
        """The space with values of its dataset, budget, recipe, limits or search sections replaced.

        A replaced recipe key that the space searches is searched no more.

        Raises:
            ConfigError: a replaced value is invalid; the message names the section and key.
        """
        space = self
        for section, values in sections.items():
            current = getattr(space, section)
            try:
                updated = type(current).model_validate(current.model_dump() | values)
            except ValidationError as error:
                raise format_validation_error(error, self.source, prefix=section) from None
            space = dataclasses.replace(space, **{section: updated})
            if section == "recipe":
                space = dataclasses.replace(space, recipe_knobs={k: v for k, v in space.recipe_knobs.items() if k not in values})
        return space

    def knobs(self) -> dict[str, Knob]:
        """Every knob that a trial may be asked for, by dotted name (fixed values included)."""
        knobs: dict[str, Knob] = {**flatten(self.stem, "stem"), **flatten(self.head, "head")}
        for family, template in self.shared.items():
            knobs.update(flatten(template, family))
        for index, stage in enumerate(self.stages):
            knobs[f"stages.{index}.family"] = stage.family
            knobs[f"stages.{index}.stride"] = stage.stride
            for family, template in stage.overrides.items():
                knobs.update(flatten(template, f"stages.{index}.{family}"))
        knobs.update({f"recipe.{key}": knob for key, knob in self.recipe_knobs.items()})
        return knobs

    def size(self) -> int | None:
        """How many distinct points the space holds, or None when a reachable knob is continuous."""
        total = 0
        for knobs in self._points():
            count = _product(list(knobs.values()))
            if count is None:
                return None
            total += count
        return total

    def grid(self) -> Grid:
        """Every point of the space: for each combination of the stages' families, the product of the knobs it asks for.

        Raises:
            ConfigError: a knob is continuous (a float range without a step).
        """
        products = []
        for knobs in self._points():
            for name, knob in knobs.items():
                if isinstance(knob, FloatRange) and knob.step is None:
                    raise ConfigError(f"{self.source}: {name}: a grid needs discrete knobs; give this range a step")
            products.append({name: tuple(knob_values(knob)) for name, knob in knobs.items() if not isinstance(knob, Fixed)})
        return Grid(tuple(products))

    def _points(self) -> Iterator[dict[str, Knob]]:
        """For each combination of the stages' families, the knobs that :meth:`sample` draws for it, by name.

        A stage's family is a choice of one there: it is drawn, but takes the combination's value.
        """
        for families in itertools.product(*(knob_values(stage.family) for stage in self.stages)):
            knobs: dict[str, Knob] = {**flatten(self.stem, "stem"), **flatten(self.head, "head")}
            shared: dict[str, Template] = {}
            for index, (stage, family) in enumerate(zip(self.stages, families)):
                own = stage.overrides.get(family, {})
                knobs[f"stages.{index}.family"] = stage.family if isinstance(stage.family, Fixed) else Choice((family,))
                knobs[f"stages.{index}.stride"] = stage.stride
                knobs |= flatten(own, f"stages.{index}.{family}")
                shared.setdefault(family, {}).update({key: node for key, node in self.shared.get(family, {}).items() if key not in own})
            for family, template in shared.items():
                knobs |= flatten(template, family)
            yield knobs | {f"recipe.{key}": knob for key, knob in self.recipe_knobs.items()}

    def sample_random(self, seed: int) -> Arch:
        """One uniformly drawn architecture, without Optuna (for previews and tests)."""
        return self.sample(RandomTrial(random.Random(seed)))

    def smallest(self, limit: int = 32) -> tuple[list[Arch | ConfigError], bool]:
        """Candidates for the cheapest point of the space.

        Every numeric knob takes its smallest value (costs grow with all of them); the
        categorical ones (family, block type, stride, flags, ...) are enumerated, up to
        ``limit`` combinations. Returns the candidates (or why each is invalid) and
        whether the enumeration was complete.
        """
        results: list[Arch | ConfigError] = []
        pending: list[list[int]] = [[]]
        while pending and len(results) < limit:
            trial = CornerTrial(pending.pop())
            try:
                results.append(self.sample(trial))
            except ConfigError as error:
                results.append(error)
            for depth in range(len(trial.prefix), len(trial.arities)):
                for alternative in range(1, trial.arities[depth]):
                    pending.append(trial.taken[:depth] + [alternative])
        return results, not pending


def _product(knobs: list[Knob]) -> int | None:
    count = 1
    for knob in knobs:
        if knob.size is None:
            return None
        count *= knob.size
    return count
