"""The training step and what it is built from: the device and precision to train in, the optimizer, the
learning-rate schedule, and :class:`_Stepper`, one optimizer step under autocast."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from ..config import ConfigError, Recipe
from ..model import TrainingOutput

__all__ = ["AUX_LOSS_WEIGHT", "autocast", "resolve_device", "resolve_precision"]

# GoogLeNet's auxiliary classifiers add their losses "with a discount weight" of 0.3 (Szegedy et al. 2015, section 5).
AUX_LOSS_WEIGHT = 0.3


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


def autocast(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the context that runs a forward pass in ``precision`` (bf16, fp16, fp32) on ``device``, as training does."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


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
        self.autocast = autocast(precision, device)
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
