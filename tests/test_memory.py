"""Memory per trial is known and bounded: estimated before training, reserved in Ray, measured and recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from cnnsearch import load_arch
from cnnsearch.costs import WORKER_BASE, training_memory

MEASURE = """
import json, sys, torch
import ray  # loaded in every trial's worker
from cnnsearch import load_arch
from cnnsearch.config import Recipe
from cnnsearch.data import load_dataset, split_dataset
from cnnsearch.space import Budget
from cnnsearch.train import fit_to_data, train
torch.set_num_threads(2)
preset, batch = sys.argv[1], int(sys.argv[2])
data = load_dataset("synthetic")
split = split_dataset(data.labels, subset=3 * batch, val_subset=batch)
recipe = Recipe(batch_size=batch, precision="fp32", bn_recalibration_images=batch)
train(fit_to_data(load_arch(preset), data), data, split, recipe=recipe, budget=Budget(epochs=1))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a large pytest process would report its parent's size.
print(next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


@pytest.mark.slow  # trains in a fresh process that imports Ray: half a minute to a minute and a half on two cores
@pytest.mark.parametrize("preset, batch", [("resnet20", 128), ("densenet_bc_100_k12", 24)])
def test_the_estimate_is_near_the_measured_peak(preset, batch):
    """Three training steps, a BN re-estimation and a validation in a fresh process, against the meta-device estimate.

    Stated tolerance: the estimate is at most 10% under and at most 50% over the measured peak (a Ray
    worker holds 150-250 MiB more than this bare process, which the estimate includes)."""
    measured = int(subprocess.run([sys.executable, "-c", MEASURE, preset, str(batch)], check=True, capture_output=True,
                                  text=True).stdout.split()[-1])
    estimate = training_memory(load_arch(preset), batch, "fp32").total
    assert 0.9 * measured <= estimate <= 1.5 * measured, (estimate / 2**20, measured / 2**20)


def test_the_estimate_grows_with_the_batch_and_shrinks_with_bf16():
    arch = load_arch("densenet_bc_100_k12")
    small, large, half = (training_memory(arch, batch, precision) for batch, precision in ((64, "fp32"), (128, "fp32"), (128, "bf16")))
    assert 1.9 * small.activations < large.activations and small.total < large.total and half.total < large.total
    assert large.total > WORKER_BASE + large.activations  # fp32 holds more than the saved tensors at its peak


# conftest.py's tiny space as one stage of width 8 after a stem of 8 or 4,096 channels, one epoch of 128 images.
SPACE = {"stem": {"channels": [8, 4096]}, "stages": [{"stride": 1}], "residual": {"num_blocks": 1, "width": 8},
         "dataset": {"subset": 128}, "budget": {"epochs": 1}}


def study_runs(uri: str, name: str) -> tuple:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.`cnnsearch.study` != ''")
    children = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return client, parent, children


@pytest.mark.slow
def test_a_trial_larger_than_any_node_is_rejected_before_training_with_the_reason(ray_session, tmp_path, cli, tiny_space):
    """A 4096-channel stem at batch 2048 needs far more than the machine has: rejected, never trained; the 8-channel one trains."""
    space = tiny_space(tmp_path, "huge", **SPACE, recipe={"batch_size": 2048})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status, _, err = cli("run", space, "--tracking-uri", uri, "--storage", tmp_path / "runs", "--trials", "2", "--sampler", "random")
    assert status == 0, err
    client, parent, runs = study_runs(uri, "huge")
    assert [run.data.params["stem.channels"] for run in runs] == ["8", "8"]
    assert all(run.data.metrics["memory_estimate_mib"] > 0 and run.data.metrics["peak_rss_mib"] > 0 for run in runs)
    rejected = json.loads(Path(client.download_artifacts(parent.info.run_id, "rejected.json", str(tmp_path))).read_text())
    assert rejected and all(row["stem.channels"] == 4096 for row in rejected)
    assert "of memory at batch 2048, more than the" in rejected[0]["reason"] and "of the largest Ray node" in rejected[0]["reason"]


RUN_IN_SMALL_RAY = """
import sys, ray
from cnnsearch.cli import main
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _memory=int(sys.argv[1]))
main(sys.argv[2:])
"""


@pytest.mark.slow
def test_trials_that_do_not_fit_in_memory_together_run_one_at_a_time(tmp_path, tiny_space):
    """Two CPUs but memory for one trial: Ray starts the second when the first has ended."""
    space = tiny_space(tmp_path, "one", **SPACE | {"stem": {"channels": 8}}, recipe={"batch_size": 32})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = subprocess.run(
        [sys.executable, "-c", RUN_IN_SMALL_RAY, str(int(WORKER_BASE * 1.5)), "run", str(space), "--tracking-uri", uri,
         "--storage", str(tmp_path / "runs"), "--trials", "2", "--max-concurrent", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    _, _, runs = study_runs(uri, "one")
    first, second = sorted(runs, key=lambda run: run.info.start_time)
    assert [run.data.tags["cnnsearch.status"] for run in (first, second)] == ["completed", "completed"]
    assert second.info.start_time >= first.info.end_time


def test_show_prints_each_samples_memory(cli):
    status, out, _ = cli("show", Path(__file__).parents[1] / "spaces" / "densenet.yaml", "--samples", "3")
    assert status == 0 and "memory: a CPU trial's expected peak at batch 64" in out
    assert out.count(" GiB  ") == 3 and "memory " in out.splitlines()[-3]
