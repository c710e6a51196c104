"""Architectures as plain values: one concrete network, validated once, then trusted.

An :class:`Arch` is what a search space samples, what a preset or an architecture file
holds and what :func:`cnnsearch.build_model` turns into a network. It is frozen, hashable
and serializable to YAML; it imports no torch. A stage is validated by the knobs of its
family, which :mod:`cnnsearch.registry` finds; the families register themselves from
:mod:`cnnsearch.blocks`, which importing :mod:`cnnsearch` imports.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from abc import abstractmethod
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from .names import ACTIVATIONS
from .registry import get_family, get_stem, list_families, list_stems, zero_init_names

__all__ = [
    "Arch",
    "BatchNorm",
    "ConfigError",
    "Head",
    "Recipe",
    "Row",
    "Stage",
    "StageConfig",
    "Stem",
    "list_presets",
    "load_arch",
    "load_yaml",
    "save_arch",
    "window_out",
]


class ConfigError(ValueError):
    """A problem in a file or value the user gave; the message is complete and names where."""


class Interrupted(Exception):
    """The user stopped a study with Ctrl-C; it can be resumed. The message says where it stands."""


class AlreadyFinished(Exception):
    """A finished study, run again, already holds every trial it is asked for: there is nothing to run.

    The message says so and how to ask for more; ``tracking_uri`` is the store that holds the study's records.
    """

    def __init__(self, message: str, tracking_uri: str) -> None:
        super().__init__(message)
        self.tracking_uri = tracking_uri


# Loading -------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe loader that rejects duplicate keys and reads `1.5e6` as a float (YAML 1.2)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with a safe loader; every failure is a :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = error.problem or str(error)
        if isinstance(error, yaml.constructor.ConstructorError) and "tag" in problem:
            problem = f"{problem} (only plain YAML is read: tags that build objects are refused)"
        raise ConfigError(f"{path}: {where}{problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: {error}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got a {type(data).__name__}")
    return data


def format_validation_error(error: ValidationError, source: str, prefix: str = "") -> ConfigError:
    """One line naming the file and the dotted key path of the first problem."""
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    # A stage's errors carry its family in the path (stages.0.dense.x): name it in the message instead
    if len(loc) >= 3 and loc[0] == "stages" and loc[2] in list_families():
        family = loc.pop(2)
    else:
        family = None
    path = ".".join(([prefix] if prefix else []) + loc)
    kind = first["type"]
    if kind == "extra_forbidden":
        owner = get_family(family).knobs if family else None
        known = ", ".join(owner.model_fields) if owner else None
        what = f"not a knob of family {family}" if family else "unknown key"
        message = f"{what}" + (f" (its knobs: {known})" if known else "")
    elif kind == "union_tag_invalid":
        message = f"unknown family {first['input'] if not isinstance(first['input'], dict) else first['input'].get('family')!r}; known: {', '.join(list_families())}"
        path = f"{path}.family" if path else "family"
    elif kind == "union_tag_not_found":
        message = f"missing 'family' (one of {', '.join(list_families())})"
    elif kind == "missing":
        message = "missing required key"
    elif kind == "value_error":
        message = str(first["ctx"]["error"])
    elif kind in ("tuple_type", "list_type"):
        message = f"expected a list, got {first['input']!r}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"expected a mapping, got {first['input']!r}"
    else:
        message = f"{first['msg']}, got {first['input']!r}"
    body = f"{path}: {message}" if path else message
    return ConfigError(f"{source}: {body}" if source else body)


# Architecture values --------------------------------------------------------------------


class _Value(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _lists_as_tuples(cls, data: Any) -> Any:
        # Strict mode takes tuples only; YAML gives lists. Tuples keep values hashable.
        if isinstance(data, dict):
            return {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
        return data


def window_out(size: int, kernel: int, stride: int, padding: int = 0, ceil_mode: bool = False) -> int:
    """Output length of a convolution or pooling window, as torch computes it."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # torch: the last window must start inside the input
    return out


Stride = Literal[1, 2]


class _Registered:
    """A name from a list that the registry holds, checked and described as a ``Literal`` of it would be.

    The list is read when a value is validated, not at import: the families that add to
    it register after this module is imported.
    """

    def __init__(self, names: Callable[[], list[str]]) -> None:
        self.names = names

    def _check(self, value: Any) -> Any:
        names = self.names()
        if value not in names:
            quoted = [repr(name) for name in names]
            expected = " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {"enum": self.names(), **handler(schema)}


def _stem_styles() -> list[str]:
    return ["imagenet", "cifar", "mobilenet", *list_stems(), "none"]


class Stem(_Value):
    """The layers before the first stage.

    Styles: ``imagenet`` 7x7 stride-2 conv + 3x3 stride-2 max-pool (ResNet, DenseNet);
    ``cifar`` 3x3 stride-1 conv (He et al. 2016, Huang et al. 2017 on CIFAR);
    ``mobilenet`` 3x3 stride-2 conv (MobileNetV1 to V3); ``none``: the first stage sees the
    image (LeNet, AlexNet, VGG, NiN) and ``channels`` is unused; and the styles that block
    families contribute through :mod:`cnnsearch.registry` (``googlenet``, of ``inception``).
    """

    style: Annotated[str, _Registered(_stem_styles)] = "cifar"
    channels: int = Field(64, ge=1)
    norm: bool = Field(True, description="batch norm after each conv; false gives convs with bias")
    activation: Literal["relu", "relu6", "hardswish", "none"] = Field(
        "relu", description="none suits pre-activation networks (DenseNet on CIFAR), whose first block starts with BN-ReLU"
    )

    def output_size(self, size: int) -> int:
        if self.style == "imagenet":
            return window_out(window_out(size, 7, 2, 3), 3, 2, 1)
        if self.style == "mobilenet":
            return window_out(size, 3, 2, 1)
        if self.style in ("cifar", "none"):
            return size
        return get_stem(self.style).output_size(size)

    def out_channels(self, in_channels: int) -> int:
        return in_channels if self.style == "none" else self.channels


class Head(_Value):
    """The classifier after the last stage.

    ``linear``: an optional 1x1 conv-BN-activation, average pooling to ``pool_size`` x
    ``pool_size`` (1: global pooling; VGG 7, AlexNet 6), then linear layers: each width of
    ``hidden`` followed by the activation, then the classifier; dropout comes before every
    linear layer after the first, and before the classifier when there are no hidden layers
    (VGG, MobileNetV3). Adaptive pooling makes the first linear layer's size independent
    of the image size. ``conv``: NiN's classifier (Lin et al. 2014, arXiv:1312.4400), a NiN
    block (3x3 conv, two 1x1 convs, each with ReLU) to ``num_classes`` channels, globally
    average-pooled, after dropout. Networks whose last stage is pre-activation (dense, cell) get
    a final batch norm + ReLU first, as in DenseNet and NAS-Bench-201.

    ``classifier``, ``pool_size`` and ``hidden`` are left out of files and digests at their
    defaults, so that architectures written before they existed keep their digests.
    """

    classifier: Literal["linear", "conv"] = Field("linear", exclude_if=lambda value: value == "linear")
    channels: int = Field(0, ge=0, description="1x1 conv-BN-activation before pooling (MobileNetV2: 1280); 0 for none")
    activation: Literal[ACTIVATIONS] = "relu"
    pool_size: int = Field(1, ge=1, description="side of the adaptive average pool", exclude_if=lambda value: value == 1)
    hidden: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        (), description="widths of the hidden linear layers (VGG: 4096, 4096)", exclude_if=lambda value: value == ()
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _conv_classifier_alone(self) -> Head:
        if self.classifier == "conv" and (self.channels or self.hidden or self.pool_size != 1):
            raise ValueError("a conv classifier takes no channels, hidden or pool_size")
        return self


class BatchNorm(_Value):
    """Constants of every batch norm of a network, where they are not each layer's own.

    Torch's are eps 1e-5 and momentum 0.1 (GoogLeNet's convs take eps 1e-3). MobileNetV3
    takes TensorFlow's, eps 1e-3 and momentum 0.01, in all of its layers (torchvision's
    ``mobilenetv3.py``); eps changes what a trained network computes, momentum how fast
    the running statistics follow the weights.
    """

    eps: float = Field(gt=0.0)
    momentum: float = Field(gt=0.0, le=1.0)


class StageConfig(_Value):
    """The knobs of one stage, validated; each block family in :mod:`cnnsearch.blocks` subclasses it.

    A subclass declares ``family: Literal["name"] = "name"``, its knobs (the paper's
    symbol in each field's description) and :meth:`output_size`. Every family has a
    ``stride``, which a search space draws for each stage; a subclass may narrow it
    (most to ``Stride``) and say where it applies.
    """

    family: str
    stride: int = Field(1, ge=1, description="of the stage's first downsampling layer")

    @abstractmethod
    def output_size(self, size: int) -> int:
        """Height (= width) of the stage's output for an input of ``size``."""


class Row(_Value):
    """A table row of a family's knobs, written as a mapping or, as in the paper's table, a list in field order."""

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, data: Any) -> Any:
        if isinstance(data, (list, tuple)):
            if len(data) != len(cls.model_fields):
                raise ValueError(f"a row has {len(cls.model_fields)} values ({', '.join(cls.model_fields)}), got {len(data)}")
            return dict(zip(cls.model_fields, data))
        return data


def _stage(data: Any) -> Any:
    """Validate a stage with the knobs of its family, found in the registry when it is validated."""
    if isinstance(data, StageConfig):
        return data
    if not isinstance(data, dict):
        raise PydanticCustomError("model_type", "expected a mapping")
    if "family" not in data:
        raise PydanticCustomError("union_tag_not_found", "missing family")
    if data["family"] not in list_families():
        raise PydanticCustomError("union_tag_invalid", "unknown family")
    try:
        return get_family(data["family"]).knobs.model_validate(data)
    except ValidationError as error:
        # Put the family into the path, as a discriminated union does: stages.0.dense.x
        details = [
            {"type": e["type"], "loc": (data["family"], *e["loc"]), "input": e["input"], **({"ctx": e["ctx"]} if "ctx" in e else {})}
            for e in error.errors()
        ]
        raise ValidationError.from_exception_data(error.title, details) from None


Stage = Annotated[SerializeAsAny[StageConfig], BeforeValidator(_stage)]


_LARGEST_INPUT = 4096  # the search for the smallest input a network takes stops here


class Arch(_Value):
    """One concrete network: stem, stages (each of any family), head, and batch norm's constants where they are set."""

    name: str = "custom"
    num_classes: int = Field(10, ge=1)
    input_size: int = Field(32, ge=1, description="height = width of the input images")
    in_channels: int = Field(3, ge=1)
    stem: Stem = Stem()
    stages: tuple[Stage, ...] = Field(min_length=1)
    head: Head = Head()
    batch_norm: BatchNorm | None = Field(
        None, description="eps and momentum of every batch norm; null: each layer's own", exclude_if=lambda value: value is None
    )

    @model_validator(mode="after")
    def _input_survives(self) -> Arch:
        shrunk = self._shrinks_at(self.input_size)
        if shrunk == "stem":
            raise ValueError(f"stem.style: the {self.stem.style} stem shrinks a {self.input_size}x{self.input_size} input below 1x1")
        if shrunk is not None:
            # Plain stages and heads of fixed size cannot fit every image: say what would.
            smallest = next((size for size in range(self.input_size + 1, _LARGEST_INPUT) if self._shrinks_at(size) is None), None)
            needs = f"; this network needs inputs of at least {smallest}x{smallest}" if smallest else ""
            raise ValueError(
                f"stages.{shrunk}.stride: a {self.input_size}x{self.input_size} input shrinks below 1x1 at this stage{needs}"
            )
        return self

    def _shrinks_at(self, input_size: int) -> str | int | None:
        """Where an input of ``input_size`` would shrink below 1x1: "stem", a stage's index, or None."""
        size = self.stem.output_size(input_size)
        if size < 1:
            return "stem"
        for index, stage in enumerate(self.stages):
            size = stage.output_size(size)
            if size < 1:
                return index
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` (or an architecture file) reads back."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "architecture") -> Arch:
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise format_validation_error(error, source) from None

    @property
    def digest(self) -> str:
        """Canonical hash of the network, independent of its name: equal digests, equal models."""
        body = self.to_dict()
        body.pop("name")
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


# Files and presets ------------------------------------------------------------------------

_PRESETS = resources.files("cnnsearch") / "presets"


def list_presets() -> list[str]:
    """Names of the architectures shipped with cnnsearch."""
    return sorted(p.name.removesuffix(".yaml") for p in _PRESETS.iterdir() if p.name.endswith(".yaml"))


def load_arch(name_or_path: str | Path) -> Arch:
    """Load a preset by name (``resnet20``) or an architecture YAML file.

    Raises:
        ConfigError: the file is missing or invalid, or no preset has that name.
    """
    path = Path(name_or_path)
    if not path.exists() and path.suffix not in (".yaml", ".yml") and path.name == str(name_or_path):
        if str(name_or_path) not in list_presets():
            raise ConfigError(f"{name_or_path}: neither a file nor a preset; presets: {', '.join(list_presets())}")
        with resources.as_file(_PRESETS / f"{name_or_path}.yaml") as preset:
            return Arch.from_dict(load_yaml(preset), source=f"preset {name_or_path}")
    return Arch.from_dict(load_yaml(path), source=str(path))


def save_arch(arch: Arch, path: str | Path) -> None:
    """Write an architecture file that :func:`load_arch` reads back to an equal value."""
    Path(path).write_text(yaml.safe_dump(arch.to_dict(), sort_keys=False))


# Where the default peak learning rate begins to grow and where it stops: measured at 235
# steps (5,000 images x 3 epochs at batch 64), the lower rate learned more; at 2,109 steps
# (45,000 x 3), the higher.
SHORT_STEPS, LONG_STEPS = 250, 2000


class Recipe(_Value):
    """How a trial trains: SGD with Nesterov momentum under a warm-up + decay schedule.

    Every default is there so that a trial of a few dozen steps learns as well as one of
    thousands (BENCHMARKS.md, recipe section): the peak learning rate follows the batch
    size, warm-up has a floor in steps, gradients are clipped, and batch norm's
    statistics are re-estimated before each validation.
    """

    lr: float | Literal["auto"] | None = Field(
        None, description="peak learning rate; default: scaled_lr, from the batch size and the trial's steps; "
        "auto: a range test on the trial's own model"
    )
    lr_at_256: float = Field(
        0.2, gt=0.0, description=f"peak learning rate at batch 256 for a trial of at most {SHORT_STEPS} steps, scaled to the batch "
        "when lr is not given: 0.1 at batch 64. Twice that left resnet50, resnet56 and resnet110 under 95% in 40 steps, and "
        "inception and VGG samples under 80% in 80 (tests/test_recipe.py)"
    )
    lr_at_256_long: float = Field(
        0.4, gt=0.0, description=f"the same for a trial of at least {LONG_STEPS} steps (log-linear in between): 0.2 at batch 64 "
        "took resnet20 to 73.7% in 3 full CIFAR-10 epochs, where 0.1 reached 70.5%"
    )
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0, description="on conv and linear weights only, not on norms and biases")
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    schedule: Literal["onecycle", "cosine"] = Field("onecycle", description="linear or cosine decay to 0 after warm-up")
    warmup: float = Field(0.2, ge=0.0, lt=1.0, description="fraction of the steps spent warming up linearly")
    warmup_min_steps: int = Field(
        40, ge=0, description="floor of the warm-up in steps (at most half the steps): a short trial warms up too"
    )
    grad_clip_norm: float | None = Field(5.0, gt=0.0, description="clip the gradients' global norm to this; null for none")
    zero_init_residual: tuple[Annotated[str, _Registered(zero_init_names)], ...] = Field(
        ("bottleneck", "inverted_residual"),
        description="families whose residual branches start silent (last BN scale 0; bottleneck: residual stages of "
        "bottleneck blocks only): at a few hundred steps it makes MobileNets and deep bottleneck ResNets learn; "
        "basic-block ResNets lost 2 points at the full budget (BENCHMARKS.md, short-budget section)",
    )
    bn_recalibration_images: int = Field(
        1024, ge=0, description="training images that re-estimate BN statistics before each validation; 0 for none"
    )
    batch_size: int = Field(
        64, ge=1, description="64: at a few epochs of a few thousand images, twice the steps of 128 trained resnet20 to "
        "40% instead of 35% (BENCHMARKS.md, recipe section)"
    )
    crop_padding: int = Field(4, ge=0, description="augmentation: random crops as from images zero-padded by this many pixels; 0 for none")
    flip: bool = Field(True, description="augmentation: mirror half the training images horizontally")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="autocast dtype; auto: bf16 where the device computes it natively, else fp16 on CUDA, fp32 on CPU"
    )
    compile: bool = Field(False, description="run the model through torch.compile")

    @field_validator("lr", mode="before")
    @classmethod
    def _positive_or_auto(cls, lr: Any) -> Any:
        if lr is None or lr == "auto":
            return lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"Input should be greater than 0, or auto, got {lr!r}")
        return float(lr)

    def scaled_lr(self, steps: int) -> float:
        """The peak learning rate when none is given, for a trial of ``steps`` steps, scaled with the square root of the batch.

        Square-root scaling (Krizhevsky 2014, arXiv:1404.5997; Hoffer et al. 2017,
        arXiv:1705.08741) rather than linear (Goyal et al. 2017): measured at a few dozen
        steps, linear scaling left small batches too slow to learn (BENCHMARKS.md, recipe).
        The rate at 256 grows from lr_at_256 to lr_at_256_long, log-linearly in the steps
        between SHORT_STEPS and LONG_STEPS: a short trial needs the lower rate to be stable,
        a long one the higher to learn all it can (BENCHMARKS.md, short-budget section).
        """
        progress = min(1.0, max(0.0, math.log(max(steps, 1) / SHORT_STEPS) / math.log(LONG_STEPS / SHORT_STEPS)))
        at_256 = self.lr_at_256 * (self.lr_at_256_long / self.lr_at_256) ** progress
        return at_256 * math.sqrt(self.batch_size / 256)
