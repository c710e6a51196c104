"""What export picks, and what it records of it, on synthetic studies written through tracking (no
Ray, no training): a re-evaluation seed that scored NaN, an MLflow read that fails, a recorded
recipe that does not validate, a checkpoint that is absent, and the seed a trial trained with."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import torch
from mlflow.exceptions import MlflowException

from cnnsearch.config import ConfigError
from cnnsearch.costs import profile
from cnnsearch.export import select
from cnnsearch.export.retrain import from_checkpoint
from cnnsearch.export.select import Candidate, Estimate, find_candidates, reevaluate
from cnnsearch.model import build_model
from cnnsearch.names import Status
from cnnsearch.space import load_space
from cnnsearch.tracking import Recorder, find_study


@pytest.fixture
def arch(tmp_path, tiny_space):
    return load_space(tiny_space(tmp_path)).sample_random(0)


def record_study(folder: Path, arch, trials: list[dict]) -> object:
    """A study ``s`` whose trials are ``trials``: each a dict of val_acc, seed, and optionally recipe (a dict),
    weights (bool) and arch (False: none recorded). Returns its StudyRecord."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    recorder = Recorder.open(mlflow.MlflowClient(uri), experiment="s", study="s", space_hash="h", params={"seed": 0})
    for index, trial in enumerate(trials):
        run_id = recorder.start_trial(str(index), {"seed": trial["seed"]}, space_hash="h")
        if trial.get("arch", True):
            recorder.log_arch(run_id, arch, profile(arch).to_dict())
        if "recipe" in trial:
            recorder.log_recipe(run_id, trial["recipe"])
        if trial.get("weights"):
            torch.save(build_model(arch).state_dict(), folder / "weights.pt")
            recorder.log_weights(run_id, folder / "weights.pt")
        recorder.log_epoch(run_id, {"val_acc": trial["val_acc"], "val_loss": 1.0, "train_loss": 1.0, "lr": 0.1}, epoch=1)
        recorder.finish_trial(run_id, Status.COMPLETED)
    return find_study("s", uri)


def fake_setup(record=None, arch=None) -> SimpleNamespace:
    """What reevaluate and from_checkpoint read of a Setup, with the architecture's own data shape."""
    shape = {"num_classes": arch.num_classes, "input_size": arch.input_size, "in_channels": arch.in_channels} if arch else {}
    return SimpleNamespace(record=record or SimpleNamespace(name="s"), data=shape, recipe=None, budget=SimpleNamespace(epochs=1),
                           split=SimpleNamespace(train=range(90), val=range(10)), searched_images=10)


def scripted_training(monkeypatch, accuracies: dict[tuple[str, int], float | None]) -> None:
    """Re-evaluation returns ``accuracies[(run name, seed)]`` instead of training."""
    monkeypatch.setattr(select, "fit_to_data", lambda arch, data: arch)
    monkeypatch.setattr(select, "train",
                        lambda arch, data, split, *, seed, **_: SimpleNamespace(val_acc=accuracies[(arch, seed)], precision="bf16"))


def candidate(name: str, val_acc: float) -> Candidate:
    return Candidate(f"id-{name}", name, val_acc, name, None, 0)  # the arch stands in as the key of scripted_training


def test_a_seed_that_scored_nan_fails_its_candidate_and_ranks_it_last(monkeypatch):
    scripted_training(monkeypatch, {("a", 0): 0.9, ("a", 1): math.nan, ("b", 0): 0.7, ("b", 1): 0.8, ("c", 0): 0.6, ("c", 1): None})
    said = []
    candidates = [candidate("a", 0.9), candidate("b", 0.8), candidate("c", 0.7), candidate("d", 0.5)]
    ranked, estimate = reevaluate(fake_setup(), candidates, top=3, seeds=2, device="cpu", say=said.append)
    assert [c.run_name for c in ranked] == ["b", "d", "a", "c"]
    assert estimate.val_acc == pytest.approx(0.75) and "trial b" in estimate.source
    assert sum("a seed diverged" in line for line in said) == 2


def test_every_reevaluated_candidate_failing_ends_in_one_line(monkeypatch):
    scripted_training(monkeypatch, {("a", 0): math.nan, ("b", 0): None})
    with pytest.raises(ConfigError, match="diverged"):
        reevaluate(fake_setup(), [candidate("a", 0.9), candidate("b", 0.8)], top=2, seeds=1, device="cpu", say=print)


def test_a_failed_mlflow_read_raises_instead_of_skipping_the_best_trial(tmp_path, arch, monkeypatch):
    record = record_study(tmp_path, arch, [{"val_acc": 0.9, "seed": 0}, {"val_acc": 0.5, "seed": 0}])
    best = record.runs.sort_values("metrics.val_acc").iloc[-1]["run_id"]
    download = record.client.download_artifacts

    def flaky(run_id, path, folder):
        if run_id == best:
            raise MlflowException("503 Service Unavailable")
        return download(run_id, path, folder)

    monkeypatch.setattr(record.client, "download_artifacts", flaky)
    with pytest.raises(MlflowException, match="503"):
        find_candidates(record, tmp_path / "out", print)


def test_an_absent_architecture_is_skipped_with_a_line(tmp_path, arch):
    record = record_study(tmp_path, arch, [{"val_acc": 0.9, "seed": 0, "arch": False}, {"val_acc": 0.5, "seed": 0}])
    said = []
    found = find_candidates(record, tmp_path / "out", said.append)
    assert [c.val_acc for c in found] == [0.5] and any("no architecture file recorded" in line for line in said)


def test_a_recorded_recipe_that_does_not_validate_names_its_file_and_key(tmp_path, arch):
    record = record_study(tmp_path, arch, [{"val_acc": 0.9, "seed": 0, "recipe": {"batch_size": 64, "learning_rat": 0.1}}])
    with pytest.raises(ConfigError, match=r"recipe\.json: learning_rat"):
        find_candidates(record, tmp_path / "out", print)


def test_the_checkpoint_export_records_the_seed_its_trial_trained_with(tmp_path, arch):
    # An ablation replicate trains with the study's seed + its replicate: the trial's own seed param, not the study's.
    record = record_study(tmp_path, arch, [{"val_acc": 0.9, "seed": 7}, {"val_acc": 0.8, "seed": 3, "weights": True}])
    candidates = find_candidates(record, tmp_path / "out", print)
    assert [c.seed for c in candidates] == [7, 3]
    said = []
    estimate = Estimate.of_trial(candidates[0], 10)
    trained, estimate = from_checkpoint("s", fake_setup(record, arch), candidates, estimate, tmp_path / "ckpt", said.append)
    assert trained.candidate is candidates[1] and trained.seed == 3 and estimate.val_acc == pytest.approx(0.8)
    assert said == [f"trial {candidates[0].run_name}: no checkpoint recorded; trying the next best"]


def test_a_failed_checkpoint_read_raises_instead_of_trying_the_next(tmp_path, arch, monkeypatch):
    record = record_study(tmp_path, arch, [{"val_acc": 0.9, "seed": 0, "weights": True}, {"val_acc": 0.8, "seed": 0, "weights": True}])
    candidates = find_candidates(record, tmp_path / "out", print)

    def unreachable(*args, **kwargs):
        raise MlflowException("503 Service Unavailable")

    monkeypatch.setattr(record.client, "list_artifacts", unreachable)
    with pytest.raises(MlflowException, match="503"):
        from_checkpoint("s", fake_setup(record, arch), candidates, Estimate.of_trial(candidates[0], 10), tmp_path / "ckpt", print)
