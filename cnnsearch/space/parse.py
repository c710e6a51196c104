"""Reading a search space file: :func:`load_space` turns its YAML into a validated :class:`Space`.

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
only sampled when a stage uses it.

The training recipe may hold knobs too (``recipe: {lr: {low: 0.01, high: 0.3, log: true},
batch_size: [32, 64]}``): they are drawn with the architecture, named ``recipe.lr``, and
each trial trains with its own recipe.

Every value is checked against the field of the architecture, family or section it sets;
a problem is reported with the file and the key path. No torch here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, Field, Strict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from ..config import Arch, ConfigError, Head, Recipe, Row, Stem, format_validation_error, load_yaml
from ..registry import get_family, list_families
from .knobs import Choice, Fixed, FloatRange, IntRange, Knob, knob_values
from .space import ACCURACY, Budget, DatasetSpec, Limits, Objective, SearchSpec, Space, StageTemplate, Template

__all__ = ["load_space"]

_SECTIONS = {"limits": Limits, "dataset": DatasetSpec, "budget": Budget, "recipe": Recipe, "search": SearchSpec}
# What the machine decides, not what a study compares: never searched.
_UNSEARCHED_RECIPE = ("precision", "compile")
# lr may be "auto" or absent, but a searched lr is a number.
_RECIPE_FIELDS = {"lr": FieldInfo.from_annotation(Annotated[float, Field(gt=0)])}
_FIXED_INTS = {"num_classes": 10, "input_size": 32, "in_channels": 3}
_STAGE_KEYS = ("family", "stride")


class _Bad(Exception):
    """A problem at a key path of the space document."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)


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


def _parse(doc: dict[str, Any], default_name: str) -> dict[str, Any]:
    """The fields of a :class:`Space` but its source and digest; problems are checked in the order of the file's sections."""
    name, description = _header(doc, default_name)
    fixed = {key: _check(_adapter(Arch.model_fields[key]), doc.get(key, default), key) for key, default in _FIXED_INTS.items()}
    sections, recipe_knobs = _sections(doc)
    expected = sections["dataset"].num_classes
    if expected is not None and fixed["num_classes"] != expected:
        raise _Bad("num_classes", f"{fixed['num_classes']} does not match dataset {sections['dataset'].name} ({expected} classes)")
    stages, possible = _stages(doc)
    shared = _shared(doc, possible)
    _check_required(stages, shared)
    return {
        "name": name,
        "description": description,
        "fixed": fixed,
        "stem": _parse_struct(Stem, doc.get("stem") or {}, "stem"),
        "head": _parse_struct(Head, doc.get("head") or {}, "head"),
        "stages": stages,
        "shared": shared,
        "objectives": _objectives(doc.get("objectives")),
        "recipe_knobs": recipe_knobs,
        **sections,
    }


def _header(doc: dict[str, Any], default_name: str) -> tuple[str, str]:
    """The space's name and description, once every top-level key is known."""
    allowed = {"name", "description", "family", "stem", "head", "stages", "objectives", *_FIXED_INTS, *list_families(), *_SECTIONS}
    for key in doc:
        if key not in allowed:
            raise _Bad(str(key), f"unknown key (known: {', '.join(sorted(allowed))})")
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise _Bad("name", f"expected a non-empty string, got {name!r}")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise _Bad("description", f"expected a string, got {description!r}")
    return name, description


def _sections(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Knob]]:
    """The limits, dataset, budget, recipe and search sections, and the recipe's searched keys."""
    raw_recipe = doc.get("recipe") or {}
    if not isinstance(raw_recipe, dict):
        raise _Bad("recipe", f"expected a mapping, got {raw_recipe!r}")
    recipe_knobs = _recipe_knobs(raw_recipe)
    # A list of one choice is a fixed value: it goes to the recipe itself.
    raw_recipe = raw_recipe | {key: knob.value for key, knob in recipe_knobs.items() if isinstance(knob, Fixed)}
    recipe_knobs = {key: knob for key, knob in recipe_knobs.items() if not isinstance(knob, Fixed)}
    sections = {}
    for key, section in _SECTIONS.items():
        raw = {k: v for k, v in raw_recipe.items() if k not in recipe_knobs} if key == "recipe" else doc.get(key) or {}
        try:
            sections[key] = section.model_validate(raw)
        except ValidationError as error:
            raise _Bad("", str(format_validation_error(error, "", prefix=key))) from None
    return sections, recipe_knobs


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


def _stages(doc: dict[str, Any]) -> tuple[tuple[StageTemplate, ...], set[str]]:
    """The ``stages:`` list, and every family that some stage may pick."""
    default_family = _parse_family_knob(doc["family"], "family") if "family" in doc else None
    raw_stages = doc.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise _Bad("stages", f"expected a non-empty list of stages, got {raw_stages!r}")
    stages = []
    possible: set[str] = set()
    for index, raw in enumerate(raw_stages):
        stage = _stage(raw, f"stages.{index}", default_family)
        possible |= set(knob_values(stage.family))
        stages.append(stage)
    return tuple(stages), possible


def _stage(raw: Any, path: str, default_family: Knob | None) -> StageTemplate:
    """One stage: its family (its own, else the space's), its stride, and the family knobs it sets itself."""
    if not isinstance(raw, dict):
        raise _Bad(path, f"expected a mapping, got {raw!r}")
    if "family" in raw:
        family = _parse_family_knob(raw["family"], f"{path}.family")
    elif default_family is not None:
        family = default_family
    else:
        raise _Bad(f"{path}.family", "missing: give the stage a family, or a top-level family for all stages")
    families = knob_values(family)
    families_known = list_families()
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
    return StageTemplate(family, stride, overrides)


def _shared(doc: dict[str, Any], possible: set[str]) -> dict[str, Template]:
    """The top-level family sections: knobs shared by every stage of that family."""
    shared = {}
    for fam in list_families():
        if fam in doc:
            if fam not in possible:
                raise _Bad(fam, f"no stage can be of family {fam}")
            shared[fam] = _parse_struct(get_family(fam).knobs, doc[fam] or {}, fam, skip=_STAGE_KEYS)
    return shared


def _check_required(stages: tuple[StageTemplate, ...], shared: dict[str, Template]) -> None:
    """Every family a stage may pick has each of its required knobs, shared or the stage's own."""
    for index, stage in enumerate(stages):
        for fam in knob_values(stage.family):
            given = set(shared.get(fam, {})) | set(stage.overrides.get(fam, {}))
            for key, field in get_family(fam).knobs.model_fields.items():
                if field.is_required() and key not in given:
                    raise _Bad(f"stages.{index}", f"family {fam} needs {key}: give it under {fam}: or stages.{index}.{fam}:")


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


def _parse_family_knob(raw: Any, path: str) -> Knob:
    field = FieldInfo(annotation=Literal[tuple(list_families())])  # type: ignore[valid-type]
    try:
        return _parse_knob(raw, field, path)
    except _Bad:
        raise _Bad(path, f"unknown family {raw!r}; known: {', '.join(list_families())}") from None
