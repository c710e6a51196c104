"""The learning-rate range test behind ``lr: auto``: :func:`find_lr`."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import torch
from torch import nn

from ..config import Recipe
from ..data import Batches
from .step import _optimizer, _Stepper

__all__ = ["find_lr"]

# Range test (Smith 2017, arXiv:1506.01186): learning rates rise geometrically over a few
# dozen steps from _LR_RANGE[0] until the smoothed loss exceeds 4x its minimum.
_LR_RANGE = (1e-4, 10.0)
_LR_RANGE_STEPS = 60


def _cycle(batches: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from batches


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
