"""Choosing what a study exports: the study as it recorded its data, split, recipe and budget
(:class:`Setup`); its candidate trials, best first; with several top trials or seeds, their
re-evaluation, whose best mean wins (a seed that scored NaN fails its candidate); and the
refusal of a winner that learned nothing.

Nothing here reads the test split.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from ..analysis import completed, meeting
from ..config import Arch, ConfigError, Recipe, format_validation_error, load_arch
from ..data import ImageData, Split, chance_level, held_out_test_fraction, load_dataset, split_dataset
from ..names import ARCH_FILE, RECIPE_FILE, Params, Status
from ..space import Budget, load_space
from ..tracking import StudyRecord, TrialRun, trial_runs
from ..train import CHANCE_MARGIN, fit_to_data, train

__all__ = ["Candidate", "Estimate", "Setup", "find_candidates", "reevaluate", "refuse_at_chance", "study_setup"]


@dataclass(frozen=True)
class Candidate:
    """A completed trial that may be exported."""

    run_id: str
    run_name: str
    val_acc: float
    arch: Arch
    recipe: Recipe | None  # the trial's own, where it recorded one; else the study's
    seed: int | None  # the seed its trial trained with; None where it recorded none
    precision: str | None = None  # the precision its trial trained and validated in; None where it recorded none


@dataclass(frozen=True)
class Estimate:
    """The validation accuracy that picked the exported model: its value, what it is of, each seed's, on how many images,
    and in what precision (None where its trial recorded none)."""

    val_acc: float
    source: str
    seeds: list[float]
    images: int
    precision: str | None = None

    @classmethod
    def of_trial(cls, candidate: Candidate, images: int) -> Estimate:
        return cls(candidate.val_acc, f"trial {candidate.run_name}", [], images, candidate.precision)


@dataclass(frozen=True)
class Setup:
    """A study as its parent run recorded it: the data set's name, its data, split, recipe and budget."""

    record: StudyRecord
    dataset: str
    data: ImageData
    split: Split
    recipe: Recipe
    budget: Budget

    @property
    def searched_images(self) -> int:
        """How many validation images the trials were scored on: val_subset's, if they had one."""
        return int(self.record.params["split.val_images"])


def study_setup(record: StudyRecord, dataset: str | None, cache_dir: str | None, data_dir: str | None) -> Setup:
    """The study's data, split, recipe and budget, as its parent run recorded them.

    Raises:
        ConfigError: the study held no test split out of a data set without its own, the data is
            not the study's, or neither its recipe nor its space file is recorded.
    """
    params = record.params
    name = dataset or params["dataset"]
    if "split.test_fraction" not in params and held_out_test_fraction(name, 1.0):
        raise ConfigError(
            f"study {record.name!r} was run before a test split was held out, and {name} has no test "
            "images of its own: no image is left that its search did not see; run the study again"
        )
    data = load_dataset(name, cache_dir=cache_dir, data_dir=data_dir)
    subset, val_subset = (None if params.get(f"split.{key}") in (None, "None") else int(params[f"split.{key}"]) for key in ("subset", "val_subset"))
    # A study recorded before test splits held none out of its images.
    fractions = {"val_fraction": float(params["split.val_fraction"]), "test_fraction": float(params.get("split.test_fraction", 0.0))}
    split = split_dataset(data.labels, **fractions, seed=int(params["split.seed"]), subset=subset)
    # The trials validated on val_subset of these images (if set): check that sample, evaluate on all.
    searched = split if val_subset is None else split_dataset(data.labels, **fractions, seed=split.seed, subset=subset, val_subset=val_subset)
    recorded = searched.describe()
    if any(recorded[key] != params.get(f"split.{key}", recorded[key]) for key in ("val_digest", "test_digest")):
        raise ConfigError(
            f"{data.source}: not the data of study {params.get('dataset')!r} (its validation or test split differs); "
            "pass the study's data set with --dataset"
        )
    if Params.RECIPE in params:
        return Setup(record, name, data, split, Recipe.model_validate(json.loads(params[Params.RECIPE])), Budget.model_validate(json.loads(params["budget"])))
    with tempfile.TemporaryDirectory() as folder:  # a study recorded before recipes were logged: its space file
        path = record.space_file(folder)
        if path is None:
            raise ConfigError(f"study {params.get('dataset')!r}: neither its recipe nor its space file is recorded")
        space = load_space(path)
    return Setup(record, name, data, split, space.recipe, space.budget.model_copy(update={"epochs": int(params["epochs"])}))


def find_candidates(record: StudyRecord, folder: Path, say: Callable[[str], None], where: Sequence[str] = (),
                    run_id: str | None = None) -> list[Candidate]:
    """Completed trials with their architecture files, best first: those whose metrics meet ``where``, or the one run ``run_id``.

    Raises:
        ConfigError: the study has no trials, or no completed trial with an architecture among them.
    """
    if record.runs.empty:
        raise ConfigError(f"study {record.name!r}: no trials")
    done = trial_runs(meeting(completed(record), where), best_first=True)
    if run_id is not None:
        done = [trial for trial in done if trial.run_id == run_id]
    _say_better_unfinished(record, done, say)
    out = [candidate for trial in done if (candidate := _candidate(record, trial, folder, say)) is not None]
    if not out:
        raise ConfigError(f"study {record.name!r}: no completed trial with an architecture to export")
    return out


def _say_better_unfinished(record: StudyRecord, done: list[TrialRun], say: Callable[[str], None]) -> None:
    """Say which trials that did not complete scored at least as well as the best candidate."""
    scores = [trial.val_acc for trial in done if not math.isnan(trial.val_acc)]
    best = max(scores, default=math.nan) if done else -1
    for trial in trial_runs(record.runs):
        if trial.status != Status.COMPLETED and trial.val_acc >= best:
            say(f"trial {trial.name} has val_acc {trial.val_acc:.2%} but is {trial.status}: not a candidate")


def _candidate(record: StudyRecord, trial: TrialRun, folder: Path, say: Callable[[str], None]) -> Candidate | None:
    """The trial with its architecture and recipe files; None, said, where it recorded no architecture.

    Raises:
        ConfigError: its recorded recipe does not validate.
    """
    path = record.download(trial.run_id, ARCH_FILE, folder / trial.run_id)
    if path is None:
        say(f"trial {trial.name}: no architecture file recorded; skipped")
        return None
    # A trial recorded before trials logged their recipes has none: the study's is its.
    recipe_path = record.download(trial.run_id, RECIPE_FILE, folder / trial.run_id)
    try:
        recipe = None if recipe_path is None else Recipe.model_validate_json(recipe_path.read_text())
    except ValidationError as error:
        raise format_validation_error(error, f"trial {trial.name} (MLflow run {trial.run_id}): {RECIPE_FILE}") from None
    return Candidate(trial.run_id, trial.name, trial.val_acc, load_arch(path), recipe, trial.seed, trial.precision)


def reevaluate(setup: Setup, candidates: list[Candidate], *, top: int, seeds: int, device: str,
               say: Callable[[str], None]) -> tuple[list[Candidate], Estimate]:
    """The candidates in the order to export them, and the estimate that ranks the first.

    With ``top`` > 1 or ``seeds`` > 1 the top candidates are each retrained with ``seeds`` seeds on the
    study's split and budget, and ranked by their mean validation accuracy, the rest after them by
    their trial's; else the candidates stay as they are, ranked by their trial. A candidate with a
    seed that scored no accuracy (diverged, NaN) has failed: said, and ranked after every other.

    Raises:
        ConfigError: every re-evaluated candidate failed.
    """
    estimate = Estimate.of_trial(candidates[0], setup.searched_images)
    if top <= 1 and seeds <= 1:
        return candidates, estimate
    scored, failed, precisions = [], [], {}
    for candidate in candidates[:top]:
        accs = []
        for seed in range(seeds):
            say(f"re-evaluating {candidate.run_name}: seed {seed + 1} of {seeds}, "
                f"{setup.budget.epochs} epochs on {len(setup.split.train):,} images")
            acc, precisions[candidate.run_id] = _seed_accuracy(setup, candidate, seed, device)
            accs.append(acc)
        shown = ", ".join(f"{a:.2%}" for a in accs)
        if any(math.isnan(a) for a in accs):
            say(f"{candidate.run_name}: trial {candidate.val_acc:.2%}, {seeds} seeds ({shown}): a seed diverged; it failed and ranks last")
            failed.append(candidate)
            continue
        mean = sum(accs) / len(accs)
        say(f"{candidate.run_name}: trial {candidate.val_acc:.2%}, {seeds} seeds: mean {mean:.2%} ({shown})")
        scored.append((mean, candidate, accs))
    if not scored:
        raise ConfigError(f"study {setup.record.name!r}: each of the {len(failed)} re-evaluated trials diverged with some seed; nothing to export")
    scored.sort(key=lambda item: -item[0])
    mean, best, accs = scored[0]
    # The re-evaluated ones by their mean, then the rest by their trial, then the failed: the order to fall back in.
    ranked = [c for _, c, _ in scored] + candidates[top:] + failed
    return ranked, Estimate(mean, f"mean of {seeds} seeds of trial {best.run_name}", accs, len(setup.split.val), precisions[best.run_id])


def _seed_accuracy(setup: Setup, candidate: Candidate, seed: int, device: str) -> tuple[float, str]:
    """The candidate's validation accuracy, trained afresh with ``seed`` on the study's split and budget (NaN where it scored
    none), and the precision it trained in."""
    result = train(fit_to_data(candidate.arch, setup.data), setup.data, setup.split, recipe=candidate.recipe or setup.recipe,
                   budget=setup.budget, seed=seed, device=device, progress=True)
    return math.nan if result.val_acc is None else float(result.val_acc), result.precision


def refuse_at_chance(name: str, setup: Setup, estimate: Estimate, *, force: bool) -> None:
    """Refuse, unless ``force``, a best estimate within CHANCE_MARGIN of chance: that model learned nothing.

    Raises:
        ConfigError: the estimate is at chance and ``force`` is false.
    """
    chance = chance_level(setup.data.labels[setup.split.val])
    if estimate.val_acc <= chance + CHANCE_MARGIN and not force:
        raise ConfigError(
            f"study {name!r}: the best, {estimate.source}, reached {estimate.val_acc:.2%} against a chance level of "
            f"{chance:.2%}: it learned nothing worth exporting; pass --force to export it all the same"
        )
