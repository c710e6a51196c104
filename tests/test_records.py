"""A study's record is the truth: what was trained, how each trial ended, what the sampler learned."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from cnnsearch import load_arch
from cnnsearch.model import build_model
from cnnsearch.costs import profile
from cnnsearch.study import concurrency
from cnnsearch.names import Status
from cnnsearch.tracking import Recorder

def write_space(tiny_space, folder: Path, name: str, budget: dict | None = None, **changes) -> Path:
    """conftest.py's tiny space at batch 32, one epoch unless ``budget`` says otherwise."""
    return tiny_space(folder, name, budget=budget or {"epochs": 1}, recipe={"batch_size": 32}, **changes)


def write_slow_space(tiny_space, folder: Path, name: str, budget: dict) -> Path:
    """Epochs of a second or more: long enough to interrupt a trial between two of them."""
    return write_space(tiny_space, folder, name, budget, stem={"channels": [32, 48]}, residual={"width": [32, 48]},
                       dataset={"subset": 1600})


def wait_for_first_epoch(uri: str, name: str, running: Callable[[], bool] = lambda: True, timeout: float = 180) -> bool:
    """Whether a trial of study ``name`` recorded an epoch while ``running`` held, within ``timeout`` seconds."""
    client = mlflow.MlflowClient(uri)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running():
        time.sleep(0.2)
        experiment = client.get_experiment_by_name(name)
        runs = experiment and client.search_runs([experiment.experiment_id], filter_string="tags.`cnnsearch.trial_id` != ''")
        if runs and client.get_metric_history(runs[0].info.run_id, "val_acc"):
            return True
    return False


def start_driver(tiny_space, folder: Path, name: str, epochs: int, trials: int) -> tuple[str, list[str], subprocess.Popen]:
    """`cnnsearch run` of a slow space, one trial at a time, in a session of its own as a terminal starts it."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    args = ["run", str(write_slow_space(tiny_space, folder, name, {"epochs": epochs})), "--tracking-uri", uri, "--storage", str(folder / "runs"),
            "--trials", str(trials), "--scheduler", "none", "--max-concurrent", "1"]
    driver = subprocess.Popen([sys.executable, "-m", "cnnsearch", *args], cwd=folder, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return uri, args, driver


def trial_runs(uri: str, name: str) -> list:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.`cnnsearch.study` != ''")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")


def optuna_trials(storage: Path) -> list[optuna.trial.FrozenTrial]:
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage / "optuna.journal")))
    (summary,) = optuna.get_all_study_summaries(journal)
    return optuna.load_study(study_name=summary.study_name, storage=journal).trials


@pytest.mark.slow
def test_recorded_architecture_is_the_one_fitted_to_the_data(ray_session, tmp_path, cli, tiny_space):
    """3 classes of 40x40 images: arch.yaml, params and MACs are those of the 3-class, 40-pixel network."""
    folder = tmp_path / "images"
    generator = torch.Generator().manual_seed(0)
    for index, name in enumerate(("red", "green", "blue")):
        (folder / name).mkdir(parents=True)
        for i in range(24):
            image = torch.randint(0, 60, (40, 40, 3), dtype=torch.uint8, generator=generator)
            image[..., index] += 180
            Image.fromarray(image.numpy()).save(folder / name / f"{i}.png")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status, _, err = cli("run", write_space(tiny_space, tmp_path, "fitted"), "--dataset", f"imagefolder:{folder}", "--subset", "60",
                         "--tracking-uri", uri, "--storage", tmp_path / "runs", "--trials", "2", "--scheduler", "none",
                         "--cache-dir", tmp_path / "cache")
    assert status == 0, err
    runs = trial_runs(uri, "fitted")
    assert len(runs) == 2
    client = mlflow.MlflowClient(uri)
    for run in runs:
        arch = load_arch(client.download_artifacts(run.info.run_id, "arch.yaml", str(tmp_path / run.info.run_id)))
        assert (arch.num_classes, arch.input_size) == (3, 40)
        cost = profile(arch)
        assert run.data.metrics["params"] == cost.params and run.data.metrics["macs"] == cost.macs
        weights = client.download_artifacts(run.info.run_id, "checkpoint/weights.pt", str(tmp_path / run.info.run_id))
        build_model(arch).load_state_dict(torch.load(weights, weights_only=True))  # the trained network is this one


@pytest.mark.slow
def test_an_image_budget_completes_trials(ray_session, tmp_path, cli, tiny_space):
    """max_images below one epoch: a trial that used its images completed, and query and export see it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = write_space(tiny_space, tmp_path, "images_budget", {"epochs": 3, "max_images": 96})
    status, _, err = cli("run", space, "--tracking-uri", uri, "--storage", tmp_path / "runs", "--trials", "2")
    assert status == 0, err
    runs = trial_runs(uri, "images_budget")
    assert [run.data.tags["cnnsearch.status"] for run in runs] == ["completed", "completed"]
    status, out, err = cli("query", "images_budget", "--tracking-uri", uri, "--rows", "residual.width")
    assert status == 0 and "no completed trials" not in err


@pytest.mark.slow
def test_asha_under_a_seconds_budget_stops_early_and_tells_optuna_pruned(ray_session, tmp_path, cli, monkeypatch, tiny_space):
    """A seconds budget that never runs out: ASHA's stops are `stopped early` in MLflow and PRUNED in Optuna."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = write_space(tiny_space, tmp_path, "seconds_budget", {"epochs": 3, "max_seconds": 600})
    # ASHA as asked: by default 180 validation images (±7 points) would turn it off.
    status, _, err = cli("run", space, "--tracking-uri", uri, "--storage", tmp_path / "runs", "--trials", "6", "--sampler", "random",
                         "--seed", "1", "--max-concurrent", "2", "--lr", "0.0001", "--scheduler", "asha")  # barely learns: accuracies differ
    assert status == 0, err
    client = mlflow.MlflowClient(uri)
    statuses = {}
    for run in trial_runs(uri, "seconds_budget"):
        epochs = len(client.get_metric_history(run.info.run_id, "val_acc"))
        statuses[run.data.tags["cnnsearch.status"]] = statuses.get(run.data.tags["cnnsearch.status"], 0) + 1
        assert run.data.tags["cnnsearch.status"] == ("completed" if epochs == 3 else "stopped early")
    assert statuses.get("stopped early", 0) >= 1 and statuses.get("completed", 0) >= 1
    trials = optuna_trials(tmp_path / "runs")
    states = {state: [t for t in trials if t.state == state] for state in optuna.trial.TrialState}
    assert len(states[optuna.trial.TrialState.COMPLETE]) == statuses["completed"]
    assert len(states[optuna.trial.TrialState.PRUNED]) == statuses["stopped early"]
    for trial in states[optuna.trial.TrialState.PRUNED]:
        assert 1 in trial.intermediate_values and 3 not in trial.intermediate_values  # Optuna keeps the last as its value
    for trial in states[optuna.trial.TrialState.COMPLETE]:
        assert sorted(trial.intermediate_values) == [1, 2, 3] and trial.value == trial.intermediate_values[3]

    # The MLflow UI's runs list shows a run's name: it says how the trial ended when it did not complete.
    for run in trial_runs(uri, "seconds_budget"):
        name, status = run.info.run_name, run.data.tags["cnnsearch.status"]
        trial = f"trial-{run.data.tags['cnnsearch.trial_id']}"
        assert name == (trial if status == "completed" else f"{trial} ({status})")

    # Accuracy vs cost: the Pareto front a staircase, stopped-early trials drawn; curves named as tables and MLflow name trials.
    from cnnsearch import plots
    from cnnsearch.tracking import find_study

    figures = {}
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.setdefault(path.name, figure) and path)
    plots.plot_study(find_study("seconds_budget", uri), tmp_path / "plots")
    axes = figures["val_acc_vs_macs.png"].axes[0]
    assert any(line.get_drawstyle() == "steps-post" for line in axes.get_lines())
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert any(label.startswith("stopped early") for label in labels), labels
    completed = {f"trial-{run.data.tags['cnnsearch.trial_id']}" for run in trial_runs(uri, "seconds_budget")
                 if run.data.tags["cnnsearch.status"] == "completed"}
    curves = {text.get_text().split(" ")[0] for text in figures["learning_curves.png"].axes[0].get_legend().get_texts()}
    assert curves == completed



@pytest.mark.slow
def test_a_study_is_its_settings(ray_session, tmp_path, cli, tiny_space):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--tracking-uri", uri, "--storage", tmp_path / "runs", "--scheduler", "none"]
    space = write_space(tiny_space, tmp_path, "settled")
    status, _, err = cli("run", space, *common, "--trials", "1")
    assert status == 0, err
    for flag, value, old in [("--epochs", "2", "1"), ("--subset", "128", "256"), ("--dataset", "cifar10", "synthetic"),
                             ("--val-fraction", "0.5", "0.1"), ("--test-fraction", "0.2", "0.1")]:
        status, _, err = cli("run", space, *common, "--trials", "2", flag, value)
        assert status == 2 and f"was run with {flag} {old}, not {value}" in err and "--name" in err, err
    status, _, err = cli("run", space, *common, "--trials", "2", "--epochs", "1")  # the same setting, said again
    assert status == 0, err
    assert len(trial_runs(uri, "settled")) == 2


@pytest.mark.parametrize(
    "resources, cpus, gpus, expected",
    [({"CPU": 16, "GPU": 1}, 1, 0.5, 2), ({"CPU": 16, "GPU": 1}, 1, 0.0, 16), ({"CPU": 2, "GPU": 4}, 1, 0.5, 2),
     ({"CPU": 16, "GPU": 1}, 1, 0.1, 10), ({"CPU": 1}, 2, 0.0, 1)],
)
def test_concurrency_follows_the_scarcer_resource(resources, cpus, gpus, expected):
    assert concurrency(resources, cpus, gpus) == expected


@pytest.mark.slow
def test_diverged_ablation_cells_are_results_on_resume(ray_session, tmp_path, cli, tiny_space):
    """A diverged cell is the cell's answer: --resume keeps it rather than drawing it again until it trains."""
    write_space(tiny_space, tmp_path, "cells")
    experiment = tmp_path / "diverging.yaml"
    experiment.write_text("space: cells.yaml\nbase: {stem.channels: 8, residual.num_blocks: 1}\n"
                          "factors: {residual.width: [8, 16]}\nreplicates: 1\nrecipe: {lr: 1.0e12, warmup: 0.0}\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--tracking-uri", uri, "--storage", tmp_path / "runs"]
    status, _, err = cli("ablate", experiment, *common)
    assert status == 0, err
    first = {run.info.run_id for run in trial_runs(uri, "diverging")}
    assert len(first) == 2
    status, _, err = cli("ablate", experiment, *common, "--resume")
    assert status == 0, err
    runs = trial_runs(uri, "diverging")
    assert {run.info.run_id for run in runs} == first
    assert {run.data.tags["cnnsearch.status"] for run in runs} == {"diverged"}


def test_failed_trials_are_discarded_to_run_again_and_diverged_ones_stay(tmp_path):
    """What an ablation's --resume reruns: trials that failed (the machine's fault, or an error), not diverged ones."""
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    recorder = Recorder.open(client, experiment="cells", study="cells", space_hash="0")
    for trial_id, status in (("a", Status.FAILED), ("b", Status.DIVERGED), ("c", Status.COMPLETED)):
        recorder.finish_trial(recorder.start_trial(trial_id, {"residual.width": 8}, space_hash="0"), status, "why")
    recorder.discard_failed()
    assert sorted(row["trial_id"] for row in recorder.trials()) == ["b", "c"]


def test_each_study_saves_the_ui_s_view_of_its_trials_and_the_experiment_s_description_links_each(tmp_path):
    """What the MLflow UI reads of a study: a saved view (its trials only, best first, its objectives, status and
    searched knobs as the first columns, its first objective's chart first), linked from the description; knobs are
    params, not metrics (charts)."""
    import base64
    import json
    import zlib

    from cnnsearch.space import Objective
    from cnnsearch.tracking import study_links

    def state(view: dict) -> dict:  # compressed, as the UI saves a view
        return json.loads(zlib.decompress(base64.b64decode(view["state"].removeprefix("deflate;"))))

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    objectives = (Objective(metric="val_acc", goal="max"), Objective(metric="params", goal="min"))
    wide = Recorder.open(client, experiment="views", study="wide", space_hash="0", objectives=objectives, knobs=["residual.width"])
    deep = Recorder.open(client, experiment="views", study="deep", space_hash="0", knobs=["residual.num_blocks"])
    trial = wide.start_trial("a", {"residual.width": 8, "stem.channels": 16}, space_hash="0")
    assert client.get_run(trial).data.params == {"residual.width": "8", "stem.channels": "16"} and not client.get_run(trial).data.metrics

    tags = client.get_experiment(wide.experiment_id).tags
    views = {view["name"]: state(view) for key, value in tags.items()
             if key.startswith("mlflow.sharedViewState.") for view in [json.loads(value)]}
    state = views["wide"]
    assert state["searchFilter"] == f"tags.`mlflow.parentRunId` = '{wide.parent_run_id}'"
    assert state["orderByKey"] == "metrics.`val_acc`" and state["orderByAsc"] is False
    assert state["selectedColumns"] == state["columnOrder"] == [
        "metrics.`val_acc`", "metrics.`params`", "tags.`cnnsearch.status`", "params.`residual.width`"]
    assert state["compareRunCharts"][0]["metricKey"] == "val_acc" and state["compareRunCharts"][1]["selectedParams"] == ["residual.width"]
    assert views["deep"]["searchFilter"].endswith(f"'{deep.parent_run_id}'")
    links = study_links(client)
    assert [name for name, _ in links] == ["deep", "wide"]
    assert all(f"[{name}]({path})" in tags["mlflow.note.content"] for name, path in links)
    assert all(path.startswith(f"#/experiments/{wide.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey=")
               for _, path in links)

    # A description the user wrote stays theirs; the study's view is saved all the same.
    client.set_experiment_tag(wide.experiment_id, "mlflow.note.content", "my notes")
    Recorder.open(client, experiment="views", study="third", space_hash="0")
    assert client.get_experiment(wide.experiment_id).tags["mlflow.note.content"] == "my notes"
    assert [name for name, _ in study_links(client)] == ["deep", "third", "wide"]


@pytest.mark.slow
def test_a_trial_killed_mid_training_continues_from_its_checkpoint(ray_session, tmp_path, tiny_space):
    """SIGKILL the driver during a trial's second epoch; --resume goes on in the same run from epoch 2."""
    space = write_slow_space(tiny_space, tmp_path, "killed_mid_trial", {"epochs": 4})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [sys.executable, "-m", "cnnsearch", "run", str(space), "--tracking-uri", uri, "--storage", str(tmp_path / "runs"),
            "--trials", "1", "--scheduler", "none"]
    driver = subprocess.Popen(args, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = mlflow.MlflowClient(uri)
    try:
        wait_for_first_epoch(uri, "killed_mid_trial", running=lambda: driver.poll() is None)
        assert driver.poll() is None, "the study ended before it could be killed"
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and every Ray process it started
        driver.wait()
        killed_at = time.time() * 1000
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    (run,) = trial_runs(uri, "killed_mid_trial")
    before = client.get_metric_history(run.info.run_id, "val_acc")
    # The kill comes within a poll (0.2 s) of epoch 1's record; an epoch of this space takes seconds.
    assert "cnnsearch.status" not in run.data.tags and [m.step for m in before] == [1]

    from cnnsearch.cli import main

    with contextlib.suppress(SystemExit):
        main(["run", str(space), "--tracking-uri", uri, "--storage", str(tmp_path / "runs"), "--resume"])
    (resumed,) = trial_runs(uri, "killed_mid_trial")
    assert resumed.info.run_id == run.info.run_id and resumed.data.tags["cnnsearch.status"] == "completed"
    history = sorted(client.get_metric_history(run.info.run_id, "val_acc"), key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2, 3, 4]  # no epoch trained twice
    assert history[0].timestamp == before[0].timestamp and all(m.timestamp > killed_at for m in history[1:])
    trials = optuna_trials(tmp_path / "runs")
    (complete,) = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(complete.intermediate_values) == [1, 2, 3, 4] and complete.params == trials[0].params


@pytest.mark.slow
def test_ctrl_c_stops_the_study_resumably_with_status_130(ray_session, tmp_path, tiny_space):
    """Ctrl-C to the whole process group, as a terminal sends it: exit 130, a resume hint, nothing marked finished."""
    uri, args, driver = start_driver(tiny_space, tmp_path, "ctrl_c", epochs=3, trials=3)
    client = mlflow.MlflowClient(uri)
    try:
        wait_for_first_epoch(uri, "ctrl_c", running=lambda: driver.poll() is None)
        assert driver.poll() is None, "the study ended before Ctrl-C"
        os.killpg(driver.pid, signal.SIGINT)
        out, err = driver.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, err
    assert "Traceback" not in err and "interrupted with" in err
    assert f"Resume it: cnnsearch {' '.join(args)} --resume" in err
    assert '"finished": false' in (tmp_path / "runs" / "cnnsearch.json").read_text()
    runs = trial_runs(uri, "ctrl_c")
    unfinished = [run for run in runs if "cnnsearch.status" not in run.data.tags]
    assert len(runs) < 3 and len(unfinished) == 1 and unfinished[0].info.status == "KILLED"

    from cnnsearch.cli import main

    with contextlib.suppress(SystemExit):
        main([*args, "--resume"])
    runs = trial_runs(uri, "ctrl_c")
    assert len(runs) == 3 and {run.data.tags["cnnsearch.status"] for run in runs} == {"completed"}
    for run in runs:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc")) == [1, 2, 3]
        assert "cnnsearch.reason" not in run.data.tags
    assert '"finished": true' in (tmp_path / "runs" / "cnnsearch.json").read_text()


@pytest.mark.slow
def test_a_lost_worker_is_retried_from_its_checkpoint(ray_session, tmp_path, cli, tiny_space):
    """SIGKILL the trial's worker, as the out-of-memory killer would: the trial goes on, it is not failed."""
    import threading

    space = write_slow_space(tiny_space, tmp_path, "lost_worker", {"epochs": 3})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed = []

    def kill_the_worker_after_epoch_1() -> None:
        if wait_for_first_epoch(uri, "lost_worker", timeout=120):
            # The trial's worker among this test's own Ray processes: other Rays on the machine are not ours.
            workers = [pid for pid, name in _descendants(os.getpid()) if name.startswith("ray::ImplicitFu")]
            if len(workers) == 1:
                os.kill(workers[0], signal.SIGKILL)
            killed.append(workers)

    killer = threading.Thread(target=kill_the_worker_after_epoch_1)
    killer.start()
    status, _, err = cli("run", space, "--tracking-uri", uri, "--storage", tmp_path / "runs", "--trials", "1", "--scheduler", "none")
    killer.join()
    assert status == 0, err
    assert len(killed) == 1 and len(killed[0]) == 1, killed
    assert "its machine failed" in err and "Traceback" not in err
    (run,) = trial_runs(uri, "lost_worker")
    assert run.data.tags["cnnsearch.status"] == "completed"
    history = mlflow.MlflowClient(uri).get_metric_history(run.info.run_id, "val_acc")
    assert sorted(m.step for m in history) == [1, 2, 3]


@pytest.mark.slow
def test_an_extended_asha_study_judges_new_trials_against_the_earlier_ones(ray_session, tmp_path, cli, tiny_space):
    """ASHA's rungs survive the session: a new trial is stopped at epoch 1 exactly when it is below the
    cutoff of every epoch-1 accuracy before it, the first session's included."""
    space = write_space(tiny_space, tmp_path, "extended_asha", {"epochs": 3})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--tracking-uri", uri, "--storage", tmp_path / "runs", "--sampler", "random", "--seed", "3", "--scheduler", "asha",
              "--max-concurrent", "1", "--lr", "0.0001"]  # barely learns: accuracies differ
    status, _, err = cli("run", space, *common, "--trials", "3")
    assert status == 0, err
    first = {run.info.run_id for run in trial_runs(uri, "extended_asha")}
    status, _, err = cli("run", space, *common, "--trials", "6")
    assert status == 0, err
    client = mlflow.MlflowClient(uri)
    runs = sorted(trial_runs(uri, "extended_asha"), key=lambda run: run.info.start_time)
    assert len(runs) == 6
    seen, this_session, told_apart = [], [], False
    for run in runs:
        accuracy = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_acc")}[1]
        if run.info.run_id not in first:
            stopped = accuracy < np.nanpercentile(seen, 100 * (1 - 1 / 3))
            assert run.data.tags["cnnsearch.status"] == ("stopped early" if stopped else "completed"), (seen, accuracy)
            # Rungs of this session alone would have decided otherwise.
            told_apart |= stopped != bool(this_session and accuracy < np.nanpercentile(this_session, 100 * (1 - 1 / 3)))
            this_session.append(accuracy)
        seen.append(accuracy)
    assert told_apart, seen


@pytest.mark.slow
def test_run_starts_its_own_ray_though_a_stale_cluster_is_on_record(tmp_path, tiny_space):
    """/tmp/ray/ray_current_cluster names a dead cluster: `run` starts its own Ray, it does not hang trying to join."""
    marker = Path("/tmp/ray/ray_current_cluster")
    saved = marker.read_text() if marker.exists() else None
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("127.0.0.1:1\n")  # nothing answers there
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "cnnsearch", "run", str(write_space(tiny_space, tmp_path, "own_ray")), "--tracking-uri",
             f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage", str(tmp_path / "runs"), "--trials", "1", "--scheduler", "none"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )
    finally:
        if saved is None:
            marker.unlink()
        else:
            marker.write_text(saved)
    assert result.returncode == 0, result.stderr
    assert "1/1 trials done (1 completed)" in result.stderr


def _descendants(pid: int) -> list[tuple[int, str]]:
    lines = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(pid)], capture_output=True, text=True).stdout.splitlines()
    found = [(int(child), name) for child, name in (line.split(None, 1) for line in lines if line.strip())]
    return found + [grandchild for child, _ in found for grandchild in _descendants(child)]


@pytest.mark.slow
def test_a_lost_ray_ends_the_study_with_status_1_and_no_traceback_and_resume_finishes_it(ray_session, tmp_path, tiny_space):
    """The raylet killed, as the out-of-memory killer would: Ray ends the driver; it said how to resume, and resuming works."""
    uri, args, driver = start_driver(tiny_space, tmp_path, "ray_lost", epochs=2, trials=2)
    try:
        wait_for_first_epoch(uri, "ray_lost", running=lambda: driver.poll() is None)
        raylets = [pid for pid, name in _descendants(driver.pid) if name == "raylet"]
        assert len(raylets) == 1 and driver.poll() is None
        os.kill(raylets[0], signal.SIGKILL)
        out, err = driver.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 1, err
    assert "Traceback" not in err and f"this goes on with it: cnnsearch {' '.join(args)} --resume" in err
    assert '"finished": false' in (tmp_path / "runs" / "cnnsearch.json").read_text()

    from cnnsearch.cli import main

    with contextlib.suppress(SystemExit):
        main([*args, "--resume"])
    runs = trial_runs(uri, "ray_lost")
    assert len(runs) == 2 and {run.data.tags["cnnsearch.status"] for run in runs} == {"completed"}


def test_study_names_with_quotes_are_found_and_a_missing_one_is_one_line(tmp_path, cli, capsys):
    from cnnsearch.tracking import find_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    names = ["it's", 'say "hi"', """both ' and \""""]
    for name in names:
        Recorder.open(client, experiment="quotes", study=name, space_hash="0")
    for name in names:
        assert find_study(name, uri).parent.data.tags["cnnsearch.study"] == name
    capsys.readouterr()  # MLflow's own lines of creating the store
    status, _, err = cli("query", "isn't", "--tracking-uri", uri)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "no study named \"isn't\"" in err, err


def test_provenance_is_cnnsearch_s_own_not_the_working_directory_s(tmp_path, monkeypatch):
    from importlib import metadata

    import cnnsearch
    from cnnsearch.tracking import environment

    other = tmp_path / "users_repo"
    other.mkdir()
    git = ["git", "-c", "user.name=u", "-c", "user.email=u@example.com"]
    subprocess.run(["git", "init", "-q", other], check=True)
    subprocess.run([*git, "-C", other, "commit", "-q", "--allow-empty", "-m", "theirs"], check=True)
    theirs = subprocess.run(["git", "-C", other, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    monkeypatch.chdir(other)
    recorded = environment()
    package = Path(cnnsearch.__file__).parent
    ours = subprocess.run(["git", "-C", package, "rev-parse", "HEAD"], capture_output=True, text=True)
    assert recorded["git_commit"] != theirs
    if ours.returncode == 0:  # run from a checkout, as CI does
        assert recorded["git_commit"].removesuffix("+dirty") == ours.stdout.strip()
    assert recorded["version.cnnsearch"] == metadata.version("cnnsearch") == cnnsearch.__version__
