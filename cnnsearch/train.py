"""One trial: train an architecture on resident data, validate after every epoch.

A plain function that reports through a callback; it knows nothing of Ray or MLflow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .config import Arch, ConfigError, Recipe
from .data import Batches, ImageData, Split
from .model import build_model
from .space import Budget

__all__ = ["EpochReport", "TrainResult", "fit_to_data", "resolve_device", "train"]

# Measured on the 2-core development CPU (BENCHMARKS.md, pipeline section): channels_last
# trains resnet20 1.2x faster there too, so it is the default on every device.
CHANNELS_LAST_DEFAULT = True


@dataclass(frozen=True)
class EpochReport:
    """What the callback receives after each validation."""

    epoch: int
    images: int  # training images seen so far
    train_loss: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    train_images_per_s: float


@dataclass(frozen=True)
class TrainResult:
    status: Literal["completed", "stopped", "diverged"]
    val_acc: float | None
    val_loss: float | None
    train_loss: float | None
    epochs: float
    images: int
    seconds: float
    train_images_per_s: float
    device: str
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


def fit_to_data(arch: Arch, data: ImageData) -> Arch:
    """The architecture with the data's number of classes, image size and channels."""
    update = {"num_classes": len(data.classes), "input_size": data.image_size, "in_channels": data.images.shape[1]}
    return Arch.from_dict(arch.to_dict() | update, source=arch.name)


def _lr_factor(recipe: Recipe, total_steps: int) -> Callable[[int], float]:
    warmup = int(recipe.warmup * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        if recipe.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return max(0.0, 1 - progress)

    return factor


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    # No weight decay on norm scales and biases (Goyal et al. 2017, arXiv:1706.02677).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)


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
    compile: bool = False,
    callback: Callback | None = None,
    checkpoint: Callable[[nn.Module, EpochReport], None] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``arch`` on ``split.train`` and validate on ``split.val`` after every epoch.

    Args:
        arch: the architecture; it must match the data (see :func:`fit_to_data`).
        recipe: optimizer, schedule and batch size.
        budget: epochs, and optionally a number of training images or seconds; the first
            limit reached ends training (the learning-rate schedule spans the epochs, or
            the images when fewer).
        seed: seeds the weights, the order of the images and the augmentation; on CPU the
            same seed gives the same metrics.
        device: ``cpu`` or ``cuda``; on CUDA the model runs in bf16 autocast.
        channels_last: NHWC memory format for the model and the batches.
        compile: run the model through :func:`torch.compile`.
        callback: called with an :class:`EpochReport` after each validation; returning
            True stops training early (status ``stopped``).
        checkpoint: called with the model and the report before ``callback``, to save it.
        progress: show a progress bar on stderr.

    Returns:
        The final metrics, with status ``diverged`` and a message if the loss became NaN
        or infinite.
    """
    started = time.perf_counter()
    device = resolve_device(str(device))
    if (arch.num_classes, arch.input_size, arch.in_channels) != (len(data.classes), data.image_size, data.images.shape[1]):
        raise ConfigError(
            f"{arch.name}: built for {arch.num_classes} classes of {arch.in_channels}x{arch.input_size}x{arch.input_size} "
            f"images, but {data.source} has {len(data.classes)} classes of {tuple(data.images.shape[1:])}"
        )
    torch.manual_seed(seed)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(arch).to(device, memory_format=memory_format)
    forward = torch.compile(model) if compile else model
    batch_args = dict(batch_size=recipe.batch_size, device=device, channels_last=channels_last)
    train_batches = Batches(data, split.train, train=True, seed=seed, **batch_args)
    val_batches = Batches(data, split.val, train=False, **batch_args)  # larger batches run slower on CPU
    steps_per_epoch = len(train_batches)
    total_steps = budget.epochs * steps_per_epoch
    if budget.max_images:
        total_steps = min(total_steps, math.ceil(budget.max_images / recipe.batch_size))
    optimizer = _optimizer(model, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(recipe, total_steps))
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    if device.type == "cuda":
        def autocast() -> contextlib.AbstractContextManager:
            return torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=total_steps * recipe.batch_size, unit="img", unit_scale=True, leave=False, dynamic_ncols=True, file=sys.stderr
        )
    history: list[EpochReport] = []
    status, message = "completed", ""
    step = images_seen = 0
    train_seconds = 0.0
    train_loss = val_loss = val_acc = None
    out_of_budget = False
    epoch = 0
    while epoch < budget.epochs and not out_of_budget:
        epoch += 1
        model.train()
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        epoch_images = 0
        for images, labels in train_batches:
            with autocast():
                loss = criterion(forward(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            epoch_images += len(labels)
            loss_sum += loss.detach() * len(labels)
            if step % 25 == 0 or step == total_steps:
                current = loss.item()  # a sync: only every few steps
                if not math.isfinite(current):
                    status, message = "diverged", f"training loss became {current} at step {step} (epoch {epoch})"
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
        if status == "diverged":
            break
        train_loss = loss_sum.item() / max(1, epoch_images)
        val_loss, val_acc = _evaluate(forward, val_batches, autocast)
        report = EpochReport(
            epoch=epoch,
            images=images_seen,
            train_loss=train_loss,
            val_loss=val_loss,
            val_acc=val_acc,
            lr=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - started,
            train_images_per_s=epoch_images / epoch_seconds,
        )
        history.append(report)
        if bar is not None:
            bar.write(
                f"epoch {epoch}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, val acc {val_acc:.2%}, "
                f"{report.train_images_per_s:,.0f} img/s",
                file=sys.stderr,
            )
        if checkpoint is not None:
            checkpoint(model, report)
        if callback is not None and callback(report):
            status = "stopped"
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
        split=split.describe(),
        dataset=data.describe(),
        message=message,
        history=history,
        model=model,
    )
