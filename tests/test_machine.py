"""A trial's machine errors are retried like a lost worker; its architecture's errors fail it once and for all.

The machine's faults are injected into a study run as a command of its own: a
``sitecustomize`` module on its PYTHONPATH, which every Python process of the study loads
(Ray's workers too), makes the first checkpoint upload raise an OSError, as an unreachable
S3 would, or every backward pass raise CUDA's out-of-memory error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest

from cnnsearch.storage import Storage, unreachable_reason

_FAULTS = '''
import os
import sys

fault = os.environ.get("CNNSEARCH_TEST_FAULT")
if fault == "upload-once":
    import pyarrow.fs

    copy_files = pyarrow.fs.copy_files

    def failing_once(source, destination, *args, **kwargs):
        if "/checkpoint_" in destination:
            try:  # the first upload of the whole study, whichever process makes it
                os.close(os.open(os.environ["CNNSEARCH_TEST_FAULT_MARKER"], os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                raise OSError("When uploading a checkpoint: connection refused (injected)")
        return copy_files(source, destination, *args, **kwargs)

    pyarrow.fs.copy_files = failing_once
elif fault == "gpu-oom" and sys.argv[0].endswith("default_worker.py"):  # Ray's workers, not the driver
    import torch

    def out_of_memory(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    torch.Tensor.backward = out_of_memory
'''


def run_with_fault(tmp_path: Path, fault: str, space: Path, *args: str) -> subprocess.CompletedProcess:
    """`cnnsearch run` of ``space`` in a process of its own, with its own Ray, under ``fault``."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_FAULTS)
    env = os.environ | {"CNNSEARCH_TEST_FAULT": fault, "CNNSEARCH_TEST_FAULT_MARKER": str(tmp_path / "fault-struck"),
                        "PYTHONPATH": os.pathsep.join([str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "cnnsearch", "run", str(space), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                           "--storage", str(tmp_path / "runs"), "--scheduler", "none", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)


def trial_runs(tmp_path: Path, name: str) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.`cnnsearch.study` != ''")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")


def optuna_states(storage: Path) -> list[optuna.trial.TrialState]:
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage / "optuna.journal")))
    (summary,) = optuna.get_all_study_summaries(journal)
    return [trial.state for trial in optuna.load_study(study_name=summary.study_name, storage=journal).trials]


@pytest.mark.slow
def test_a_failed_checkpoint_upload_is_retried_and_an_architecture_s_error_fails_once(tmp_path, tiny_space):
    """Two trials: one's first checkpoint upload fails (the machine's error), and the other's network cannot train on
    a batch of one image (its own). The first goes on and completes; the second fails with its cause, is not retried,
    and Optuna is told of each trial once."""
    space = tiny_space(tmp_path, "upload", stem={"style": ["cifar", "mobilenet"], "channels": 8}, stages=[{"stride": 2}] * 4,
                       residual={"num_blocks": 1, "width": 8}, dataset={"subset": 1, "val_subset": 32}, budget={"epochs": 1},
                       recipe={"batch_size": 64, "precision": "fp32"})
    result = run_with_fault(tmp_path, "upload-once", space, "--sampler", "grid", "--trials", "2")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fault-struck").exists() and "Traceback" not in result.stderr
    retries = [line for line in result.stderr.splitlines() if "it goes on from its last checkpoint" in line]
    assert len(retries) == 1 and "OSError: When uploading a checkpoint: connection refused (injected)" in retries[0], result.stderr
    runs = {run.data.params["stem.style"]: run for run in trial_runs(tmp_path, "upload")}
    assert runs["cifar"].data.tags["cnnsearch.status"] == "completed" and "cnnsearch.reason" not in runs["cifar"].data.tags
    history = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(runs["cifar"].info.run_id, "val_acc")
    assert [m.step for m in history] == [1]  # the epoch whose upload failed was trained again, and recorded once
    assert runs["mobilenet"].data.tags["cnnsearch.status"] == "failed"
    assert runs["mobilenet"].data.tags["cnnsearch.reason"].startswith("ValueError: Expected more than 1 value per channel")
    assert sorted(optuna_states(tmp_path / "runs")) == sorted([optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL])


@pytest.mark.slow
def test_a_gpu_out_of_memory_is_retried_then_failed_after_the_retries(tmp_path, tiny_space):
    """Every attempt runs out of GPU memory: the trial is retried twice, then failed with the cause, and Optuna told once."""
    space = tiny_space(tmp_path, "oom", dataset={"subset": 64}, budget={"epochs": 1}, recipe={"batch_size": 32})
    result = run_with_fault(tmp_path, "gpu-oom", space, "--trials", "1")
    assert result.returncode == 0, result.stderr
    retries = [line for line in result.stderr.splitlines() if "it goes on from its last checkpoint" in line]
    assert len(retries) == 2 and all("OutOfMemoryError: CUDA out of memory" in line for line in retries), result.stderr
    (run,) = trial_runs(tmp_path, "oom")
    assert run.data.tags["cnnsearch.status"] == "failed"
    reason = run.data.tags["cnnsearch.reason"]
    assert "OutOfMemoryError: CUDA out of memory" in reason and reason.endswith("(its machine failed 3 times)")
    assert optuna_states(tmp_path / "runs") == [optuna.trial.TrialState.FAIL]


def test_a_node_uses_a_local_storage_folder_only_where_it_sees_the_driver_s_file(tmp_path):
    storage = Storage.open(tmp_path / "new" / "study")
    with storage.marked() as marker:
        assert unreachable_reason(storage.root, marker) is None  # the driver's own folder, as a node that shares it sees it
        assert os.listdir(storage.root) == [marker]  # its own probe file is gone
        (tmp_path / "other").mkdir()
        # Another node's folder at another path stands for a folder of its own at the same path: the driver's file is not there.
        assert unreachable_reason(str(tmp_path / "other"), marker) == \
            "a folder of its own there, without the file that the driver wrote into its folder"
        assert unreachable_reason(str(tmp_path / "none"), marker) == "no such folder there"
    assert not (tmp_path / "new").exists()  # the folders it made, for a study that may yet be refused, are gone
    (tmp_path / "kept").mkdir()
    with Storage.open(tmp_path / "kept").marked():
        pass
    assert (tmp_path / "kept").is_dir() and os.listdir(tmp_path / "kept") == []

