"""`cnnsearch run`: Optuna proposes, Ray Tune schedules, MLflow records, end to end on synthetic data."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import ray

from cnnsearch import load_arch, load_space
from cnnsearch.study.settings import STATE_VERSION

TINY = {"search": {"trials": 4}}  # conftest.py's tiny space, four trials unless told otherwise


def children(client, experiment_id, parent_id):
    return client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


def study(client, name):
    experiment = client.get_experiment_by_name(name)
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`cnnsearch.study` != ''")
    return experiment, parents


@pytest.mark.slow
def test_run_records_every_trial_in_mlflow(ray_session, tmp_path, cli, monkeypatch, tiny_space):
    """Eight concurrent trials on the sqlite store: every run, param and per-epoch metric arrives."""
    import cnnsearch.study.progress

    monkeypatch.setattr(cnnsearch.study.progress, "_HEARTBEAT_S", 0.2)  # a line at least every 30 s, made testable
    space_file = tiny_space(tmp_path, **TINY)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status, out, err = cli("run", space_file, "--tracking-uri", uri, "--storage", tmp_path / "runs" / "tiny", "--seed", "3",
                           "--trials", "8", "--max-concurrent", "8", "--cpus-per-trial", "0.25")
    assert status == 0, err
    assert "top 5" in out and f"Browse it: cnnsearch ui --tracking-uri {uri}" in out
    assert "8/8 trials done" in err and "locked" not in err
    assert re.search(r"\] training: trial-\w+ epoch [12]/2", err), err
    assert re.search(r"training: .*; at most \d+:\d\d:\d\d to go at the pace so far", err), err

    client = mlflow.MlflowClient(uri)
    experiment, parents = study(client, "tiny")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.params["version.torch"] and parent.data.params["sampler"] == "tpe"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"tiny.yaml", "results.csv", "results.json"}
    runs = children(client, experiment.experiment_id, parent.info.run_id)
    assert len(runs) == 8
    space = load_space(space_file)
    for run in runs:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert tags["cnnsearch.status"] in ("completed", "stopped early") and run.info.status == "FINISHED"
        assert tags["cnnsearch.family"] == "residual" and tags["cnnsearch.space_hash"] == space.digest
        assert tags["ray.node_id"] == ray.get_runtime_context().get_node_id() and tags["ray.hostname"] == platform.node()
        assert {"residual.width", "residual.num_blocks", "stem.channels", "stages.1.stride"} <= set(params)
        assert "residual.width" not in metrics  # a knob is a param: as a metric it would be one more chart in the UI
        assert metrics["params"] > 0 and metrics["flops"] == 2 * metrics["macs"]
        history = client.get_metric_history(run.info.run_id, "val_acc")
        epochs = 2 if tags["cnnsearch.status"] == "completed" else 1
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))
        assert len(client.get_metric_history(run.info.run_id, "lr")) == epochs
        folder = tmp_path / run.info.run_id
        folder.mkdir()
        arch = load_arch(client.download_artifacts(run.info.run_id, "arch.yaml", str(folder)))
        assert arch.stem.channels == int(params["stem.channels"])
        assert arch.stages[0].width == int(params["residual.width"])
        assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")} == {"checkpoint/weights.pt"}
    # MLflow's filters find a knob's level among the params: exactly the trials of width 16. There are some:
    # TPE's first two proposals are random (its startup counts finished trials only), and seed 3 draws width 16 for both.
    sixteen = {run.info.run_id for run in runs if run.data.params["residual.width"] == "16"}
    wide = client.search_runs([experiment.experiment_id], filter_string="params.`residual.width` = '16'")
    assert len(sixteen) >= 2 and {run.info.run_id for run in wide} == sixteen
    # Importances say from how many trials they come: stopped-early ones count, at their last epoch.
    completed = sum(run.data.tags["cnnsearch.status"] == "completed" for run in runs)
    from cnnsearch import plots
    from cnnsearch.tracking import find_study

    figures = {}
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.setdefault(path.name, figure) and path)
    monkeypatch.setattr("cnnsearch.study.propose.MIN_IMPORTANCE_TRIALS", completed)  # a real study needs 75 (tests/test_guards.py)
    plots.plot_study(find_study("tiny", uri), tmp_path / "plots")
    assert figures["importances.png"].axes[0].get_title().endswith(
        f"from n={len(runs)} trials\n({completed} completed, {len(runs) - completed} stopped early, at their last epoch)")


@pytest.mark.slow
def test_the_trainable_that_ray_ships_does_not_carry_the_data_set(ray_session, tmp_path, cli, monkeypatch, tiny_space):
    """The images reach the trials through Ray's object store only. Ray refuses a trainable that pickles to more than
    FUNCTION_SIZE_ERROR_THRESHOLD (95 MiB), which CIFAR-10's 50,000 images pass, and only warns above 10 MiB; with both
    lowered below the synthetic images' 6 MiB, the same happens here to a trainable that holds them."""
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "FUNCTION_SIZE_WARN_THRESHOLD", 2**19)
    monkeypatch.setattr(ray_constants, "FUNCTION_SIZE_ERROR_THRESHOLD", 2**20)
    space_file = tiny_space(tmp_path, dataset={"subset": 64}, budget={"epochs": 1}, search={"trials": 1})
    status, _, err = cli("run", space_file, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                         "--storage", tmp_path / "runs", "--scheduler", "none")
    assert status == 0 and "1/1 trials done (1 completed)" in err, err


@pytest.mark.slow
def test_run_compiles_memory_efficient_dense_trials_and_records_the_compile_time(ray_session, tmp_path, cli):
    """--compile in a Ray worker, Inductor and all, on a dense stage that recomputes in backward."""
    space_file = tmp_path / "compiled.yaml"
    space_file.write_text("""
name: compiled
family: dense
stem: {style: cifar, channels: 8}
stages: [{stride: 1}]
dense: {growth_rate: [4, 8], num_layers: 2, bn_size: 2, memory_efficient: true}
dataset: {name: synthetic, subset: 64}
budget: {epochs: 1}
recipe: {batch_size: 32}
""")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status, _, err = cli("run", space_file, "--tracking-uri", uri, "--storage", tmp_path / "runs", "--trials", "1", "--compile")
    assert status == 0, err
    client = mlflow.MlflowClient(uri)
    experiment, (parent,) = study(client, "compiled")
    assert json.loads(parent.data.params["recipe"])["compile"] is True
    (run,) = children(client, experiment.experiment_id, parent.info.run_id)
    assert run.data.tags["cnnsearch.status"] == "completed", run.data.tags.get("cnnsearch.reason")
    assert run.data.params["dense.memory_efficient"] == "True" and run.data.metrics["compile_seconds"] > 0


def optuna_trials(storage):
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage / "optuna.journal")))
    (summary,) = optuna.get_all_study_summaries(journal)
    return optuna.load_study(study_name=summary.study_name, storage=journal).trials


@pytest.mark.slow
def test_cost_limits_reject_proposals_before_they_become_trials(ray_session, tmp_path, cli, tiny_space):
    """--trials 4 trains 4 architectures within the limits; the rejected proposals are a table, never a score."""
    space_file = tiny_space(tmp_path, "limited", **TINY, limits={"max_params": 6000})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status, out, err = cli("run", space_file, "--tracking-uri", uri, "--storage", tmp_path / "runs", "--sampler", "random",
                           "--trials", "4", "--seed", "0", "--scheduler", "none")
    assert status == 0, err
    client = mlflow.MlflowClient(uri)
    experiment, (parent,) = study(client, "limited")
    runs = children(client, experiment.experiment_id, parent.info.run_id)
    assert len(runs) == 4
    for run in runs:
        assert run.data.tags["cnnsearch.status"] == "completed" and run.data.metrics["params"] <= 6000
    rejected = int(parent.data.metrics["rejected_proposals"])
    assert rejected >= 1 and f"{rejected} rejected proposals were not trained" in out
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "rejected.json", str(tmp_path))).read_text())
    assert len(table) == rejected
    for row in table:
        assert "max_params 6,000" in row["reason"] and {"residual.width", "residual.num_blocks", "stem.channels"} <= set(row)
    trials = optuna_trials(tmp_path / "runs")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 4
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == rejected and all(t.value is None and "max_params" in t.user_attrs["cnnsearch.rejected"] for t in failed)


# Five stride-2 steps take a 32x32 image to 1x1 with the mobilenet stem, to 2x2 with the cifar one.
def collapsing(subset: int, batch_size: int) -> dict:
    """The tiny space with four stride-2 stages, of one width, and a choice of stems."""
    return {"stem": {"style": ["cifar", "mobilenet"], "channels": 8}, "stages": [{"stride": 2}] * 4,
            "residual": {"num_blocks": 1, "width": 8}, "dataset": {"subset": subset, "val_subset": 32}, "budget": {"epochs": 1},
            "recipe": {"batch_size": batch_size, "precision": "fp32"}}


@pytest.mark.slow
@pytest.mark.parametrize(
    "space, rejected_when, reason",
    [
        # A pad shortcut cannot drop channels: the builder refuses a stem wider than the stage.
        (TINY | {"stem": {"channels": [8, 16, 32]}, "residual": {"num_blocks": 1, "shortcut": "pad"}},
         lambda row: row["stem.channels"] > row["residual.width"],
         lambda row: f"cannot be built: stages.0: a pad shortcut cannot go from {row['stem.channels']} to fewer ({row['residual.width']}) channels"),
        # Batch norm of a 1x1 map cannot train on batches of one image.
        (collapsing(subset=16, batch_size=1),
         lambda row: row["stem.style"] == "mobilenet",
         lambda row: "cannot train at batch 1: Expected more than 1 value per channel when training, got input size torch.Size([1, 8, 1, 1])"),
    ],
    ids=["builder", "training-forward"],
)
def test_proposals_that_cannot_be_built_or_trained_are_rejected_not_failed_trials(space, rejected_when, reason, ray_session, tmp_path, cli,
                                                                                   tiny_space):
    """Such a proposal is a row of the rejected table with the reason, found in the driver before Ray
    sees it; not a failed trial, and --trials 3 trains 3."""
    space_file = tiny_space(tmp_path, "unbuildable", **space)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status, out, err = cli("run", space_file, "--tracking-uri", uri, "--storage", tmp_path / "runs", "--sampler", "random",
                           "--trials", "3", "--seed", "0", "--scheduler", "none", "--epochs", "1")
    assert status == 0, err
    client = mlflow.MlflowClient(uri)
    experiment, (parent,) = study(client, "unbuildable")
    runs = children(client, experiment.experiment_id, parent.info.run_id)
    assert len(runs) == 3 and "failed" not in err
    for run in runs:
        knobs = {name: int(value) if value.isdigit() else value for name, value in run.data.params.items()}
        assert run.data.tags["cnnsearch.status"] == "completed" and not rejected_when(knobs)
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "rejected.json", str(tmp_path))).read_text())
    assert len(table) == int(parent.data.metrics["rejected_proposals"]) >= 1
    assert f"{len(table)} rejected proposals were not trained" in out
    for row in table:
        assert rejected_when(row) and row["reason"] == reason(row)
    trials = optuna_trials(tmp_path / "runs")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 3
    assert sum(t.state == optuna.trial.TrialState.FAIL and t.value is None for t in trials) == len(table)


def _over_the_limits(tiny_space, folder):
    from cnnsearch.costs import cheapest

    wide = TINY | {"residual": {"num_blocks": {"low": 1, "high": 8}, "width": {"low": 8, "high": 64}}}
    _, cost = cheapest(load_space(tiny_space(folder, "narrow", **wide)))
    # One point in 456 fits: it trains once, and then it is the nearest point within the limits of every proposal.
    return tiny_space(folder, "narrow", **wide, limits={"max_params": cost.params})


def _unbuildable(tiny_space, folder):
    # A pad shortcut cannot drop channels: only the stem of 8 channels can be built, one point in 505.
    return tiny_space(folder, "narrow", **TINY | {"stem": {"channels": {"low": 8, "high": 512}},
                                                  "residual": {"num_blocks": 1, "width": 8, "shortcut": "pad"}})


@pytest.mark.slow
@pytest.mark.parametrize("space, message", [
    (_over_the_limits, "its limits turned away 100 proposals in this session, so only 1 of 4 trials trained; raise limits.max_params"),
    (_unbuildable, "100 proposals were turned away in this session (100 of the study's 100: cannot be built), so only 0 of 4 trials "
                   "trained; narrow the space"),
], ids=["limits", "builder"])
def test_proposals_rejected_nearly_always_stop_the_search_with_the_reason(space, message, ray_session, tmp_path, cli, tiny_space):
    space_file = space(tiny_space, tmp_path)
    status, _, err = cli("run", space_file, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage", tmp_path / "runs",
                         "--sampler", "random", "--trials", "4", "--scheduler", "none", "--seed", "0")
    assert status == 2 and "Traceback" not in err
    assert message in err


# Depth and width per stage: none of 300 random draws has 12,000 params or fewer; the cheapest has 5,266
# (8,402 with bottlenecks).
TIGHT_LIMIT = 12_000


def _tight(tiny_space, folder, limit=TIGHT_LIMIT):
    stage = {"num_blocks": {"low": 1, "high": 6}, "width": {"low": 8, "high": 64, "step": 8}}
    return tiny_space(folder, "tight", **TINY, stem={"channels": {"low": 8, "high": 32, "step": 8}},
                      stages=[{"stride": 1, "residual": stage}, {"stride": 2, "residual": stage | {"width": {"low": 16, "high": 128, "step": 16}}}],
                      residual={"num_blocks": None, "width": None, "block": ["basic", "bottleneck"]}, limits={"max_params": limit})


SHAPE = {"num_classes": 10, "input_size": 32, "in_channels": 3}  # the space's own: fitting changes nothing


def _drawn(space, seed):
    """A random point of the space: its knobs by name."""
    import random

    from cnnsearch.space.knobs import RandomTrial

    class Drawn(RandomTrial):
        def __init__(self):
            super().__init__(random.Random(seed))
            self.values = {}

        def suggest_categorical(self, name, choices):
            self.values[name] = super().suggest_categorical(name, choices)
            return self.values[name]

        def suggest_int(self, name, low, high, *, step=1, log=False):
            self.values[name] = super().suggest_int(name, low, high, step=step, log=log)
            return self.values[name]

    drawn = Drawn()
    space.sample(drawn)
    return drawn.values


def _params(space, values):
    from cnnsearch.costs import profile
    from cnnsearch.experiment import FixedSuggester

    return profile(space.sample(FixedSuggester(values))).params


def test_the_nearest_point_within_the_limits_goes_as_far_toward_the_proposal_as_they_allow(tmp_path, tiny_space):
    """Each knob of the point lies between its smallest value and the proposal's, and no knob can take one
    step more toward the proposal within the limits; a block type whose smallest network is over them changes."""
    from cnnsearch.study.reject import WithinLimits

    space = load_space(_tight(tiny_space, tmp_path))
    nearest = WithinLimits(space, SHAPE).nearest
    knobs = space.knobs()
    for seed in range(3):
        proposal = _drawn(space, seed)
        assert _params(space, proposal) > TIGHT_LIMIT
        point = nearest(proposal)
        assert point.keys() == proposal.keys() and _params(space, point) <= TIGHT_LIMIT
        assert point["residual.block"] == proposal["residual.block"]  # its smallest network fits
        for name, value in point.items():
            if name == "residual.block":
                continue
            knob = knobs[name]
            assert knob.low <= value <= proposal[name] and (value - knob.low) % knob.step == 0, name
            if value < proposal[name]:
                assert _params(space, point | {name: value + knob.step}) > TIGHT_LIMIT, name
    space = load_space(_tight(tiny_space, tmp_path, limit=7_000))  # no bottleneck network fits
    bottleneck = _drawn(space, 0) | {"residual.block": "bottleneck"}
    point = WithinLimits(space, SHAPE).nearest(bottleneck)
    assert point["residual.block"] == "basic" and _params(space, point) <= 7_000
    assert WithinLimits(space.override(limits={"max_params": 5_000}), SHAPE).nearest(bottleneck) is None


def test_a_proposal_over_tight_limits_is_told_failed_and_the_nearest_point_within_them_is_proposed_instead(tmp_path, tiny_space):
    """Where random draws almost never meet the limits, 4 proposals give 4 architectures within them; every rejected
    proposal is a failed Optuna trial with no value. A nearest point that the study has already is not proposed again."""
    from cnnsearch.study.propose import Proposals
    from cnnsearch.study.reject import Target, WithinLimits

    space = load_space(_tight(tiny_space, tmp_path))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    target = Target(SHAPE, memory=None, precision="fp32", latency_device="cpu")
    proposals = Proposals(study, space, target, seed=0, max_rejections=100, within_limits=WithinLimits(space, SHAPE))
    configs = [proposals.suggest(f"trial-{n}") for n in range(4)]
    assert all(config["cost"]["params"] <= TIGHT_LIMIT for config in configs)
    assert len({json.dumps(config["arch"], sort_keys=True) for config in configs}) == 4
    trials = study.get_trials()
    rejected = [trial for trial in trials if "cnnsearch.rejected" in trial.user_attrs]
    assert len(rejected) == proposals.rejected >= 4 and len(trials) == len(rejected) + 4
    for trial in rejected:
        assert trial.state == optuna.trial.TrialState.FAIL and trial.values is None and "> max_params 12,000" in trial.user_attrs["cnnsearch.rejected"]
    for config in configs:
        stand_in = trials[config["optuna_trial"]]
        assert stand_in.state == optuna.trial.TrialState.RUNNING and trials[stand_in.user_attrs["cnnsearch.within_limits_of"]] in rejected

    # The limits admit one architecture: it is proposed once, and then every nearest point is that one.
    space = space.override(limits={"max_params": 5_266})
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    proposals = Proposals(study, space, target, seed=0, max_rejections=3, within_limits=WithinLimits(space, SHAPE))
    assert proposals.suggest("trial-0")["cost"]["params"] == 5_266
    assert proposals.suggest("trial-1") is None and proposals.exhausted


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_limits_that_random_draws_almost_never_meet_still_train_every_trial(sampler, ray_session, tmp_path, cli, tiny_space):
    """--trials 4 trains 4 architectures within the limits; the proposals over them are failed Optuna trials, never complete."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status, _, err = cli("run", _tight(tiny_space, tmp_path), "--tracking-uri", uri, "--storage", tmp_path / "runs", "--sampler", sampler,
                           "--trials", "4", "--seed", "0", "--scheduler", "none", "--epochs", "1")
    assert status == 0, err
    client = mlflow.MlflowClient(uri)
    experiment, (parent,) = study(client, "tight")
    runs = children(client, experiment.experiment_id, parent.info.run_id)
    assert len(runs) == 4 and len({tuple(sorted(run.data.params.items())) for run in runs}) == 4
    for run in runs:
        assert run.data.tags["cnnsearch.status"] == "completed" and run.data.metrics["params"] <= TIGHT_LIMIT
    trials = optuna_trials(tmp_path / "runs")
    complete = [trial for trial in trials if trial.state == optuna.trial.TrialState.COMPLETE]
    rejected = [trial for trial in trials if "cnnsearch.rejected" in trial.user_attrs]
    assert len(complete) == 4 and len(rejected) == int(parent.data.metrics["rejected_proposals"]) >= 1
    assert all(trial.state == optuna.trial.TrialState.FAIL and trial.values is None for trial in rejected)
    assert any("cnnsearch.within_limits_of" in trial.user_attrs for trial in complete)

@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_search_goes_on(ray_session, tmp_path, cli, tiny_space):
    space_file = tiny_space(tmp_path, "diverge", **TINY, recipe={"lr": 1.0e12, "warmup": 0.0})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status, _, err = cli("run", space_file, "--tracking-uri", uri, "--storage", tmp_path / "runs", "--trials", "2")
    assert status == 0, err
    client = mlflow.MlflowClient(uri)
    experiment, (parent,) = study(client, "diverge")
    runs = children(client, experiment.experiment_id, parent.info.run_id)
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags["cnnsearch.status"] == "diverged" and run.info.status == "FAILED"
        assert "training loss became" in run.data.tags["cnnsearch.reason"]
    assert "diverged: training loss became" in err and "its machine failed" not in err  # its own failure: not retried


@pytest.mark.slow
def test_a_trial_whose_own_code_raises_is_failed_with_its_cause_not_retried(ray_session, tmp_path, cli, tiny_space):
    """One training image is a batch of one, which batch norm of a 1x1 map cannot train on; the driver's
    check runs at batch 64 and passes. That trial fails with the error, the other completes. (A last
    batch of one among more images is left out of training instead: test_train.py.)"""
    space_file = tiny_space(tmp_path, "raises", **collapsing(subset=1, batch_size=64))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status, _, err = cli("run", space_file, "--tracking-uri", uri, "--storage", tmp_path / "runs", "--sampler", "grid", "--trials", "2")
    assert status == 0, err
    client = mlflow.MlflowClient(uri)
    experiment, (parent,) = study(client, "raises")
    runs = {run.data.params["stem.style"]: run for run in children(client, experiment.experiment_id, parent.info.run_id)}
    assert runs["cifar"].data.tags["cnnsearch.status"] == "completed"
    failed = runs["mobilenet"]
    cause = "ValueError: Expected more than 1 value per channel when training, got input size torch.Size([1, 8, 1, 1])"
    assert failed.data.tags["cnnsearch.status"] == "failed" and failed.info.status == "FAILED"
    assert failed.data.tags["cnnsearch.reason"] == cause
    assert f"failed: {cause}" in err and "its machine failed" not in err and "Traceback" not in err  # its own failure: not retried
    (standing,) = [line for line in err.splitlines() if "2/2 trials done" in line]
    assert "1 completed" in standing and "1 failed" in standing


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--tracking-uri", "http://127.0.0.1:9"], "tracking store http://127.0.0.1:9: cannot be reached"),
        (["--resume"], "no study to resume here"),
        (["--ray-address", "127.0.0.1:1"], "Ray at 127.0.0.1:1: cannot connect"),
        (["--ray-address", "ray://127.0.0.1:10001"], "a Ray Client address would run the study's driver on the head node"),
        (["--storage", "nosuch://bucket/x"], "--storage nosuch://bucket/x: cannot be opened (Unrecognized filesystem type"),
        (["--dataset", "imagefolder:/no/such/folder"], "imagefolder:/no/such/folder: no such folder"),
        (["--sampler", "grid", "--trials", "100"], "a grid of 8 points cannot fill 100 trials"),
        pytest.param(["--precision", "fp16"], "precision fp16 needs a CUDA device, and these trials run on CPUs",
                     marks=pytest.mark.slow),  # known only once Ray has started and counted the GPUs
    ],
)
def test_run_refuses_bad_input_before_any_trial(extra, expected, tmp_path, cli, tiny_space):
    space_file = tiny_space(tmp_path, **TINY)
    status, _, err = cli("run", space_file, "--storage", tmp_path / "runs", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", *extra)
    # One line: no hint to resume a study that never began.
    assert status == 2 and expected in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_storage_of_another_space_is_refused(tmp_path, cli, tiny_space):
    storage = tmp_path / "runs"
    storage.mkdir()
    (storage / "cnnsearch.json").write_text(f'{{"name": "other", "space_hash": "0123456789abcdef", "version": {STATE_VERSION}}}')
    space_file = tiny_space(tmp_path, **TINY)
    status, _, err = cli("run", space_file, "--storage", storage, "--resume")
    assert status == 2 and "holds study 'other' of another space" in err


def finished(client, experiment_name):
    experiment, (parent,) = study(client, experiment_name)
    return [r for r in children(client, experiment.experiment_id, parent.info.run_id) if "cnnsearch.status" in r.data.tags]


@pytest.mark.slow
def test_sigkill_then_resume_then_extend(ray_session, tmp_path, cli, tiny_space):
    """Kill the driver mid-search: --resume ends with exactly the requested trials, each once in MLflow."""
    space_file = tiny_space(tmp_path, "killed", **TINY, dataset={"subset": 1024})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", str(space_file), "--tracking-uri", uri, "--trials", "6", "--max-concurrent", "1", "--scheduler", "none"]
    driver = subprocess.Popen([sys.executable, "-m", "cnnsearch", *args], cwd=tmp_path, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = mlflow.MlflowClient(uri)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.5)
            if client.get_experiment_by_name("killed") and study(client, "killed")[1] and len(finished(client, "killed")) >= 2:
                break
        assert driver.poll() is None, "the search ended before it could be killed"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        time.sleep(1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # the Ray processes the driver started
    before = {r.info.run_id for r in finished(client, "killed")}
    assert 2 <= len(before) < 6

    status, _, err = cli("run", space_file, "--tracking-uri", uri, "--storage", tmp_path / "cnnsearch_runs" / "killed", "--trials", "6", "--resume")
    assert status == 0, err
    runs = finished(client, "killed")
    assert len(runs) == 6 and before <= {r.info.run_id for r in runs}
    experiment, (parent,) = study(client, "killed")
    assert len(children(client, experiment.experiment_id, parent.info.run_id)) == 6  # the interrupted run is gone
    assert len({r.data.tags["cnnsearch.trial_id"] for r in runs}) == 6
    for run in runs:  # completed trials were not run again: one value per epoch
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc")) == [1, 2], (run.data.tags.get("cnnsearch.status"), run.data.tags.get("cnnsearch.reason"), run.data.tags.get("mlflow.runName"))

    status, _, err = cli("run", space_file, "--tracking-uri", uri, "--storage", tmp_path / "cnnsearch_runs" / "killed", "--trials", "8")
    assert status == 0, err
    assert len(finished(client, "killed")) == 8
    journal = optuna.load_study(study_name="killed", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "cnnsearch_runs" / "killed" / "optuna.journal"))))
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in journal.trials) == 8


def non_dominated(points: dict[str, tuple[float, float]]) -> set[str]:
    """Run ids of the (val_acc max, macs min) points that no other point dominates, by the definition."""
    def dominates(a, b):
        return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])
    return {run for run, point in points.items() if not any(dominates(other, point) for other in points.values())}


@pytest.mark.slow
def test_a_two_objective_study_prints_exports_and_records_its_pareto_front(ray_session, tmp_path, cli, tiny_space):
    """val_acc max and macs min through Ray, Optuna (NSGA-II, two directions) and MLflow; the front, query and export agree."""
    space_file = tiny_space(tmp_path, "pareto", **TINY, dataset={"subset": 512},
                            objectives=[{"metric": "val_acc", "goal": "max"}, {"metric": "macs", "goal": "min"}])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "runs"
    status, out, err = cli("run", space_file, "--tracking-uri", uri, "--storage", storage, "--trials", "5", "--seed", "1")
    assert status == 0, err

    client = mlflow.MlflowClient(uri)
    experiment, (parent,) = study(client, "pareto")
    assert parent.data.params["sampler"] == "nsga2" and parent.data.params["scheduler"] == "none"
    assert json.loads(parent.data.tags["cnnsearch.objectives"]) == [{"metric": "val_acc", "goal": "max"}, {"metric": "macs", "goal": "min"}]
    runs = children(client, experiment.experiment_id, parent.info.run_id)
    assert len(runs) == 5 and all(run.data.tags["cnnsearch.status"] == "completed" for run in runs)
    for run in runs:
        assert run.data.metrics["latency_ms"] > 0 and run.data.tags["cnnsearch.latency_machine"].startswith("cpu: ")
    points = {run.info.run_id: (run.data.metrics["val_acc"], run.data.metrics["macs"]) for run in runs}
    expected = non_dominated(points)
    assert len(expected) >= 2, points  # a front, not a single best trial

    # Optuna: two directions, and each trial told its accuracy and its MACs exactly as MLflow holds them.
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage / "optuna.journal")))
    optuna_study = optuna.load_study(study_name="pareto", storage=journal)
    assert optuna_study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert sorted(tuple(t.values) for t in optuna_study.trials) == sorted(points.values())

    # The printed front: exactly the non-dominated completed trials.
    printed = out.split("Pareto front of the 5 completed trials (val_acc max, macs min)")[1].split("Pictures:")[0]
    assert {line.split()[-1] for line in printed.splitlines()[2:]} == expected
    front_csv = Path(client.download_artifacts(parent.info.run_id, "pareto.csv", str(tmp_path)))
    assert set(front_csv.read_text().splitlines()[0].split(",")) == {"trial", "run_id", "val_acc", "macs"}
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "plots")} >= {"plots/pareto.png"}

    status, stdout, err = cli("query", "pareto", "--pareto", "--format", "json", "--tracking-uri", uri)
    assert status == 0, err
    front = json.loads(stdout)["pareto"]
    assert {point["run_id"] for point in front} == expected
    assert all((point["val_acc"], point["macs"]) == points[point["run_id"]] for point in front)

    # export --where: the most accurate trial within a MACs bound that the most accurate trial is over.
    best = max(points, key=lambda run: points[run][0])
    bound = max(macs for _, macs in points.values() if macs < points[best][1])
    within = max((run for run, (_, macs) in points.items() if macs <= bound), key=lambda run: points[run][0])
    assert within != best
    common = ["--retrain-epochs", "0", "--formats", "weights", "--force", "--tracking-uri", uri]
    status, _, err = cli("export", "pareto", "--where", f"macs<={math.ceil(bound / 1e3)}K", "--out", tmp_path / "within", *common)
    assert status == 0, err
    assert json.loads((tmp_path / "within" / "meta.json").read_text())["trial_run_id"] == within
    status, _, err = cli("export", "pareto", "--pareto", "--out", tmp_path / "front", *common)
    assert status == 0, err
    exported = {json.loads(meta.read_text())["trial_run_id"] for meta in (tmp_path / "front").glob("*/meta.json")}
    assert exported == expected
    for args, message in [(["--where", "accuracy>=0.5"], "'accuracy' is no metric of this study's trials"),
                          (["--where", "macs<=1K"], "no completed trial meets it (macs of the completed trials: from"),
                          (["--where", "macs<=lots"], "expected METRIC<=VALUE")]:
        status, _, err = cli("export", "pareto", *args, "--out", tmp_path / "none", *common)
        # export says what it is doing on stderr; a refusal is its one last line
        assert status == 2 and message in err.splitlines()[-1] and "Traceback" not in err, err


def test_several_objectives_refuse_asha(tmp_path, cli, tiny_space):
    space_file = tiny_space(tmp_path, "asha", **TINY, objectives=[{"metric": "val_acc", "goal": "max"}, {"metric": "latency_ms", "goal": "min"}])
    status, _, err = cli("run", space_file, "--scheduler", "asha", "--storage", tmp_path / "runs", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    (line,) = [line for line in err.splitlines() if line.startswith("cnnsearch: error:")]
    assert status == 2 and "--scheduler asha stops trials by accuracy alone" in line and "Traceback" not in err


def test_fp16_trials_on_gpus_are_fitted_by_a_driver_without_one(tmp_path, tiny_space):
    """The driver checks proposals on its CPU: fp16, which only a GPU trains, must not stop it there."""
    import random
    from types import SimpleNamespace

    from cnnsearch.data import load_dataset
    from cnnsearch.space.knobs import RandomTrial
    from cnnsearch.study.reject import fitted, target

    space = load_space(tiny_space(tmp_path)).override(recipe={"precision": "fp16"})
    plan = SimpleNamespace(space=space, gpus=0.25, memory=2**34, data=load_dataset("synthetic"), settings={"latency_device": "cpu"}, table=None)
    fit_to = target(plan)
    assert fit_to.precision == "fp16" and fit_to.memory is None
    arch, recipe, cost = fitted(space, RandomTrial(random.Random(0)), fit_to)
    assert recipe.precision == "fp16" and cost["params"] > 0


def test_a_reservation_never_exceeds_the_largest_node_and_a_resumed_trial_that_cannot_fit_is_refused():
    from types import SimpleNamespace

    from cnnsearch.config import ConfigError
    from cnnsearch.names import Metrics
    from cnnsearch.study.reject import MEMORY_GRAIN, check_resumed, reservation

    largest = 8 * MEMORY_GRAIN + 2**20  # 2 GiB and 1 MiB: an estimate just under it rounds up past it
    config = {"cost": {Metrics.MEMORY_ESTIMATE: largest / 2**20 - 0.5}}
    assert reservation(config, largest) == largest
    assert reservation({"cost": {Metrics.MEMORY_ESTIMATE: 300}}, largest) == 2 * MEMORY_GRAIN  # rounded to the grain
    check_resumed([config], SimpleNamespace(memory=largest))
    with pytest.raises(ConfigError, match="an interrupted trial needs about 2.0 GiB of memory, more than the 1.0 GiB"):
        check_resumed([config], SimpleNamespace(memory=4 * MEMORY_GRAIN))


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["evolution", "gp"])
def test_evolution_and_gp_run_a_study(sampler, tmp_path, cli):
    """On NAS-Bench-201's table: one trial after another in the driver, so Optuna's order is the order they completed."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space_file = Path(__file__).resolve().parents[1] / "spaces" / "nasbench201.yaml"
    status, _, err = cli("run", space_file, "--tabular", "nasbench201", "--tracking-uri", uri, "--storage", tmp_path / "runs",
                         "--sampler", sampler, "--trials", "12", "--seed", "0")
    assert status == 0, err
    client = mlflow.MlflowClient(uri)
    experiment, (parent,) = study(client, "nasbench201")
    assert parent.data.params["sampler"] == sampler
    assert len(children(client, experiment.experiment_id, parent.info.run_id)) == 12
    trials = optuna_trials(tmp_path / "runs")
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 12
    if sampler == "evolution":  # a population of 3 (12 trials // 4): each later trial is a mutation of one of the last three
        for number in range(3, 12):
            assert any(sum(trials[number].params[k] != trials[earlier].params[k] for k in trials[number].params) == 1
                       for earlier in range(number - 3, number))
