"""The prefilter: each trial is the best of a pool of proposals by a zero-cost proxy, and the others are
never counted, trained or scored; it is told to Optuna without an accuracy it never had."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import yaml

from cnnsearch.tracking import find_study

SPACE = Path(__file__).parents[1] / "spaces" / "nasbench201.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('prefilter') / 'mlflow.db'}"


def passed_over(store: str, name: str, folder: Path) -> pd.DataFrame:
    run_id = find_study(name, store).parent.info.run_id
    path = mlflow.MlflowClient(store).download_artifacts(run_id, "passed_over.csv", str(folder))
    return pd.read_csv(path)


def optuna_trials(storage: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=journal).get_trials(deepcopy=False)


def test_a_tabular_trial_is_the_best_of_its_pool_and_the_others_never_become_trials(tmp_path, cli, store):
    status, out, err = cli("run", SPACE, "--tabular", "nasbench201", "--dataset", "synthetic", "--trials", 4, "--sampler", "random",
                           "--prefilter", "params:3", "--name", "pooled", "--storage", tmp_path / "runs", "--tracking-uri", store)
    assert status == 0, err
    trials = find_study("pooled", store).runs
    assert len(trials) == 4  # counted: the trials asked for, none of the passed-over proposals
    assert (trials["metrics.proxy.params"] == trials["metrics.params"]).all()  # each trial records its proxy value
    others = passed_over(store, "pooled", tmp_path)
    assert len(others) == 4 * 2 and set(others["proxy"]) == {"params"}
    for trial_id, pool in others.groupby("pool_of"):  # the trial picked is its pool's best
        picked = trials[trials["tags.cnnsearch.trial_id"].str.endswith(trial_id)]["metrics.params"].item()
        assert (pool["value"] <= picked).all()
    assert find_study("pooled", store).parent.data.metrics["passed_over_proposals"] == 8
    assert find_study("pooled", store).parent.data.metrics["rejected_proposals"] == 0  # passed over is not rejected
    # Optuna: the passed-over proposals are failed trials, which no sampler learns from, and hold no value.
    told = optuna_trials(tmp_path / "runs", "pooled")
    failed = [trial for trial in told if trial.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 8 and all(trial.values is None and "cnnsearch.passed_over" in trial.user_attrs for trial in failed)
    assert sorted(trial.values[0] for trial in told if trial.state == optuna.trial.TrialState.COMPLETE) == sorted(trials["metrics.val_acc"])


@pytest.mark.parametrize("flags, expected", [
    (["--prefilter", "zen:10"], "--prefilter zen:10: proxy: Input should be 'params', 'macs', 'synflow'"),
    (["--prefilter", "synflow:0"], "--prefilter synflow:0: pool: Input should be greater than or equal to 1, got 0"),
    (["--prefilter", "synflow"], "--prefilter synflow: expected PROXY:POOL, such as synflow:10"),
])
def test_a_bad_prefilter_is_refused_in_one_line_before_anything_is_written(tmp_path, cli, flags, expected):
    status, _, err = cli("run", SPACE, "--tabular", "nasbench201", "--dataset", "synthetic", *flags, "--storage", tmp_path / "runs",
                         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert status == 2 and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "runs").exists()


def test_a_space_file_prefilter_is_checked_and_refused_with_several_objectives(tmp_path, cli):
    doc = yaml.safe_load(SPACE.read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc | {"search": {"trials": 4, "prefilter": {"proxy": "synflow", "pool": 0}}}))
    status, _, err = cli("run", bad, "--tabular", "nasbench201", "--storage", tmp_path / "bad")
    assert status == 2 and "search.prefilter.pool: Input should be greater than or equal to 1" in err, err
    front = tmp_path / "front.yaml"
    front.write_text(yaml.safe_dump(doc | {"search": {"trials": 4, "prefilter": {"proxy": "synflow", "pool": 4}},
                                           "objectives": [{"metric": "val_acc", "goal": "max"}, {"metric": "macs", "goal": "min"}]}))
    status, _, err = cli("run", front, "--tabular", "nasbench201", "--storage", tmp_path / "front")
    assert status == 2 and err.count("\n") == 1 and "a prefilter ranks proposals by a proxy of accuracy alone" in err, err


def test_a_prefilter_whose_images_do_not_fit_the_table_is_refused(tmp_path, cli):
    from test_proxies import image_folder

    small = image_folder(tmp_path / "small", size=16)
    status, _, err = cli("run", SPACE, "--tabular", "nasbench201", "--dataset", f"imagefolder:{small}", "--prefilter", "synflow:2",
                         "--storage", tmp_path / "runs", "--cache-dir", tmp_path / "cache")
    assert status == 2 and err.count("\n") == 1 and "its images do not fit them" in err, err


@pytest.mark.slow
def test_a_trained_trial_is_the_best_of_its_pool_and_only_it_trains(tmp_path, cli, tiny_space, store):
    status, _, err = cli("run", tiny_space(tmp_path), "--trials", 2, "--epochs", 1, "--sampler", "random", "--prefilter", "synflow:3",
                         "--max-concurrent", 1, "--name", "trained", "--storage", tmp_path / "runs", "--tracking-uri", store)
    assert status == 0, err
    trials = find_study("trained", store).runs
    assert len(trials) == 2 and set(trials["tags.cnnsearch.status"]) == {"completed"} and trials["metrics.proxy.synflow"].gt(0).all()
    others = passed_over(store, "trained", tmp_path)
    assert len(others) == 2 * 2
    for trial_id, pool in others.groupby("pool_of"):
        assert (pool["value"] <= trials[trials["tags.cnnsearch.trial_id"] == trial_id]["metrics.proxy.synflow"].item()).all()
