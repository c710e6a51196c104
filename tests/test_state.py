"""A study's state knows its version, and a study folder can move: it resumes from wherever it is now."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from cnnsearch import load_space
from cnnsearch.config import ConfigError
from cnnsearch.names import WEIGHTS_FILE, Status
from cnnsearch.storage import Storage
from cnnsearch.study import RunOptions
from cnnsearch.study.record import CONFIG_FILE, STATE_FILE, TRIALS_FOLDER, recover, trial_document
from cnnsearch.study.settings import STATE_VERSION, resolve, versioned
from cnnsearch.tracking import Recorder

_OVERRIDES = ("dataset", "subset", "val_fraction", "test_fraction", "val_subset", "epochs", "lr", "batch_size", "precision", "compile")


def no_ray(options: RunOptions, storage: Storage) -> tuple[dict[str, float], float]:
    raise AssertionError("Ray was started")


def some_ray(options: RunOptions, storage: Storage) -> tuple[dict[str, float], float]:
    return {"CPU": 2.0}, 8e9


def write_state(folder: Path, space_file: Path, **changes) -> dict:
    """The cnnsearch.json that this cnnsearch saves for an interrupted study of ``space_file`` named after it."""
    space = load_space(space_file)
    state = versioned({
        "name": space.name, "space_hash": space.digest, "experiment": space.name, "parent_run_id": "0",
        "tracking_uri": f"sqlite:///{folder.parent / 'mlflow.db'}", "tracking_store": "../mlflow.db", "finished": False, "recipe": json.loads(json.dumps(space.recipe.model_dump(mode="json"))),
        "settings": {"trials": 2, "sampler": "tpe", "scheduler": "none", "seed": 0, "latency_device": "cpu"} | dict.fromkeys(_OVERRIDES),
    }) | changes
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cnnsearch.json").write_text(json.dumps({key: value for key, value in state.items() if value is not None}))
    return state


def one_line(err: str) -> str:
    """The error, which must be one line: a study refused before it exists has no resume hint."""
    assert "Traceback" not in err
    (error,) = err.splitlines()
    return error.removeprefix("cnnsearch: error: ")


def resume(space_file: Path, folder: Path, start_ray=no_ray, **options):
    space = load_space(space_file)
    return resolve(space, RunOptions(name=space.name, storage=folder, resume=True, **options), None, start_ray)


@pytest.mark.parametrize("version", [None, STATE_VERSION + 1])
def test_state_of_another_version_is_refused_before_anything_is_written(version, tmp_path, tiny_space):
    space_file = tiny_space(tmp_path)
    folder = tmp_path / "runs"
    write_state(folder, space_file, version=version)
    with pytest.raises(ConfigError, match=f"{folder / 'cnnsearch.json'}: state (of no version|version {version})") as refused:
        resume(space_file, folder)
    assert "another --storage" in str(refused.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runs", "tiny.yaml"]


@pytest.mark.parametrize("flags", [["--resume"], ["--trials", "3"]])
def test_an_earlier_cnnsearch_s_study_is_one_line_and_exit_2(flags, tmp_path, cli, tiny_space):
    """A study begun before state had versions (no recipe, say): refused up front, resumed or extended, never half-way."""
    space_file = tiny_space(tmp_path)
    folder = tmp_path / "runs"
    write_state(folder, space_file, version=None, recipe=None, finished=True)
    status, _, err = cli("run", space_file, "--storage", folder, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", *flags)
    assert status == 2 and one_line(err).startswith(f"{folder / 'cnnsearch.json'}: state of no version"), err
    assert not (tmp_path / "m.db").exists() and [path.name for path in folder.iterdir()] == ["cnnsearch.json"]


def test_a_changed_recipe_is_refused_with_the_first_key_that_differs(tmp_path, tiny_space):
    """cnnsearch's defaults changed under a study (here: its saved weight decay differs): its trials would not compare."""
    space_file = tiny_space(tmp_path)
    recipe = json.loads(json.dumps(load_space(space_file).recipe.model_dump(mode="json")))
    write_state(tmp_path / "runs", space_file, recipe=recipe | {"weight_decay": 0.123})
    with pytest.raises(ConfigError, match=f"trained with recipe weight_decay 0.123, not {recipe['weight_decay']}"):
        resume(space_file, tmp_path / "runs")


def test_a_recipe_key_the_saved_study_lacks_is_a_difference(tmp_path, tiny_space):
    space_file = tiny_space(tmp_path)
    recipe = json.loads(json.dumps(load_space(space_file).recipe.model_dump(mode="json")))
    key = next(iter(recipe))
    write_state(tmp_path / "runs", space_file, recipe={k: v for k, v in recipe.items() if k != key})
    with pytest.raises(ConfigError, match=f"trained with recipe {key} unset, not "):
        resume(space_file, tmp_path / "runs")


def test_a_missing_sqlite_store_on_resume_is_one_line_before_ray_and_creates_nothing(tmp_path, cli, tiny_space, monkeypatch):
    space_file = tiny_space(tmp_path)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # a folder of its own: the session's scratch folder holds other tests' stores
    write_state(tmp_path / "runs", space_file)  # its store, ../mlflow.db, is not there
    status, _, err = cli("run", space_file, "--storage", tmp_path / "runs", "--resume")
    assert status == 2 and one_line(err).startswith(f"tracking store sqlite:///{tmp_path / 'mlflow.db'}: no such file"), err
    assert "--tracking-uri" in err
    assert not (tmp_path / "mlflow.db").exists() and not Path("mlflow.db").exists()


def test_a_store_without_the_study_s_parent_run_is_refused_before_ray(tmp_path, tiny_space):
    space_file = tiny_space(tmp_path)
    write_state(tmp_path / "runs", space_file, parent_run_id="f" * 32)
    mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()  # a store, of other studies
    with pytest.raises(ConfigError, match=f"holds no run {'f' * 32}, the study's parent run"):
        resume(space_file, tmp_path / "runs")


def test_a_study_moved_with_its_store_beside_it_finds_the_store_where_it_is_now(tmp_path, tiny_space):
    before, after = tmp_path / "before", tmp_path / "after"
    space_file = tiny_space(tmp_path)
    client = mlflow.MlflowClient(f"sqlite:///{before / 'mlflow.db'}")
    recorder = Recorder.open(client, experiment="tiny", study="tiny", space_hash="0")
    write_state(before / "runs", space_file, parent_run_id=recorder.parent_run_id)
    shutil.move(before, after)
    plan = resume(space_file, after / "runs", start_ray=some_ray)
    assert plan.tracking_uri == f"sqlite:///{after / 'mlflow.db'}"
    assert plan.client.get_run(recorder.parent_run_id).info.run_name == "tiny"
    assert not before.exists()


def test_tracking_uri_always_overrides_the_saved_one(tmp_path, tiny_space):
    space_file = tiny_space(tmp_path)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    recorder = Recorder.open(client, experiment="tiny", study="tiny", space_hash="0")
    write_state(tmp_path / "runs", space_file, parent_run_id=recorder.parent_run_id, tracking_uri="sqlite:////nowhere/mlflow.db")
    plan = resume(space_file, tmp_path / "runs", start_ray=some_ray, tracking_uri=f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert plan.tracking_uri == f"sqlite:///{tmp_path / 'elsewhere.db'}"


def test_a_storage_folder_moved_alone_finds_its_store_where_it_was(tmp_path, tiny_space):
    space_file = tiny_space(tmp_path)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    recorder = Recorder.open(client, experiment="tiny", study="tiny", space_hash="0")
    write_state(tmp_path / "before", space_file, parent_run_id=recorder.parent_run_id)
    shutil.move(tmp_path / "before", tmp_path / "deeper" / "after")  # ../mlflow.db is not there
    plan = resume(space_file, tmp_path / "deeper" / "after", start_ray=some_ray)
    assert plan.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.mark.parametrize(
    "db, beside",
    [("project/runs/mlflow.db", "mlflow.db"), ("project/mlflow.db", "../mlflow.db"), ("mlflow.db", "../../mlflow.db"),
     ("elsewhere/mlflow.db", None)],
)
def test_a_sqlite_store_inside_or_above_the_storage_folder_is_saved_relative_to_it(db, beside, tmp_path, monkeypatch):
    """The default layout, ./mlflow.db and ./cnnsearch_runs/NAME, moves as a whole; --storage runs beside mlflow.db too."""
    from cnnsearch.study.settings import _saved_store

    storage = Storage.open(tmp_path / "project" / "runs")
    saved = {"tracking_uri": f"sqlite:///{tmp_path / db}"} | ({"tracking_store": beside} if beside else {})
    assert _saved_store(f"sqlite:///{tmp_path / db}", storage) == saved
    monkeypatch.chdir(tmp_path)
    assert _saved_store(f"sqlite:///{db}", storage) == saved  # relative: to the working directory, as MLflow reads it
    assert _saved_store("http://mlflow:5000", storage) == {"tracking_uri": "http://mlflow:5000"}


def checkpointed_trial(storage: Storage, recorder: Recorder, *, version: int | None = STATE_VERSION, spent: bool = False) -> str:
    """A trial run with an epoch's checkpoint in the storage, its folder tagged and its config saved as the Tracker does."""
    run_id = recorder.start_trial("t1", {"residual.width": 8}, space_hash="0")
    checkpoint = Path(storage.path("tune", "session-0", "trial_t1", "checkpoint_000000"))
    checkpoint.mkdir(parents=True)
    config = json.loads(trial_document({"arch": {}, "recipe": {}, "cost": {}, "record": {}, "cell": None, "optuna_trial": 0}))
    (checkpoint / CONFIG_FILE).write_text(json.dumps(config | {"version": version}))
    storage.write_text(storage.path(TRIALS_FOLDER, f"{run_id}.json"), json.dumps(config))
    state = {"history": [{"epoch": 1, "val_acc": 0.5, "budget_spent": spent}]}
    torch.save(versioned(state), checkpoint / STATE_FILE)
    torch.save({}, checkpoint / WEIGHTS_FILE)
    recorder.set_trial_dir(run_id, "tune/session-0/trial_t1")
    return run_id


def test_a_moved_study_goes_on_from_its_checkpoint_in_the_same_run(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    recorder = Recorder.open(client, experiment="moved", study="moved", space_hash="0")
    run_id = checkpointed_trial(Storage.open(tmp_path / "before"), recorder)
    shutil.move(tmp_path / "before", tmp_path / "after")
    resumed, ended = recover(recorder, Storage.open(tmp_path / "after"))
    assert [config["run_id"] for config in resumed] == [run_id] and not ended
    assert resumed[0]["resume"] == f"{tmp_path}/after/tune/session-0/trial_t1/checkpoint_000000/{STATE_FILE}"
    assert "version" not in resumed[0] and client.get_run(run_id).info.lifecycle_stage == "active"


def test_a_trial_that_had_spent_its_budget_is_completed_and_its_state_deleted(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    recorder = Recorder.open(client, experiment="spent", study="spent", space_hash="0")
    storage = Storage.open(tmp_path / "runs")
    run_id = checkpointed_trial(storage, recorder, spent=True)
    resumed, ended = recover(recorder, storage)
    assert not resumed and [config["run_id"] for config in ended] == [run_id]
    assert client.get_run(run_id).data.tags["cnnsearch.status"] == "completed"
    assert storage.listdir(storage.path("tune", "session-0", "trial_t1")) == [] and storage.listdir(storage.path(TRIALS_FOLDER)) == []


def test_a_checkpoint_of_another_version_is_refused_naming_its_file(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    recorder = Recorder.open(client, experiment="old", study="old", space_hash="0")
    checkpointed_trial(Storage.open(tmp_path / "runs"), recorder, version=None)
    with pytest.raises(ConfigError, match=f"{CONFIG_FILE}: state of no version"):
        recover(recorder, Storage.open(tmp_path / "runs"))


def test_a_trial_without_a_checkpoint_goes_on_from_the_start_in_its_own_run(tmp_path):
    """Never is a record deleted because no checkpoint was found; only a run whose trial never began (no config saved) goes."""
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    recorder = Recorder.open(client, experiment="early", study="early", space_hash="0")
    storage = Storage.open(tmp_path / "runs")
    started, never_began = (recorder.start_trial(trial, {"residual.width": 8}, space_hash="0") for trial in ("t1", "t2"))
    config = {"arch": {}, "recipe": {"lr": 0.1}, "cost": {}, "record": {"seed": 0}, "cell": None, "optuna_trial": 3}
    storage.write_text(storage.path(TRIALS_FOLDER, f"{started}.json"), trial_document(config | {"run_id": "stale", "resume": "x"}))
    recorder.set_trial_dir(started, "tune/session-0/trial_t1")
    resumed, ended = recover(recorder, storage)
    assert resumed == [config | {"run_id": started, "earlier": {}}] and not ended
    assert client.get_run(started).info.lifecycle_stage == "active"
    assert client.get_run(never_began).info.lifecycle_stage == "deleted"


@pytest.mark.slow
def test_a_study_killed_mid_trial_and_moved_with_its_store_resumes_there(ray_session, tmp_path, cli, monkeypatch, tiny_space):
    """The issue's check: killed during a trial, the folder moved, the same command line run there completes every trial.

    No MLflow run is lost, and the interrupted trial goes on from its checkpoint in its own run.
    """
    from test_records import trial_runs, wait_for_first_epoch, write_slow_space

    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()
    write_slow_space(tiny_space, before, "moving", {"epochs": 3})
    args = ["run", "moving.yaml", "--trials", "2", "--scheduler", "none", "--max-concurrent", "1"]  # ./mlflow.db, ./cnnsearch_runs/moving
    driver = subprocess.Popen([sys.executable, "-m", "cnnsearch", *args], cwd=before, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_first_epoch(f"sqlite:///{before / 'mlflow.db'}", "moving", running=lambda: driver.poll() is None)
        assert driver.poll() is None, "the study ended before it could be killed"
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    (interrupted,) = trial_runs(f"sqlite:///{before / 'mlflow.db'}", "moving")
    assert "cnnsearch.status" not in interrupted.data.tags
    shutil.move(before, after)
    monkeypatch.chdir(after)
    status, _, err = cli(*args, "--resume")
    assert status == 0, err
    uri = f"sqlite:///{after / 'mlflow.db'}"
    runs = trial_runs(uri, "moving")
    assert len(runs) == 2 and {run.data.tags["cnnsearch.status"] for run in runs} == {"completed"}
    assert interrupted.info.run_id in {run.info.run_id for run in runs}
    history = mlflow.MlflowClient(uri).get_metric_history(interrupted.info.run_id, "val_acc")
    assert sorted(m.step for m in history) == [1, 2, 3]  # from its checkpoint: no epoch trained twice
    assert not list((after / "cnnsearch_runs" / "moving" / TRIALS_FOLDER).iterdir())


def test_a_space_file_left_where_mlflow_logged_it_is_said_not_a_traceback(tmp_path, tiny_space):
    """MLflow keeps artifact folders by their absolute path: after a move, the study's pictures say what is missing."""
    from cnnsearch.study import importances

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    recorder = Recorder.open(client, experiment="moved", study="moved", space_hash="0", files=[tiny_space(tmp_path)])
    recorder.finish_trial(recorder.start_trial("t1", {"residual.width": 8}, space_hash="0"), "completed")
    recorder.log_epoch(recorder.trials()[0]["run_id"], {"val_acc": 0.5}, epoch=1)
    shutil.rmtree(client.get_run(recorder.parent_run_id).info.artifact_uri.removeprefix("file://"))
    (found,) = importances(recorder.record())
    assert not found.scores and found.why.startswith("tiny.yaml is not in /") and "where MLflow keeps" in found.why


def record_trials(folder: Path, space_file: Path, statuses: list[Status]) -> str:
    """A study of ``space_file`` in ``folder``'s mlflow.db whose trials all ended, with ``statuses``; returns its parent run id."""
    from optuna.trial import FixedTrial

    from cnnsearch.costs import profile

    space = load_space(space_file)
    recorder = Recorder.open(mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}"), experiment=space.name, study=space.name,
                             space_hash=space.digest, files=[space_file])
    for index, status in enumerate(statuses):
        knobs = {"stem.channels": 8, "residual.num_blocks": 1, "residual.width": [8, 16][index % 2]}
        run_id = recorder.start_trial(str(index), knobs, space_hash=space.digest)
        arch = space.sample(FixedTrial(knobs))
        recorder.log_arch(run_id, arch, profile(arch).to_dict())
        recorder.log_epoch(run_id, {"val_acc": 0.3 + index / 100, "val_loss": 1.0, "train_loss": 1.0, "lr": 0.1}, epoch=1)
        recorder.finish_trial(run_id, status)
    return recorder.parent_run_id


def test_a_summary_cut_short_by_ctrl_c_resumes_and_a_finished_study_runs_nothing(tmp_path, cli, monkeypatch, tiny_space):
    """Every trial ran, then Ctrl-C came while the pictures were drawn: the resume line, 130, and a study that --resume
    summarizes. Run again, the finished study says so in its output and exits 0: no data, no Ray, no resume hint."""
    import cnnsearch.plots
    import cnnsearch.study.launch

    space_file, folder = tiny_space(tmp_path), tmp_path / "runs"
    parent = record_trials(tmp_path, space_file, [Status.COMPLETED, Status.FAILED])  # a failed trial is a search's result
    write_state(folder, space_file, parent_run_id=parent)  # unfinished, its 2 trials done
    monkeypatch.setattr(cnnsearch.study.launch, "start", some_ray)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as pictures:
        pictures.setattr(cnnsearch.plots, "plot_study", ctrl_c)
        status, out, err = cli("run", space_file, "--storage", folder, "--resume")
    assert status == 130 and "top 1 by validation accuracy" in out, err
    assert err.endswith(f"cnnsearch: interrupted\nResume it: cnnsearch run {space_file} --storage {folder} --resume\n"), err
    assert json.loads((folder / "cnnsearch.json").read_text())["finished"] is False

    status, out, err = cli("run", space_file, "--storage", folder, "--resume")
    assert status == 0 and "Pictures: " in out, err
    assert json.loads((folder / "cnnsearch.json").read_text())["finished"] is True

    monkeypatch.setattr(cnnsearch.study.launch, "start", no_ray)
    def load_dataset(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr("cnnsearch.study.settings.load_dataset", load_dataset)
    for flags in ([], ["--resume"], ["--trials", "2"]):
        status, out, err = cli("run", space_file, "--storage", folder, *flags)
        assert status == 0 and err == "", err
        query = f"Query it: cnnsearch query tiny [--top N | --rows KNOB [--cols KNOB] [--anova] [--compare]] --tracking-uri sqlite:///{tmp_path / 'mlflow.db'}"
        assert out.splitlines()[:3] == ["study 'tiny' has already finished its 2 trials; nothing to run (a larger --trials adds more)", "", query], out
    with pytest.raises(AssertionError, match="the data was loaded"):  # a larger --trials goes on with the study
        cli("run", space_file, "--storage", folder, "--trials", "3")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(client.search_runs([client.get_run(parent).info.experiment_id])) == 3  # the parent and its 2 trials, as they were
