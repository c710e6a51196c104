"""One trial: train an architecture on resident data, validate after every epoch.

A plain function that reports through a callback; it knows nothing of Ray or MLflow.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from .config import Arch, ConfigError, Recipe
from .data import Batches, ImageData, Split, chance_level
from .model import TrainingOutput, build_model
from .names import Status
from .space import Budget

__all__ = ["EpochReport", "TrainResult", "data_shape", "find_lr", "fit_to_data", "resolve_device", "resolve_precision", "train"]

# Measured on the 2-core development CPU (BENCHMARKS.md, pipeline section): channels_last
# trains resnet20 1.2x faster there too, so it is the default on every device.
CHANNELS_LAST_DEFAULT = True
# A trial is diverged when its validation loss exceeds this many times ln(classes) while its
# accuracy is within CHANCE_MARGIN of the majority class's share, in its last epoch or in two.
DIVERGED_LOSS_FACTOR = 4
CHANCE_MARGIN = 0.05
# GoogLeNet's auxiliary classifiers add their losses "with a discount weight" of 0.3 (Szegedy et al. 2015, section 5).
AUX_LOSS_WEIGHT = 0.3


@dataclass(frozen=True)
class EpochReport:
    """What the callback receives after each validation."""

    epoch: int
    images: int  # training images seen so far
    train_loss: float  # the loss minimized: with auxiliary classifiers, their weighted losses included
    val_loss: float
    val_acc: float
    lr: float  # at the end of the epoch
    seconds: float
    train_images_per_s: float
    peak_lr: float  # of the schedule (chosen by the range test for lr: auto)
    precision: str  # bf16, fp16 or fp32
    budget_spent: bool  # the last epoch: the budget's epochs, images or seconds have run out
    # Spent in torch.compile so far, not in train_images_per_s; defaulted: older checkpoints lack it.
    compile_seconds: float = 0.0


@dataclass(frozen=True)
class TrainResult:
    status: Status
    val_acc: float | None
    val_loss: float | None
    train_loss: float | None
    epochs: float
    images: int
    seconds: float
    train_images_per_s: float
    device: str
    lr: float  # the peak learning rate used (chosen by the range test for lr: auto)
    precision: str  # bf16, fp16 or fp32: what recipe.precision resolved to on this device
    compile_seconds: float  # time spent compiling (first steps under torch.compile), not in train_images_per_s
    split: dict[str, Any]
    dataset: dict[str, Any]
    message: str = ""
    history: list[EpochReport] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # the trained model, on its device

    def to_dict(self) -> dict[str, Any]:
        """The metrics as plain values (the model left out)."""
        values = asdict(dataclasses.replace(self, model=None))
        del values["model"]
        return values


Callback = Callable[[EpochReport], "bool | None"]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a GPU that is not there is the user's error."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r}: use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: no CUDA GPU is available on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r}: use cpu or cuda")
    return device


def _cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX), where bf16 autocast pays."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_precision(precision: str, device: torch.device) -> Literal["bf16", "fp16", "fp32"]:
    """What ``recipe.precision`` means on ``device``.

    ``auto``: on CUDA, bf16 where the GPU supports it (Ampere and later), else fp16 with a
    gradient scaler (V100, T4); on CPU, bf16 where the CPU has native bf16, else fp32.
    """
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; on CPU use bf16 or fp32")
    if precision != "auto":
        return precision  # type: ignore[return-value]
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return "bf16" if _cpu_has_native_bf16() else "fp32"


def _autocast(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def data_shape(data: ImageData) -> dict[str, int]:
    """What an architecture takes from its data: the number of classes, the image size and the channels."""
    return {"num_classes": len(data.classes), "input_size": data.image_size, "in_channels": data.images.shape[1]}


def fit_to_data(arch: Arch, data: ImageData | dict[str, int]) -> Arch:
    """The architecture for ``data``, or for a :func:`data_shape`: its classes, image size and channels."""
    shape = data_shape(data) if isinstance(data, ImageData) else data
    return Arch.from_dict(arch.to_dict() | shape, source=arch.name)


def _lr_factor(recipe: Recipe, total_steps: int) -> Callable[[int], float]:
    # A fraction alone gives a 30-step trial a 6-step warm-up, too short to keep the first
    # steps at full learning rate from blowing up a fresh network: floor it in steps.
    warmup = max(int(recipe.warmup * total_steps), min(recipe.warmup_min_steps, total_steps // 2))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        if recipe.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return max(0.0, 1 - progress)

    return factor


def _optimizer(model: nn.Module, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    # No weight decay on norm scales and biases (Goyal et al. 2017, arXiv:1706.02677).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)


class _Stepper:
    """One optimizer step: autocast forward, (scaled) backward, gradient clipping, update."""

    def __init__(self, model: nn.Module, forward: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe,
                 precision: str, device: torch.device) -> None:
        self.model, self.forward, self.optimizer, self.clip = model, forward, optimizer, recipe.grad_clip_norm
        self.batch_size = recipe.batch_size
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.autocast = _autocast(precision, device)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    def loss(self, output: torch.Tensor | TrainingOutput, labels: torch.Tensor) -> torch.Tensor:
        """The training loss: the logits', plus AUX_LOSS_WEIGHT times each auxiliary classifier's."""
        if isinstance(output, TrainingOutput):
            aux = sum(self.criterion(logits, labels) for logits in output.aux_logits)
            return self.criterion(output.logits, labels) + AUX_LOSS_WEIGHT * aux
        return self.criterion(output, labels)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # A compiled forward sees one batch shape: the smaller last batch runs eagerly, not recompiled.
        forward = self.forward if len(images) == self.batch_size else self.model
        with self.autocast():
            loss = self.loss(forward(images), labels)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            if self.clip:
                nn.utils.clip_grad_norm_(self.parameters, self.clip, foreach=True)
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            if self.clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.parameters, self.clip, foreach=True)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return loss.detach()


def _cycle(batches: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from batches


# Range test (Smith 2017, arXiv:1506.01186): learning rates rise geometrically over a few
# dozen steps from _LR_RANGE[0] until the smoothed loss exceeds 4x its minimum.
_LR_RANGE = (1e-4, 10.0)
_LR_RANGE_STEPS = 60


def find_lr(model: nn.Module, batches: Batches, recipe: Recipe, *, forward: nn.Module | None = None,
            precision: str = "fp32", steps: int = _LR_RANGE_STEPS) -> float:
    """A peak learning rate for ``model`` on these batches: a third of where the range test's loss is lowest.

    The model's weights and batch-norm statistics are restored afterwards.
    """
    saved = copy.deepcopy(model.state_dict())
    low, high = _LR_RANGE
    optimizer = _optimizer(model, recipe, low)
    stepper = _Stepper(model, forward or model, optimizer, recipe, precision, batches.device)
    model.train()
    best_loss, best_lr, smoothed = math.inf, low, None
    for step, (images, labels) in zip(range(steps), _cycle(batches)):
        lr = low * (high / low) ** (step / (steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = stepper(images, labels).item()  # a sync per step: the test needs each loss
        smoothed = loss if smoothed is None else 0.7 * smoothed + 0.3 * loss
        if not math.isfinite(smoothed) or smoothed > 4 * best_loss:
            break
        if smoothed < best_loss:
            best_loss, best_lr = smoothed, lr
    model.load_state_dict(saved)
    # The smoothed minimum lags the raw one, towards higher rates; fastai's tenth of it chose
    # 0.003-0.014 where 0.1 trains these networks well, so a third.
    return best_lr / 3


@torch.no_grad()
def _evaluate(model: nn.Module, batches: Batches, autocast: Callable[[], contextlib.AbstractContextManager]) -> tuple[float, float]:
    model.eval()
    loss = torch.zeros((), device=batches.device)
    correct = torch.zeros((), device=batches.device, dtype=torch.int64)
    for images, labels in batches:
        with autocast():
            logits = model(images)
        loss += nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    count = len(batches.labels)
    return loss.item() / count, correct.item() / count


def train(
    arch: Arch,
    data: ImageData,
    split: Split,
    *,
    recipe: Recipe = Recipe(),
    budget: Budget = Budget(),
    seed: int = 0,
    device: str | torch.device = "cpu",
    channels_last: bool = CHANNELS_LAST_DEFAULT,
    callback: Callback | None = None,
    checkpoint: Callable[[dict[str, Any], EpochReport], None] | None = None,
    resume: dict[str, Any] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``arch`` on ``split.train`` and validate on ``split.val`` after every epoch.

    Args:
        arch: the architecture; it must match the data (see :func:`fit_to_data`).
        recipe: optimizer, schedule, batch size, precision and compilation.
        budget: epochs, and optionally a number of training images or seconds; the first
            limit reached ends training (the learning-rate schedule spans the epochs, or
            the images when fewer).
        seed: seeds the weights, the order of the images and the augmentation; on CPU the
            same seed gives the same metrics.
        device: ``cpu`` or ``cuda``.
        channels_last: NHWC memory format for the model and the batches.
        callback: called with an :class:`EpochReport` after each validation; returning
            True stops training early (status ``stopped``).
        checkpoint: called after each validation, before ``callback``, with the training
            state and the report, to save them; ``state["model"]`` is the model's state_dict.
        resume: a state that ``checkpoint`` received: training goes on after its epoch as
            if it had never stopped (on CPU, to the same metrics).
        progress: show a progress bar on stderr.

    Returns:
        The final metrics, with status ``diverged`` and a message if the loss became NaN
        or infinite, or if validation shows a model that learned nothing while its loss
        exploded (see ``DIVERGED_LOSS_FACTOR``).
    """
    started = time.perf_counter()
    device = resolve_device(str(device))
    precision = resolve_precision(recipe.precision, device)
    if (arch.num_classes, arch.input_size, arch.in_channels) != (len(data.classes), data.image_size, data.images.shape[1]):
        raise ConfigError(
            f"{arch.name}: built for {arch.num_classes} classes of {arch.in_channels}x{arch.input_size}x{arch.input_size} "
            f"images, but {data.source} has {len(data.classes)} classes of {tuple(data.images.shape[1:])}"
        )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every training batch but the last has one shape
    torch.manual_seed(seed)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(arch, zero_init_residual=recipe.zero_init_residual).to(device, memory_format=memory_format)
    if resume is not None:
        model.load_state_dict(resume["model"])
    forward = torch.compile(model) if recipe.compile else model
    batch_args = dict(batch_size=recipe.batch_size, device=device, channels_last=channels_last)
    train_batches = Batches(data, split.train, train=True, seed=seed, crop_padding=recipe.crop_padding, flip=recipe.flip, **batch_args)
    val_batches = Batches(data, split.val, train=False, **batch_args)  # larger batches run slower on CPU
    calibration = recipe.bn_recalibration_images and Batches(
        data, split.train[torch.randperm(len(split.train), generator=torch.Generator().manual_seed(seed))][: recipe.bn_recalibration_images],
        train=False, **batch_args,
    )
    steps_per_epoch = len(train_batches)
    total_steps = budget.epochs * steps_per_epoch
    if budget.max_images:
        total_steps = min(total_steps, math.ceil(budget.max_images / recipe.batch_size))
    if resume is not None:
        peak_lr = resume["peak_lr"]
    elif recipe.lr == "auto":
        peak_lr = find_lr(model, train_batches, recipe, forward=forward, precision=precision)
    else:
        peak_lr = recipe.lr or recipe.scaled_lr(total_steps)
    optimizer = _optimizer(model, recipe, peak_lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(recipe, total_steps))
    stepper = _Stepper(model, forward, optimizer, recipe, precision, device)
    autocast = stepper.autocast
    history: list[EpochReport] = []
    step = images_seen = epoch = 0
    train_seconds = compile_seconds = 0.0
    train_loss = val_loss = val_acc = None
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if stepper.scaler is not None:
            stepper.scaler.load_state_dict(resume["scaler"])
        train_batches.generator.set_state(resume["batch_rng"])
        torch.set_rng_state(resume["rng"])
        history = [EpochReport(**report) for report in resume["history"]]
        step, images_seen, epoch = resume["step"], resume["images"], resume["epoch"]
        train_seconds, compile_seconds = resume["train_seconds"], resume["compile_seconds"]
        train_loss, val_loss, val_acc = history[-1].train_loss, history[-1].val_loss, history[-1].val_acc
        started -= history[-1].seconds  # a seconds budget counts the time before the interruption

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=total_steps * recipe.batch_size, unit="img", unit_scale=True, leave=False, dynamic_ncols=True, file=sys.stderr
        )
    status, message = Status.COMPLETED, ""
    # Learned nothing: a validation loss this far above a uniform guess's ln(classes), at chance.
    loss_bound = DIVERGED_LOSS_FACTOR * math.log(max(2, len(data.classes)))
    chance = chance_level(data.labels[split.val])
    explosions = 0
    out_of_budget = bool(history) and history[-1].budget_spent
    compiled = False  # the first step of this call compiles, a resumed one too
    while epoch < budget.epochs and not out_of_budget:
        epoch += 1
        model.train()
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        epoch_images = 0
        for images, labels in train_batches:
            if recipe.compile and not compiled:
                # The first call compiles: time it apart, so images/s measures training alone.
                compile_start = time.perf_counter()
                loss = stepper(images, labels)
                loss.item()
                compiling = time.perf_counter() - compile_start
                compile_seconds += compiling
                compiled = True
                epoch_start += compiling
            else:
                loss = stepper(images, labels)
            scheduler.step()
            step += 1
            epoch_images += len(labels)
            loss_sum += loss * len(labels)
            if step % 25 == 0 or step == total_steps:
                current = loss.item()  # a sync: only every few steps
                if not math.isfinite(current):
                    status, message = Status.DIVERGED, f"training loss became {current} at step {step} (epoch {epoch})"
                    break
                if bar is not None:
                    bar.set_postfix(epoch=f"{epoch}/{budget.epochs}", loss=f"{current:.3f}", refresh=False)
                    bar.update(25 * recipe.batch_size if step % 25 == 0 else (step % 25) * recipe.batch_size)
            if step >= total_steps or (budget.max_seconds and time.perf_counter() - started > budget.max_seconds):
                out_of_budget = True
                break
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        images_seen += epoch_images
        if status == Status.DIVERGED:
            break
        train_loss = loss_sum.item() / max(1, epoch_images)
        if not math.isfinite(train_loss):
            status, message = Status.DIVERGED, f"training loss became {train_loss} in epoch {epoch}"
            break
        # Eager, not compiled: eval mode would otherwise compile a second graph.
        if calibration:
            # BN's exponential average lags the weights: after a few dozen steps at a high
            # learning rate it describes an earlier network, and validation losses ran into
            # the thousands. Precise BN (Wu and Johnson 2021, arXiv:2105.07576) re-measures
            # the statistics on the current weights, as a plain average over these images.
            with autocast():
                update_bn(calibration, model)
        val_loss, val_acc = _evaluate(model, val_batches, autocast)
        learned_nothing = val_loss > loss_bound and val_acc <= chance + CHANCE_MARGIN
        report = EpochReport(
            epoch=epoch,
            images=images_seen,
            train_loss=train_loss,
            val_loss=val_loss,
            val_acc=val_acc,
            lr=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - started,
            train_images_per_s=epoch_images / epoch_seconds,
            peak_lr=peak_lr,
            precision=precision,
            budget_spent=out_of_budget or epoch == budget.epochs,
            compile_seconds=compile_seconds,
        )
        history.append(report)
        # One such epoch may be a bad start that the next one repairs; two, or the last, are not.
        if learned_nothing and (report.budget_spent or explosions):
            status = Status.DIVERGED
            message = (f"validation loss {val_loss:.4g} (bound {loss_bound:.3g} = {DIVERGED_LOSS_FACTOR} ln {len(data.classes)}) "
                       f"at accuracy {val_acc:.2%} (chance {chance:.2%}) after epoch {epoch}")
            break
        explosions += learned_nothing
        if bar is not None:
            bar.write(
                f"epoch {epoch}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, val acc {val_acc:.2%}, "
                f"{report.train_images_per_s:,.0f} img/s",
                file=sys.stderr,
            )
        if checkpoint is not None:
            state = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": stepper.scaler and stepper.scaler.state_dict(), "batch_rng": train_batches.generator.get_state(),
                "rng": torch.get_rng_state(), "history": [asdict(h) for h in history], "step": step,
                "images": images_seen, "epoch": epoch, "train_seconds": train_seconds, "compile_seconds": compile_seconds,
                "peak_lr": peak_lr,
            }
            checkpoint(state, report)
        if callback is not None and callback(report):
            status = Status.STOPPED
            break
    if bar is not None:
        bar.close()
    return TrainResult(
        status=status,
        val_acc=val_acc,
        val_loss=val_loss,
        train_loss=train_loss,
        epochs=round(step / steps_per_epoch, 3),
        images=images_seen,
        seconds=time.perf_counter() - started,
        train_images_per_s=images_seen / train_seconds if train_seconds else 0.0,
        device=str(device),
        lr=peak_lr,
        precision=precision,
        compile_seconds=compile_seconds,
        split=split.describe(),
        dataset=data.describe(),
        message=message,
        history=history,
        model=model,
    )
