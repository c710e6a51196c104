"""``train()``: one trial, a plain function that reports through a callback and knows nothing of Ray or MLflow.

It is built of set-up, restore (resume from a saved state), one epoch, validate (with BN re-estimation)
and snapshot (the state a checkpoint saves), each a function here.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from ..config import Arch, Recipe
from ..data import Batches, ImageData, Split, chance_level
from ..model import build_model
from ..names import Status
from ..space import Budget
from .fit import check_fits
from .lr_range import find_lr
from .progress import image_bar
from .results import EpochReport, TrainResult
from .step import _lr_factor, _optimizer, _Stepper, resolve_device, resolve_precision

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["CHANCE_MARGIN", "CHANNELS_LAST_DEFAULT", "DIVERGED_LOSS_FACTOR", "train"]

# Measured on the 2-core development CPU (BENCHMARKS.md, pipeline section): channels_last
# trains resnet20 1.2x faster there too, so it is the default on every device.
CHANNELS_LAST_DEFAULT = True
# A trial is diverged when its validation loss exceeds this many times ln(classes) while its
# accuracy is within CHANCE_MARGIN of the majority class's share, in its last epoch or in two.
DIVERGED_LOSS_FACTOR = 4
CHANCE_MARGIN = 0.05

Callback = Callable[[EpochReport], "bool | None"]


@dataclass
class _Trial:
    """What set-up builds: the same for every epoch of the trial."""

    model: nn.Module
    stepper: _Stepper
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_batches: Batches
    val_batches: Batches
    calibration: Batches | None  # the images that BN's statistics are re-estimated on
    device: torch.device
    precision: str
    peak_lr: float
    steps_per_epoch: int
    total_steps: int
    classes: int
    chance: float  # the majority class's share of the validation images


@dataclass
class _State:
    """Where training stands: what a snapshot saves and restore reads back, and how the trial ends."""

    started: float
    history: list[EpochReport] = field(default_factory=list)
    step: int = 0
    images: int = 0
    epoch: int = 0
    train_seconds: float = 0.0
    compile_seconds: float = 0.0
    train_loss: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    status: Status = Status.COMPLETED
    message: str = ""
    explosions: int = 0  # epochs that learned nothing while their loss exploded
    out_of_budget: bool = False
    compiled: bool = False  # the first step of this call compiles, a resumed one too


def _batches(data: ImageData, split: Split, recipe: Recipe, seed: int, device: torch.device,
             channels_last: bool) -> tuple[Batches, Batches, Batches | None]:
    """The training, validation and BN re-estimation batches.

    Those that run the network in training mode leave out a last batch of one image, which
    batch norm cannot normalize where a network reaches 1x1 before it; validation keeps every image.
    """
    batch_args = dict(batch_size=recipe.batch_size, device=device, channels_last=channels_last)
    train_batches = Batches(data, split.train, train=True, seed=seed, crop_padding=recipe.crop_padding, flip=recipe.flip,
                            min_batch=2, **batch_args)
    val_batches = Batches(data, split.val, train=False, **batch_args)  # larger batches run slower on CPU
    calibration = None
    if recipe.bn_recalibration_images:
        shuffled = split.train[torch.randperm(len(split.train), generator=torch.Generator().manual_seed(seed))]
        calibration = Batches(data, shuffled[: recipe.bn_recalibration_images], train=False, min_batch=2, **batch_args)
    return train_batches, val_batches, calibration


def _set_up(arch: Arch, data: ImageData, split: Split, recipe: Recipe, budget: Budget, seed: int, device: torch.device,
            channels_last: bool, resume: dict[str, Any] | None) -> _Trial:
    """The model, its batches, optimizer, schedule and step; the peak learning rate (a range test for lr: auto)."""
    precision = resolve_precision(recipe.precision, device)
    check_fits(arch, data)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every training batch but the last has one shape
    torch.manual_seed(seed)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(arch, zero_init_residual=recipe.zero_init_residual).to(device, memory_format=memory_format)
    if resume is not None:
        model.load_state_dict(resume["model"])
    forward = torch.compile(model) if recipe.compile else model
    train_batches, val_batches, calibration = _batches(data, split, recipe, seed, device, channels_last)
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
    return _Trial(
        model=model, stepper=_Stepper(model, forward, optimizer, recipe, precision, device),
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(recipe, total_steps)),
        train_batches=train_batches, val_batches=val_batches, calibration=calibration, device=device,
        precision=precision, peak_lr=peak_lr, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        classes=len(data.classes), chance=chance_level(data.labels[split.val]),
    )


def _restore(trial: _Trial, state: _State, resume: dict[str, Any]) -> None:
    """Go on from a snapshot (the model's weights are loaded in set-up, before compiling)."""
    trial.stepper.optimizer.load_state_dict(resume["optimizer"])
    trial.scheduler.load_state_dict(resume["scheduler"])
    if trial.stepper.scaler is not None:
        trial.stepper.scaler.load_state_dict(resume["scaler"])
    trial.train_batches.generator.set_state(resume["batch_rng"])
    torch.set_rng_state(resume["rng"])
    state.history = [EpochReport(**report) for report in resume["history"]]
    state.step, state.images, state.epoch = resume["step"], resume["images"], resume["epoch"]
    state.train_seconds, state.compile_seconds = resume["train_seconds"], resume["compile_seconds"]
    last = state.history[-1]
    state.train_loss, state.val_loss, state.val_acc = last.train_loss, last.val_loss, last.val_acc
    state.started -= last.seconds  # a seconds budget counts the time before the interruption
    state.out_of_budget = last.budget_spent


def _snapshot(trial: _Trial, state: _State) -> dict[str, Any]:
    """The training state that :func:`_restore` goes on from; ``["model"]`` is the model's state_dict."""
    return {
        "model": trial.model.state_dict(), "optimizer": trial.stepper.optimizer.state_dict(),
        "scheduler": trial.scheduler.state_dict(), "scaler": trial.stepper.scaler and trial.stepper.scaler.state_dict(),
        "batch_rng": trial.train_batches.generator.get_state(), "rng": torch.get_rng_state(),
        "history": [asdict(h) for h in state.history], "step": state.step, "images": state.images, "epoch": state.epoch,
        "train_seconds": state.train_seconds, "compile_seconds": state.compile_seconds, "peak_lr": trial.peak_lr,
    }


def _step(trial: _Trial, state: _State, images: torch.Tensor, labels: torch.Tensor,
          compiles: bool) -> tuple[torch.Tensor, float]:
    """One training step, and the seconds it spent compiling: under torch.compile the first call compiles, timed
    apart so that images/s measures training alone."""
    if not compiles or state.compiled:
        return trial.stepper(images, labels), 0.0
    compile_start = time.perf_counter()
    loss = trial.stepper(images, labels)
    loss.item()
    compiling = time.perf_counter() - compile_start
    state.compile_seconds += compiling
    state.compiled = True
    return loss, compiling


def _run_epoch(trial: _Trial, state: _State, recipe: Recipe, budget: Budget, bar: tqdm | None) -> float:
    """Train one epoch, or until the budget runs out; its training images per second.

    A loss that becomes NaN or infinite sets the status to diverged.
    """
    state.epoch += 1
    trial.model.train()
    epoch_start = time.perf_counter()
    loss_sum = torch.zeros((), device=trial.device)
    epoch_images = shown = 0  # shown: of the epoch's images, those on the progress bar
    for images, labels in trial.train_batches:
        loss, compiling = _step(trial, state, images, labels, recipe.compile)
        epoch_start += compiling
        trial.scheduler.step()
        state.step += 1
        epoch_images += len(labels)
        loss_sum += loss * len(labels)
        if state.step % 25 == 0 or state.step == trial.total_steps:
            current = loss.item()  # a sync: only every few steps
            if not math.isfinite(current):
                state.status = Status.DIVERGED
                state.message = f"training loss became {current} at step {state.step} (epoch {state.epoch})"
                break
            if bar is not None:
                bar.set_postfix(epoch=f"{state.epoch}/{budget.epochs}", loss=f"{current:.3f}", refresh=False)
                bar.update(epoch_images - shown)
                shown = epoch_images
        if state.step >= trial.total_steps or (budget.max_seconds and time.perf_counter() - state.started > budget.max_seconds):
            state.out_of_budget = True
            break
    epoch_seconds = time.perf_counter() - epoch_start
    if bar is not None:
        bar.update(epoch_images - shown)
    state.train_seconds += epoch_seconds
    state.images += epoch_images
    if state.status == Status.DIVERGED:
        return 0.0
    state.train_loss = loss_sum.item() / max(1, epoch_images)
    if not math.isfinite(state.train_loss):
        state.status, state.message = Status.DIVERGED, f"training loss became {state.train_loss} in epoch {state.epoch}"
        return 0.0
    return epoch_images / epoch_seconds


@torch.inference_mode()
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


def _validate(trial: _Trial, state: _State, budget: Budget, train_images_per_s: float) -> EpochReport:
    """Re-estimate BN's statistics, validate, and record the epoch's report.

    A model that learned nothing while its loss exploded, in the last epoch or in two, sets the status to diverged.
    """
    autocast = trial.stepper.autocast
    # Eager, not compiled: eval mode would otherwise compile a second graph.
    if trial.calibration:
        # BN's exponential average lags the weights: after a few dozen steps at a high
        # learning rate it describes an earlier network, and validation losses ran into
        # the thousands. Precise BN (Wu and Johnson 2021, arXiv:2105.07576) re-measures
        # the statistics on the current weights, as a plain average over these images.
        with autocast():
            update_bn(trial.calibration, trial.model)
    val_start = time.perf_counter()
    state.val_loss, state.val_acc = _evaluate(trial.model, trial.val_batches, autocast)
    val_images_per_s = len(trial.val_batches.labels) / (time.perf_counter() - val_start)
    report = EpochReport(
        epoch=state.epoch, images=state.images, train_loss=state.train_loss, val_loss=state.val_loss,
        val_acc=state.val_acc, lr=trial.stepper.optimizer.param_groups[0]["lr"],
        seconds=time.perf_counter() - state.started, train_images_per_s=train_images_per_s, peak_lr=trial.peak_lr,
        precision=trial.precision, budget_spent=state.out_of_budget or state.epoch == budget.epochs,
        compile_seconds=state.compile_seconds, val_images_per_s=val_images_per_s,
    )
    state.history.append(report)
    # Learned nothing: a validation loss this far above a uniform guess's ln(classes), at chance.
    loss_bound = DIVERGED_LOSS_FACTOR * math.log(max(2, trial.classes))
    learned_nothing = state.val_loss > loss_bound and state.val_acc <= trial.chance + CHANCE_MARGIN
    # One such epoch may be a bad start that the next one repairs; two, or the last, are not.
    if learned_nothing and (report.budget_spent or state.explosions):
        state.status = Status.DIVERGED
        state.message = (f"validation loss {state.val_loss:.4g} (bound {loss_bound:.3g} = {DIVERGED_LOSS_FACTOR} ln "
                         f"{trial.classes}) at accuracy {state.val_acc:.2%} (chance {trial.chance:.2%}) "
                         f"after epoch {state.epoch}")
    state.explosions += learned_nothing
    return report


def _progress_bar(trial: _Trial) -> tqdm:
    """A bar of the images that the trial's steps train on: a last, smaller batch is counted as its images, not a full one."""
    epochs, steps = divmod(trial.total_steps, trial.steps_per_epoch)  # the steps of a partial epoch are full batches
    return image_bar(epochs * trial.train_batches.count + steps * trial.train_batches.batch_size)


def _describe(report: EpochReport) -> str:
    return (f"epoch {report.epoch}: train loss {report.train_loss:.4f}, val loss {report.val_loss:.4f}, "
            f"val acc {report.val_acc:.2%}, {report.train_images_per_s:,.0f} img/s")


def _result(trial: _Trial, state: _State, data: ImageData, split: Split) -> TrainResult:
    return TrainResult(
        status=state.status, val_acc=state.val_acc, val_loss=state.val_loss, train_loss=state.train_loss,
        epochs=round(state.step / trial.steps_per_epoch, 3), images=state.images,
        seconds=time.perf_counter() - state.started,
        train_images_per_s=state.images / state.train_seconds if state.train_seconds else 0.0,
        device=str(trial.device), lr=trial.peak_lr, precision=trial.precision, compile_seconds=state.compile_seconds,
        split=split.describe(), dataset=data.describe(), message=state.message, history=state.history,
        model=trial.model,
    )


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
        arch: the architecture; it must match the data (see :func:`~.fit.fit_to_data`).
        recipe: optimizer, schedule, batch size, precision and compilation.
        budget: epochs, and optionally a number of training images or seconds; the first limit reached ends
            training (the learning-rate schedule spans the epochs, or the images when fewer).
        seed: seeds the weights, the order of the images and the augmentation; on CPU the same seed gives the
            same metrics.
        device: ``cpu`` or ``cuda``.
        channels_last: NHWC memory format for the model and the batches.
        callback: called with an :class:`EpochReport` after each validation; returning True stops training
            early (status ``stopped``).
        checkpoint: called after each validation, before ``callback``, with the training state and the report,
            to save them; ``state["model"]`` is the model's state_dict.
        resume: a state that ``checkpoint`` received: training goes on after its epoch as if it had never
            stopped (on CPU, to the same metrics).
        progress: show a progress bar on stderr.

    Returns:
        The final metrics, with status ``diverged`` and a message if the loss became NaN or infinite, or if
        validation shows a model that learned nothing while its loss exploded (see ``DIVERGED_LOSS_FACTOR``).
    """
    state = _State(started=time.perf_counter())
    trial = _set_up(arch, data, split, recipe, budget, seed, resolve_device(str(device)), channels_last, resume)
    if resume is not None:
        _restore(trial, state, resume)
    bar = _progress_bar(trial) if progress else None
    while state.epoch < budget.epochs and not state.out_of_budget:
        train_images_per_s = _run_epoch(trial, state, recipe, budget, bar)
        if state.status == Status.DIVERGED:
            break
        report = _validate(trial, state, budget, train_images_per_s)
        if state.status == Status.DIVERGED:
            break
        if bar is not None:
            bar.write(_describe(report), file=sys.stderr)
        if checkpoint is not None:
            checkpoint(_snapshot(trial, state), report)
        if callback is not None and callback(report):
            state.status = Status.STOPPED
            break
    if bar is not None:
        bar.close()
    return _result(trial, state, data, split)
