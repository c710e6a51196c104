"""What training reports: :class:`EpochReport` after each validation, :class:`TrainResult` at the end."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from ..names import Status

__all__ = ["EpochReport", "TrainResult"]


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
    val_images_per_s: float = 0.0  # of the validation pass, BN's re-estimation before it not counted


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
