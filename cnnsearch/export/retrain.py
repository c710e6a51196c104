"""Training the model to export: the winner retrained on training plus validation images, or,
with no retraining, the best candidate's own checkpoint (falling back to the next best that has one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..config import Arch, ConfigError
from ..model import build_model
from ..names import CHECKPOINT_FOLDER, WEIGHTS_FILE, Status
from ..tracking import StudyRecord
from ..train import fit_to_data, train
from .select import Candidate, Estimate, Setup

__all__ = ["Trained", "from_checkpoint", "retrained"]


@dataclass(frozen=True)
class Trained:
    """The model to export: its trial, its architecture fitted to the data, what it trained on, the seed it trained with
    (its trial's, an ablation replicate's offset included, for a checkpoint; None where the trial recorded none), and the
    precision it trained and validated in (None where its trial recorded none)."""

    candidate: Candidate
    arch: Arch
    model: nn.Module
    trained_on: dict[str, Any]
    seed: int | None
    precision: str | None


def _checkpoint(record: StudyRecord, candidate: Candidate, folder: Path) -> dict[str, Tensor] | None:
    """The weights the candidate's trial recorded; None where it recorded none (an error reading them raises)."""
    path = record.download(candidate.run_id, f"{CHECKPOINT_FOLDER}/{WEIGHTS_FILE}", folder / "ckpt" / candidate.run_id)
    return None if path is None else torch.load(path, map_location="cpu", weights_only=True)


def from_checkpoint(name: str, setup: Setup, candidates: list[Candidate], estimate: Estimate, folder: Path,
                    say: Callable[[str], None]) -> tuple[Trained, Estimate]:
    """The first candidate that recorded a checkpoint, as it trained; and the estimate of it (its trial's, if not the first).

    Raises:
        ConfigError: no candidate recorded a checkpoint.
    """
    for candidate in candidates:
        weights = _checkpoint(setup.record, candidate, folder)
        if weights is not None:
            break
        say(f"trial {candidate.run_name}: no checkpoint recorded; trying the next best")
    else:
        raise ConfigError(f"study {name!r}: no candidate trial has a checkpoint; use --retrain-epochs N to retrain instead")
    if candidate is not candidates[0]:
        estimate = Estimate.of_trial(candidate, setup.searched_images)
    arch = fit_to_data(candidate.arch, setup.data)
    model = build_model(arch)
    model.load_state_dict(weights)
    trained_on = {"splits": ["train"], "images": len(setup.split.train), "epochs": setup.budget.epochs, "how": "the trial's own checkpoint"}
    return Trained(candidate, arch, model, trained_on, candidate.seed, candidate.precision), estimate


def retrained(setup: Setup, candidate: Candidate, epochs: int, *, device: str, say: Callable[[str], None]) -> Trained:
    """``candidate`` retrained from scratch on the training and validation images for ``epochs`` epochs, with seed 0.

    Raises:
        RuntimeError: the retraining diverged.
    """
    arch = fit_to_data(candidate.arch, setup.data)
    both = replace(setup.split, train=torch.cat([setup.split.train, setup.split.val]))
    say(f"retraining {candidate.run_name} on {len(both.train):,} training and validation images for {epochs} epochs")
    seed = 0
    recipe = candidate.recipe or setup.recipe
    result = train(arch, setup.data, both, recipe=recipe, budget=setup.budget.model_copy(update={"epochs": epochs}),
                   seed=seed, device=device, progress=True)
    if result.status == Status.DIVERGED:
        raise RuntimeError(f"retraining {candidate.run_name} diverged: {result.message}")
    trained_on = {"splits": ["train", "val"], "images": len(both.train), "epochs": epochs, "how": "retrained",
                  "recipe": recipe.model_dump(mode="json")}
    return Trained(candidate, arch, result.model, trained_on, seed, result.precision)
