"""Guards for short budgets: the validation sample, ASHA's rungs, the trials importances need,
ANOVA on searched trials, and the time left."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import mlflow
import pytest
import torch

from cnnsearch import load_space
from cnnsearch.data import ImageData, split_dataset
from cnnsearch.names import Metrics, Report, Status, Tags
from cnnsearch.study import RunOptions
from cnnsearch.study.progress import Progress, announce
from cnnsearch.study.propose import MIN_IMPORTANCE_TRIALS
from cnnsearch.study.settings import resolve, save_state
from cnnsearch.tracking import Recorder


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _seconds(clock: str) -> int:
    hours, minutes, seconds = map(int, clock.split(":"))
    return 3600 * hours + 60 * minutes + seconds


def test_the_time_left_counts_the_trials_not_yet_started_and_never_grows_on_a_steady_run(tmp_path, tiny_space, capsys):
    """Six trials of two 60-second epochs, two at a time: 6 minutes in all. After each event, and half-way
    through each epoch, the time said to be left is what is left, and it never grows."""
    space = load_space(tiny_space(tmp_path))  # 2 epochs a trial
    clock, epoch_s, trials, together = Clock(), 60.0, 6, 2
    progress = Progress(space, trials, [], clock=clock)
    end = trials // together * space.budget.epochs * epoch_s
    said = []  # (when, seconds said to be left)

    def read() -> None:
        for line in capsys.readouterr().err.splitlines():
            found = re.search(r"(?:ETA|at most) (\d+:\d\d:\d\d)", line)
            if found:
                said.append((clock.now, _seconds(found.group(1))))

    for batch in range(trials // together):
        names = [f"abcde_{batch * together + index:05d}" for index in range(together)]
        for name in names:
            progress.started_trial(name)
        for epoch in range(1, space.budget.epochs + 1):
            clock.now += epoch_s / 2
            progress.heartbeat()
            read()
            clock.now += epoch_s / 2
            for name in names:
                progress.epoch(name, {Report.EPOCH: epoch, Metrics.VAL_ACC: 0.5, Report.TRAIN_IMAGES_PER_S: 100.0})
        for name in names:
            progress.finished(name, Status.COMPLETED, "", 0.5, {})
        read()
    # Every heartbeat says it but the first, before any epoch set a pace; every standing but the last, with nothing left.
    heartbeats = trials // together * space.budget.epochs
    assert len(said) == heartbeats - 1 + trials - 1, said
    for (_, left), (_, then_left) in itertools.pairwise(said):
        assert then_left <= left, said
    for when, left in said:
        assert abs(left - (end - when)) <= 1, (when, left, end - when)


def _some_ray(options, storage):
    return {"CPU": 2.0}, 8e9


@pytest.fixture
def many_images(monkeypatch):
    """A study's data set of 10,000 tiny images: with the tiny space's 10% held out for testing and val_fraction 0.5,
    4,500 validation images, as in finding 3 of issue 31."""
    labels = torch.arange(10_000) % 10
    data = ImageData(torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8), labels, tuple(f"c{i}" for i in range(10)), "synthetic",
                     "many", (0.5,) * 3, (0.25,) * 3)
    monkeypatch.setattr("cnnsearch.study.settings.load_dataset", lambda *args, **kwargs: data)
    return data


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for the module's studies: a new one takes seconds to create."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def _plan(space_file, folder, store, **options):
    space = load_space(space_file)
    return resolve(space, RunOptions(name=space.name, storage=folder, tracking_uri=store, **options), None, _some_ray)


def _notes(plan, capsys) -> list[str]:
    """What the study's opening says after its first line."""
    capsys.readouterr()
    announce(plan, 8e9)
    return capsys.readouterr().err.splitlines()[1:]


def test_a_validation_split_larger_than_the_training_subset_is_sampled_as_large_as_it_and_resumes_the_same(
        tmp_path, tiny_space, many_images, store, capsys):
    space_file = tiny_space(tmp_path, dataset={"val_fraction": 0.5, "subset": 3000})
    plan = _plan(space_file, tmp_path / "runs", store, epochs=3)
    assert (len(plan.split.train), len(plan.split.val)) == (3000, 3000)
    assert plan.space.dataset.val_subset == plan.settings["val_subset"] == 3000  # saved with the study, recorded with its split
    sample = split_dataset(many_images.labels, val_fraction=0.5, test_fraction=0.1, subset=3000, val_subset=3000)
    assert torch.equal(plan.split.val, sample.val)  # the seeded sample that --val-subset 3000 gives
    (note,) = _notes(plan, capsys)
    assert note.startswith("validating trials on 3,000 of the 4,500 validation images, a seeded sample") and "--val-subset N" in note
    # Resumed, the study validates on the same images, and says nothing more.
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("sampled"))
    save_state(plan, run.info.run_id, finished=False)
    resumed = _plan(space_file, tmp_path / "runs", store, resume=True)
    assert torch.equal(resumed.split.val, plan.split.val) and _notes(resumed, capsys) == []


@pytest.mark.parametrize("given", [{"val_subset": 4500}, {"val_subset": 1000}, {"subset": 4500}])
def test_val_subset_or_a_training_subset_as_large_chooses_otherwise_without_a_word(given, tmp_path, tiny_space, many_images, store,
                                                                                   capsys):
    space_file = tiny_space(tmp_path, dataset={"val_fraction": 0.5, "subset": 3000})
    plan = _plan(space_file, tmp_path / "runs", store, epochs=3, scheduler="none", **given)
    assert len(plan.split.val) == given.get("val_subset", 4500) and plan.settings["val_subset"] == given.get("val_subset")
    assert _notes(plan, capsys) == []


def test_the_sample_never_goes_below_what_measures_an_accuracy_to_2_points(tmp_path, tiny_space, many_images, store, capsys):
    space_file = tiny_space(tmp_path, dataset={"val_fraction": 0.5, "subset": 500})
    plan = _plan(space_file, tmp_path / "runs", store, scheduler="none")
    assert len(plan.split.val) == 2401  # 1.96 * sqrt(0.25 / 2401) = 0.02
    (note,) = _notes(plan, capsys)
    assert "no more than the 500 they train on" in note and "at least 2,401, which measure an accuracy to ±2 points (95%)" in note


@pytest.mark.parametrize("epochs, val_fraction, said", [
    (2, 0.5, ("no early stopping: with 2 epochs a trial, no rung of ASHA has room: a trial judged at epoch 1 should be able to "
              "train 3 times as long, to epoch 3, if it passes; --scheduler asha stops trials anyway")),
    (3, 0.1, ("no early stopping: 900 validation images measure an accuracy only to ±3.3 points (95%), and ASHA's rungs would "
              "stop trials on gaps within that; 2,401 measure it to ±2; --scheduler asha stops trials anyway")),
    (3, 0.5, None),
])
def test_asha_by_default_only_where_a_rung_has_room_and_the_validation_resolves_2_points(
        epochs, val_fraction, said, tmp_path, tiny_space, many_images, store, capsys):
    space_file = tiny_space(tmp_path, dataset={"val_fraction": val_fraction, "subset": 3000})
    plan = _plan(space_file, tmp_path / "runs", store, epochs=epochs)
    assert plan.settings["scheduler"] == ("none" if said else "asha")
    assert [note for note in _notes(plan, capsys) if not note.startswith("validating")] == ([said] if said else [])


def test_asha_asked_for_runs_and_says_why_it_may_stop_trials_on_noise(tmp_path, tiny_space, many_images, store, capsys):
    space_file = tiny_space(tmp_path, dataset={"val_fraction": 0.5, "subset": 3000})
    plan = _plan(space_file, tmp_path / "runs", store, epochs=2, scheduler="asha")
    assert plan.settings["scheduler"] == "asha"
    (note,) = [note for note in _notes(plan, capsys) if not note.startswith("validating")]
    assert note.startswith("ASHA stops trials early, as the study asks, though with 2 epochs a trial, no rung of ASHA has room")


def test_the_importances_minimum_is_the_one_measured_on_nasbench201():
    report = json.loads((Path(__file__).parents[1] / "benchmarks" / "results" / "importances_nasbench201.json").read_text())
    assert MIN_IMPORTANCE_TRIALS == report["minimum"] == 75


def test_trials_stopped_early_do_not_count_towards_the_importances_minimum_and_plot_says_so_in_one_line(
        tmp_path, tiny_space, cli, monkeypatch):
    """Eight completed and four stopped-early trials, where importances need ten completed: twelve scored trials, no importances."""
    monkeypatch.setattr("cnnsearch.study.propose.MIN_IMPORTANCE_TRIALS", 10)  # 75 real trials would take a minute to record
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder = Recorder.open(mlflow.MlflowClient(uri), experiment="tiny", study="tiny", space_hash="0", files=[tiny_space(tmp_path)])
    for index in range(12):
        run_id = recorder.start_trial(str(index), {"residual.width": [8, 16][index % 2], "residual.num_blocks": 1}, space_hash="0")
        recorder.client.set_tag(run_id, Tags.FAMILY, "residual")
        for metric, value in (("params", 1000 + index), ("macs", 10000 + index)):  # what log_arch records, without building the model
            recorder.client.log_metric(run_id, metric, value)
        recorder.log_epoch(run_id, {"val_acc": 0.3 + index % 2 / 10}, epoch=1)
        recorder.finish_trial(run_id, Status.COMPLETED if index < 8 else Status.STOPPED_EARLY)
    status, _, err = cli("plot", "tiny", "--out", tmp_path / "plots", "--tracking-uri", uri)
    assert status == 0, err
    (line,) = [line for line in err.splitlines() if "importances" in line]
    assert line == ("no knob importances: 8 completed trials (and 4 stopped early, which do not count); importances need at least "
                    "10: from fewer, fANOVA ranked NAS-Bench-201's knobs no better than chance (BENCHMARKS.md)")
    assert not (tmp_path / "plots" / "importances.png").exists()
