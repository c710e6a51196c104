"""Search spaces: YAML files whose knobs are fixed values, lists of choices or ranges.

A space mirrors an architecture file (stem, stages, head) but any value may be a knob:

* a plain value is fixed: ``growth_rate: 12``;
* a list is a choice: ``growth_rate: [12, 24, 32]``;
* a mapping is a range: ``num_layers: {low: 6, high: 24, step: 2}``,
  ``dropout: {low: 0.0, high: 0.3}``, ``width: {low: 16, high: 256, log: true}``.

A knob whose value is itself a list (inception ``modules``, the head's ``hidden`` widths)
is given element by element, each element a knob: ``hidden: [[256, 512], 512]`` is two
hidden layers, the first 256 or 512 wide (named ``head.hidden.0``).

Family knobs shared by every stage of a family sit in a top-level section named after
it (``dense: {growth_rate: [12, 24]}``, sampled once as ``dense.growth_rate``); a stage
may override them in its own section (``stages.2.dense.num_layers``). Each stage picks
its family, so a mixed space chooses the family per stage, and a family's knobs are
only sampled when a stage uses it. Sampling is define-by-run through anything with
Optuna's ``suggest_*`` methods, so every Optuna sampler works. No torch here.

The training recipe may hold knobs too (``recipe: {lr: {low: 0.01, high: 0.3, log: true},
batch_size: [32, 64]}``): they are drawn with the architecture, named ``recipe.lr``, and
each trial trains with its own recipe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError, field_validator
from pydantic.fields import FieldInfo

from .config import Arch, ConfigError, Head, Recipe, Row, Stem, format_validation_error, load_yaml
from .registry import get_family, list_families

__all__ = [
    "ACCURACY",
    "Budget",
    "Choice",
    "DatasetSpec",
    "FloatRange",
    "Fixed",
    "IntRange",
    "Knob",
    "Limits",
    "Objective",
    "SearchSpec",
    "Space",
    "Suggester",
    "count",
    "load_space",
]


class Suggester(Protocol):
    """What :meth:`Space.sample` needs from a trial: :class:`optuna.trial.Trial` has it."""

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float: ...


# Knobs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixed:
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


class _Bad(Exception):
    """A problem at a key path of the space document."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)


def _adapter(field: FieldInfo) -> TypeAdapter:
    if get_origin(field.annotation) is Literal:  # exact already; Strict() does not apply
        return TypeAdapter(field.annotation)
    return TypeAdapter(Annotated[(field.annotation, Strict(), *field.metadata)])


def _check(adapter: TypeAdapter, value: Any, path: str) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError as error:
        first = error.errors()[0]
        raise _Bad(path, f"{first['msg']}, got {value!r}") from None


def _parse_knob(raw: Any, field: FieldInfo, path: str) -> Knob:
    adapter = _adapter(field)
    if isinstance(raw, list):
        if not raw:
            raise _Bad(path, "empty list of choices")
        choices = tuple(_check(adapter, value, path) for value in raw)
        if len(set(choices)) != len(choices):
            raise _Bad(path, f"duplicate choices in {raw}")
        return Choice(choices) if len(choices) > 1 else Fixed(choices[0])
    if not isinstance(raw, dict):
        return Fixed(_check(adapter, raw, path))
    kind = field.annotation
    if kind not in (int, float):
        raise _Bad(path, "a range {low, high} needs a numeric knob; give a value or a list of choices")
    unknown = set(raw) - {"low", "high", "step", "log"}
    if unknown:
        raise _Bad(path, f"unknown range key {sorted(unknown)[0]!r}; a range has low, high, step, log")
    if "low" not in raw or "high" not in raw:
        raise _Bad(path, "a range needs both low and high")
    low, high = _check(adapter, raw["low"], f"{path}.low"), _check(adapter, raw["high"], f"{path}.high")
    if low > high:
        raise _Bad(path, f"low {raw['low']} > high {raw['high']}")
    log = _check(TypeAdapter(Annotated[bool, Strict()]), raw.get("log", False), f"{path}.log")
    if log and low <= 0:
        raise _Bad(path, f"a log range needs low > 0, got {raw['low']}")
    if kind is int:
        step = _check(TypeAdapter(Annotated[int, Strict(), Field(ge=1)]), raw.get("step", 1), f"{path}.step")
        if log and step != 1:
            raise _Bad(path, "a log range cannot have a step")
        return IntRange(low, high, step, log)
    step = raw.get("step")
    if step is not None:
        step = _check(TypeAdapter(Annotated[float, Strict(), Field(gt=0)]), step, f"{path}.step")
        if log:
            raise _Bad(path, "a log range cannot have a step")
    return FloatRange(low, high, step, log)


# A template is a nested dict whose leaves are knobs; lists hold the rows of a table knob
# (templates) or the elements of a list knob (knobs).
Template = dict[str, Any]


def _parse_struct(model: type[BaseModel], raw: Any, path: str, skip: tuple[str, ...] = ()) -> Template:
    if not isinstance(raw, dict):
        raise _Bad(path, f"expected a mapping, got {raw!r}")
    known = [name for name in model.model_fields if name not in skip]
    template: Template = {}
    for key, value in raw.items():
        if key not in known:
            owner = f"not a knob of family {model.model_fields['family'].default}" if "family" in model.model_fields else "unknown key"
            raise _Bad(f"{path}.{key}" if path else str(key), f"{owner} (known: {', '.join(known)})")
        where = f"{path}.{key}" if path else key
        row = _row_model(model.model_fields[key])
        if row is not None:
            if not isinstance(value, list) or not value:
                raise _Bad(where, f"expected a non-empty list of rows ({', '.join(row.model_fields)})")
            template[key] = [_parse_struct(row, _row_mapping(row, item, f"{where}.{i}"), f"{where}.{i}") for i, item in enumerate(value)]
        elif (element := _element_field(model.model_fields[key])) is not None:
            if not isinstance(value, list):
                raise _Bad(where, f"expected a list of values, got {value!r}")
            template[key] = [_parse_knob(item, element, f"{where}.{i}") for i, item in enumerate(value)]
        else:
            template[key] = _parse_knob(value, model.model_fields[key], where)
    return template


def _element_field(field: FieldInfo) -> FieldInfo | None:
    """The element of a knob that is a list of numbers (``tuple[int, ...]``): each element is a knob of its own."""
    args = get_args(field.annotation)
    if get_origin(field.annotation) is tuple and args and args[-1] is Ellipsis:
        return FieldInfo.from_annotation(args[0])
    return None


def _row_model(field: FieldInfo) -> type[Row] | None:
    """The row type of a knob that is a table (``tuple[SomeRow, ...]``), else None."""
    args = get_args(field.annotation)
    if get_origin(field.annotation) is tuple and args and isinstance(args[0], type) and issubclass(args[0], Row):
        return args[0]
    return None


def _row_mapping(model: type[Row], row: Any, path: str) -> Any:
    if isinstance(row, list):
        names = list(model.model_fields)
        if len(row) != len(names):
            raise _Bad(path, f"a row has {len(names)} values ({', '.join(names)}), got {len(row)}")
        return dict(zip(names, row))
    return row


def _flatten(template: Template, prefix: str) -> dict[str, Knob]:
    knobs: dict[str, Knob] = {}
    for key, node in template.items():
        name = f"{prefix}.{key}"
        if isinstance(node, list):
            for index, item in enumerate(node):
                knobs.update(_flatten(item, f"{name}.{index}") if isinstance(item, dict) else {f"{name}.{index}": item})
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
    """Cost limits: an architecture over them is rejected before it is trained."""

    max_params: Count | None = None
    max_macs: Count | None = None

    def violation(self, params: int, macs: int) -> str | None:
        """Why a network with these costs is over the limits, or None."""
        if self.max_params is not None and params > self.max_params:
            return f"{params:,} params > max_params {self.max_params:,}"
        if self.max_macs is not None and macs > self.max_macs:
            return f"{macs:,} MACs > max_macs {self.max_macs:,}"
        return None


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
        if name in ("cifar10", "cifar100", "synthetic") or (name.startswith("imagefolder:") and len(name) > 12):
            return name
        raise ValueError(f"unknown dataset {name!r}; use cifar10, cifar100, synthetic or imagefolder:PATH")

    @property
    def num_classes(self) -> int | None:
        return {"cifar10": 10, "cifar100": 100}.get(self.name)


class Budget(_Section):
    """Training budget of one trial; the first limit reached ends it."""

    epochs: int = Field(10, ge=1)
    max_images: Count | None = None
    max_seconds: float | None = Field(None, gt=0)


class SearchSpec(_Section):
    sampler: Literal["tpe", "random", "grid", "nsga2"] | None = Field(None, description="default: tpe, or nsga2 with several objectives")
    trials: int = Field(20, ge=1)


ObjectiveMetric = Literal["val_acc", "params", "macs", "flops", "latency_ms"]  # names of tracking.Metrics


class Objective(_Section):
    """One objective of a study: a metric that each trial records, and whether more or less of it is better."""

    metric: ObjectiveMetric
    goal: Literal["max", "min"]

    @property
    def direction(self) -> str:
        """Optuna's word for the goal."""
        return "maximize" if self.goal == "max" else "minimize"


ACCURACY = Objective(metric="val_acc", goal="max")


def _objectives(raw: Any) -> tuple[Objective, ...]:
    """The ``objectives:`` list: validation accuracy, maximized, and any costs, each once."""
    if raw is None:
        return (ACCURACY,)
    if not isinstance(raw, list) or not raw:
        raise _Bad("objectives", f"expected a non-empty list of {{metric, goal}}, got {raw!r}")
    objectives = []
    for index, item in enumerate(raw):
        try:
            objectives.append(Objective.model_validate(item))
        except ValidationError as error:
            raise _Bad("", str(format_validation_error(error, "", prefix=f"objectives.{index}"))) from None
    metrics = [objective.metric for objective in objectives]
    if len(set(metrics)) != len(metrics):
        raise _Bad("objectives", f"each metric may appear once, got {', '.join(metrics)}")
    # Accuracy is what training measures: a study with cost objectives alone would train for nothing.
    if ACCURACY not in objectives:
        raise _Bad("objectives", "val_acc with goal max must be one of the objectives")
    return tuple(objectives)


# The space ----------------------------------------------------------------------------------

_SECTIONS = {"limits": Limits, "dataset": DatasetSpec, "budget": Budget, "recipe": Recipe, "search": SearchSpec}
# What the machine decides, not what a study compares: never searched.
_UNSEARCHED_RECIPE = ("precision", "compile")
# lr may be "auto" or absent, but a searched lr is a number.
_RECIPE_FIELDS = {"lr": FieldInfo.from_annotation(Annotated[float, Field(gt=0)])}
_FIXED_INTS = {"num_classes": 10, "input_size": 32, "in_channels": 3}
_STAGE_KEYS = ("family", "stride")


@dataclass(frozen=True)
class _StageTemplate:
    family: Knob
    stride: Knob
    overrides: dict[str, Template]  # family name -> knobs of that family for this stage only


@dataclass(frozen=True)
class Space:
    """A validated search space. Build one with :func:`load_space`."""

    name: str
    source: str
    digest: str
    description: str
    fixed: dict[str, int]
    stem: Template
    head: Template
    stages: tuple[_StageTemplate, ...]
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
        knobs: dict[str, Knob] = {**_flatten(self.stem, "stem"), **_flatten(self.head, "head")}
        for family, template in self.shared.items():
            knobs.update(_flatten(template, family))
        for index, stage in enumerate(self.stages):
            knobs[f"stages.{index}.family"] = stage.family
            knobs[f"stages.{index}.stride"] = stage.stride
            for family, template in stage.overrides.items():
                knobs.update(_flatten(template, f"stages.{index}.{family}"))
        knobs.update({f"recipe.{key}": knob for key, knob in self.recipe_knobs.items()})
        return knobs

    def size(self) -> int | None:
        """How many distinct points the space holds, or None when a reachable knob is continuous."""
        total = 0
        for families in itertools.product(*(_values(stage.family) for stage in self.stages)):
            knobs = [*_flatten(self.stem, "").values(), *_flatten(self.head, "").values()]
            shared: dict[str, Any] = {}
            for stage, family in zip(self.stages, families):
                own = stage.overrides.get(family, {})
                knobs += [stage.stride, *_flatten(own, "").values()]
                shared |= {f"{family}.{key}": node for key, node in self.shared.get(family, {}).items() if key not in own}
            count = _product([*knobs, *_flatten(shared, "").values(), *self.recipe_knobs.values()])
            if count is None:
                return None
            total += count
        return total

    def grid(self) -> dict[str, list[Any]]:
        """The values of every variable knob, for :class:`optuna.samplers.GridSampler`."""
        grid = {}
        for name, knob in self.knobs().items():
            if isinstance(knob, FloatRange) and knob.step is None:
                raise ConfigError(f"{self.source}: {name}: a grid needs discrete knobs; give this range a step")
            if not isinstance(knob, Fixed):
                grid[name] = _values(knob)
        return grid

    def sample_random(self, seed: int) -> Arch:
        """One uniformly drawn architecture, without Optuna (for previews and tests)."""
        return self.sample(_RandomTrial(random.Random(seed)))

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
            trial = _CornerTrial(pending.pop())
            try:
                results.append(self.sample(trial))
            except ConfigError as error:
                results.append(error)
            for depth in range(len(trial.prefix), len(trial.arities)):
                for alternative in range(1, trial.arities[depth]):
                    pending.append(trial.taken[:depth] + [alternative])
        return results, not pending


def _values(knob: Knob) -> list[Any]:
    if isinstance(knob, Fixed):
        return [knob.value]
    if isinstance(knob, Choice):
        return list(knob.choices)
    if isinstance(knob, IntRange):
        return list(range(knob.low, knob.high + 1, knob.step))
    return [round(knob.low + i * knob.step, 12) for i in range(knob.size)]  # no 0.30000000000000004


def _product(knobs: list[Knob]) -> int | None:
    count = 1
    for knob in knobs:
        if knob.size is None:
            return None
        count *= knob.size
    return count


class _RandomTrial:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self.rng.choice(choices)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        if log:
            return int(round(math.exp(self.rng.uniform(math.log(low), math.log(high)))))
        return low + step * self.rng.randint(0, (high - low) // step)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        if step:
            return low + step * self.rng.randint(0, int(math.floor((high - low) / step + 1e-9)))
        if log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        return self.rng.uniform(low, high)


class _CornerTrial:
    """Smallest value of every numeric knob; walks the categorical ones like an odometer."""

    def __init__(self, prefix: list[int]) -> None:
        self.prefix = prefix
        self.taken: list[int] = []
        self.arities: list[int] = []

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices)
        if numeric and not name.endswith(".stride"):
            return min(choices)
        index = self.prefix[len(self.taken)] if len(self.taken) < len(self.prefix) else 0
        self.taken.append(index)
        self.arities.append(len(choices))
        return choices[index]

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return low

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        return low


def _parse_family_knob(raw: Any, path: str) -> Knob:
    field = FieldInfo(annotation=Literal[tuple(list_families())])  # type: ignore[valid-type]
    try:
        return _parse_knob(raw, field, path)
    except _Bad:
        raise _Bad(path, f"unknown family {raw!r}; known: {', '.join(list_families())}") from None


def _parse(doc: dict[str, Any], default_name: str) -> dict[str, Any]:
    families_known = list_families()
    allowed = {"name", "description", "family", "stem", "head", "stages", "objectives", *_FIXED_INTS, *families_known, *_SECTIONS}
    for key in doc:
        if key not in allowed:
            raise _Bad(str(key), f"unknown key (known: {', '.join(sorted(allowed))})")
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise _Bad("name", f"expected a non-empty string, got {name!r}")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise _Bad("description", f"expected a string, got {description!r}")
    fixed = {}
    for key, default in _FIXED_INTS.items():
        value = doc.get(key, default)
        fixed[key] = _check(_adapter(Arch.model_fields[key]), value, key)
    raw_recipe = doc.get("recipe") or {}
    if not isinstance(raw_recipe, dict):
        raise _Bad("recipe", f"expected a mapping, got {raw_recipe!r}")
    recipe_knobs = _recipe_knobs(raw_recipe)
    raw_recipe = raw_recipe | {key: knob.value for key, knob in recipe_knobs.items() if isinstance(knob, Fixed)}
    recipe_knobs = {key: knob for key, knob in recipe_knobs.items() if not isinstance(knob, Fixed)}
    sections = {}
    for key, section in _SECTIONS.items():
        raw = {k: v for k, v in raw_recipe.items() if k not in recipe_knobs} if key == "recipe" else doc.get(key) or {}
        try:
            sections[key] = section.model_validate(raw)
        except ValidationError as error:
            raise _Bad("", str(format_validation_error(error, "", prefix=key))) from None
    expected = sections["dataset"].num_classes
    if expected is not None and fixed["num_classes"] != expected:
        raise _Bad("num_classes", f"{fixed['num_classes']} does not match dataset {sections['dataset'].name} ({expected} classes)")

    default_family = _parse_family_knob(doc["family"], "family") if "family" in doc else None
    raw_stages = doc.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise _Bad("stages", f"expected a non-empty list of stages, got {raw_stages!r}")
    stages = []
    possible: set[str] = set()
    for index, raw in enumerate(raw_stages):
        path = f"stages.{index}"
        if not isinstance(raw, dict):
            raise _Bad(path, f"expected a mapping, got {raw!r}")
        if "family" in raw:
            family = _parse_family_knob(raw["family"], f"{path}.family")
        elif default_family is not None:
            family = default_family
        else:
            raise _Bad(f"{path}.family", "missing: give the stage a family, or a top-level family for all stages")
        families = _values(family)
        possible |= set(families)
        loose = {key: value for key, value in raw.items() if key not in (*_STAGE_KEYS, *families_known)}
        if loose:
            # With one family, its knobs may sit on the stage itself, as in an architecture file.
            if len(families) > 1:
                raise _Bad(f"{path}.{next(iter(loose))}", f"the stage's family is a choice: put knobs under {' or '.join(f'{f}:' for f in families)}")
            if families[0] in raw:
                raise _Bad(f"{path}.{next(iter(loose))}", f"give the stage's knobs either on the stage or under {families[0]}:, not both")
            raw = {**raw, families[0]: loose}
        # The stride must suit every family the stage may pick.
        for fam in families:
            stride = _parse_knob(raw.get("stride", 1), get_family(fam).knobs.model_fields["stride"], f"{path}.stride")
        overrides = {}
        for fam in families_known:
            if fam in raw:
                if fam not in families:
                    raise _Bad(f"{path}.{fam}", f"this stage's family is {' or '.join(families)}, never {fam}")
                overrides[fam] = _parse_struct(get_family(fam).knobs, raw[fam] or {}, f"{path}.{fam}", skip=_STAGE_KEYS)
        stages.append(_StageTemplate(family, stride, overrides))
    shared = {}
    for fam in families_known:
        if fam in doc:
            if fam not in possible:
                raise _Bad(fam, f"no stage can be of family {fam}")
            shared[fam] = _parse_struct(get_family(fam).knobs, doc[fam] or {}, fam, skip=_STAGE_KEYS)
    for index, stage in enumerate(stages):
        for fam in _values(stage.family):
            given = set(shared.get(fam, {})) | set(stage.overrides.get(fam, {}))
            for key, field in get_family(fam).knobs.model_fields.items():
                if field.is_required() and key not in given:
                    raise _Bad(f"stages.{index}", f"family {fam} needs {key}: give it under {fam}: or stages.{index}.{fam}:")
    return {
        "name": name,
        "description": description,
        "fixed": fixed,
        "stem": _parse_struct(Stem, doc.get("stem") or {}, "stem"),
        "head": _parse_struct(Head, doc.get("head") or {}, "head"),
        "stages": tuple(stages),
        "shared": shared,
        "objectives": _objectives(doc.get("objectives")),
        "recipe_knobs": recipe_knobs,
        **sections,
    }


def _recipe_knobs(raw: dict[str, Any]) -> dict[str, Knob]:
    """The recipe keys given as a list of choices or a range: searched, like an architecture's knobs (one choice is fixed)."""
    knobs = {}
    for key, value in raw.items():
        field = Recipe.model_fields.get(key)
        if field is None or not isinstance(value, (list, dict)) or _element_field(field) is not None:
            continue  # a plain value, or a key Recipe refuses with its own message
        if key in _UNSEARCHED_RECIPE:
            raise _Bad(f"recipe.{key}", "the machine's choice, not searched: give one value")
        knobs[key] = _parse_knob(value, _RECIPE_FIELDS.get(key, field), f"recipe.{key}")
    return knobs


def load_space(path: str | Path) -> Space:
    """Read and validate a search space file.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or its content is invalid;
            the message names the file and the key path.
    """
    path = Path(path)
    doc = load_yaml(path)
    try:
        parts = _parse(doc, default_name=path.stem)
    except _Bad as error:
        raise ConfigError(f"{path}: {error}") from None
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Space(source=str(path), digest=digest, **parts)
