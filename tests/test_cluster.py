"""A study across a Ray cluster of two nodes, its state in S3 and its record on an MLflow server, all on this machine.

The cluster is Ray's own test cluster (``ray.cluster_utils.Cluster``: two raylets of one
CPU each), started beside the session's Ray, which it leaves alone: the studies run as
``cnnsearch`` processes that join it with ``--ray-address``. moto's server speaks S3 over
HTTP in place of the cloud; ``mlflow server`` holds the record and the artifacts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import mlflow
import optuna
import pyarrow.fs
import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3, free_port, tiny_space):
    """Two Ray nodes (started after ``s3``: their workers have its credentials) and an MLflow server, on 127.0.0.1."""
    from ray.cluster_utils import Cluster

    folder = tmp_path_factory.mktemp("cluster")
    port = free_port()
    # Started first: it takes the longest.
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    marker = Path("/tmp/ray/ray_current_cluster")  # Cluster writes its address there for ray.init() to find
    saved = marker.read_text() if marker.exists() else None
    try:
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 100 * 2**20, "include_dashboard": False})
        try:
            nodes.add_node(num_cpus=1, object_store_memory=100 * 2**20)
            nodes.wait_for_nodes()
            tracking = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 180
            while True:
                try:
                    urllib.request.urlopen(f"{tracking}/health", timeout=5)
                    break
                except OSError:
                    assert time.monotonic() < deadline and server.poll() is None, "the MLflow server did not start"
                    time.sleep(0.5)
            yield SimpleNamespace(
                address=nodes.address, tracking=tracking, folder=folder, tiny_space=tiny_space, filesystem=s3.filesystem, bucket=s3.bucket, storage=s3.uri,
                node_ids={nodes.head_node.node_id, *(node.node_id for node in nodes.worker_nodes)},
                session=Path(nodes.head_node.get_session_dir_path()),
            )
        finally:
            nodes.shutdown()
            if saved is not None:
                marker.write_text(saved)
            else:
                marker.unlink(missing_ok=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def start(cluster, name: str, *extra: str, subset: int = 256, epochs: int = 2) -> tuple[list[str], subprocess.Popen]:
    """`cnnsearch run` of a small space against the cluster, the server and S3, in a process of its own."""
    space = cluster.tiny_space(cluster.folder, name, dataset={"subset": subset}, budget={"epochs": epochs}, recipe={"batch_size": 32})
    args = [sys.executable, "-m", "cnnsearch", "run", str(space), "--ray-address", cluster.address, "--tracking-uri", cluster.tracking,
            "--storage", cluster.storage(name), "--scheduler", "none", *extra]
    return args, subprocess.Popen(args, cwd=cluster.folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def trial_runs(tracking: str, name: str) -> list:
    client = mlflow.MlflowClient(tracking)
    experiment = client.get_experiment_by_name(name)
    parents = experiment and client.search_runs([experiment.experiment_id], filter_string="tags.`cnnsearch.study` != ''")
    if not parents:
        return []
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")


def epochs_of(tracking: str, run) -> list[int]:
    return sorted(m.step for m in mlflow.MlflowClient(tracking).get_metric_history(run.info.run_id, "val_acc"))


def optuna_states(cluster, name: str) -> list[optuna.trial.TrialState]:
    """The trials of the study's Optuna record in S3, read as cnnsearch writes it: JSON lines in objects
    named by the number of their first record, a compacted object covering the ones it starts before."""
    folder = f"{cluster.bucket}/{name}/optuna.journal"
    logs: list[dict] = []
    for info in sorted(cluster.filesystem.get_file_info(pyarrow.fs.FileSelector(folder)), key=lambda info: info.path):
        if int(Path(info.path).stem) == len(logs):
            with cluster.filesystem.open_input_stream(info.path) as stream:
                logs += [json.loads(line) for line in stream.read().decode().splitlines()]

    class Backend(optuna.storages.journal.BaseJournalBackend):
        def read_logs(self, log_number_from: int) -> list[dict]:
            return logs[log_number_from:]

        def append_logs(self, new: list[dict]) -> None:
            raise AssertionError("read only")

    study = optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(Backend()))
    return [trial.state for trial in study.trials]


def study_state(cluster, name: str) -> dict:
    with cluster.filesystem.open_input_stream(f"{cluster.bucket}/{name}/cnnsearch.json") as stream:
        return json.loads(stream.read())


def test_a_study_spreads_over_two_nodes_records_on_a_server_and_keeps_its_state_in_s3(cluster, tmp_path, cli, monkeypatch):
    _, driver = start(cluster, "spread", "--trials", "6")
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    assert "6/6 trials done (6 completed)" in err and f"s3://{cluster.bucket}/spread/plots/" in out
    assert f"Browse it: {cluster.tracking}/#/experiments" in out

    runs = trial_runs(cluster.tracking, "spread")
    assert len(runs) == 6 and len({run.data.tags["cnnsearch.trial_id"] for run in runs}) == 6
    assert {run.data.tags["cnnsearch.status"] for run in runs} == {"completed"}
    assert all(epochs_of(cluster.tracking, run) == [1, 2] for run in runs)
    assert {run.data.tags["ray.node_id"] for run in runs} == cluster.node_ids  # both nodes trained
    assert {run.data.tags["ray.hostname"] for run in runs} == {socket.gethostname()}
    client = mlflow.MlflowClient(cluster.tracking)
    for run in runs:  # the weights went to the server's artifact store
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == ["checkpoint/weights.pt"]
    assert len(list((cluster.folder / "artifacts").rglob("weights.pt"))) == 6
    # The workers imported the driver's cnnsearch, which reached them through the job's runtime_env.
    assert list((cluster.session / "runtime_resources").rglob("cnnsearch/study/run.py"))
    # The study's own state and pictures are in S3, and its trials' checkpoints are gone from there once recorded.
    assert study_state(cluster, "spread")["finished"] is True
    assert optuna_states(cluster, "spread").count(optuna.trial.TrialState.COMPLETE) == 6
    files = [info.path for info in cluster.filesystem.get_file_info(pyarrow.fs.FileSelector(f"{cluster.bucket}/spread", recursive=True))]
    assert f"{cluster.bucket}/spread/plots/learning_curves.png" in files and not [path for path in files if "/checkpoint_" in path]

    # Elsewhere, with nothing of the study's storage: query, plot, export the best trial's own weights, evaluate.
    monkeypatch.chdir(tmp_path)
    status, out, err = cli("query", "spread", "--rows", "residual.width", "--tracking-uri", cluster.tracking)
    assert status == 0 and "(n=" in out, err
    status, out, err = cli("plot", "spread", "--out", "plots", "--tracking-uri", cluster.tracking)
    assert status == 0 and (tmp_path / "plots" / "learning_curves.png").exists(), err
    status, out, err = cli("export", "spread", "--retrain-epochs", "0", "--formats", "weights", "--force", "--out", "exported",
                           "--tracking-uri", cluster.tracking)
    assert status == 0, err
    meta = json.loads((tmp_path / "exported" / "meta.json").read_text())
    best = max(runs, key=lambda run: run.data.metrics["val_acc"])
    assert meta["accuracies"]["search"]["accuracy"] == best.data.metrics["val_acc"]
    assert meta["trained_on"]["how"] == "the trial's own checkpoint"
    status, out, err = cli("evaluate", "exported", "--json")
    assert status == 0 and json.loads(out)["split"] == "test", err
    status, out, err = cli("ui", "--tracking-uri", cluster.tracking)  # the server is the UI
    assert status == 0 and f"MLflow UI: {cluster.tracking}/#/experiments" in out, err
    assert not (tmp_path / "cnnsearch_runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_study_killed_mid_way_resumes_from_s3_without_a_lost_or_repeated_trial(cluster):
    """SIGKILL the driver once a trial has finished and another has trained an epoch: --resume, from the URI, ends with
    each trial once, the interrupted one gone on from its checkpoint in S3 in its own run."""
    args, driver = start(cluster, "killed", "--trials", "4", subset=512, epochs=3)
    try:
        deadline = time.monotonic() + 240
        while driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            runs = trial_runs(cluster.tracking, "killed")
            finished = {run.info.run_id for run in runs if "cnnsearch.status" in run.data.tags}
            interrupted = {run.info.run_id for run in runs if run.info.run_id not in finished and epochs_of(cluster.tracking, run)}
            if finished and interrupted:
                break
        assert driver.poll() is None, "the study ended before it could be killed"
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert study_state(cluster, "killed")["finished"] is False

    resumed = subprocess.run([*args, "--resume"], cwd=cluster.folder, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    runs = trial_runs(cluster.tracking, "killed")
    assert len(runs) == 4 and finished | interrupted <= {run.info.run_id for run in runs}
    assert len({run.data.tags["cnnsearch.trial_id"] for run in runs}) == 4
    assert {run.data.tags["cnnsearch.status"] for run in runs} == {"completed"}
    assert all(epochs_of(cluster.tracking, run) == [1, 2, 3] for run in runs)  # no epoch lost or trained twice
    assert study_state(cluster, "killed")["finished"] is True
    assert optuna_states(cluster, "killed").count(optuna.trial.TrialState.COMPLETE) == 4


def test_a_local_storage_folder_that_a_node_cannot_see_is_refused_before_anything_is_written(cluster, tmp_path):
    """The driver's storage folder is a mount of its own (a tmpfs in a mount namespace of its own), and each node finds
    an empty folder of its own at that path: refused with one line that names each node and the folder, exit status 2,
    nothing written to the nodes' folder. A folder that every node shares passes, and the study trains."""
    private = tmp_path / "private"
    (private / "study").mkdir(parents=True)
    if subprocess.run(["unshare", "--mount", "mount", "-t", "tmpfs", "tmpfs", str(private)], capture_output=True, check=False).returncode:
        pytest.skip("this machine lets no process mount a filesystem of its own (unshare --mount, then mount)")
    space = cluster.tiny_space(tmp_path, "probed", dataset={"subset": 64}, budget={"epochs": 1}, recipe={"batch_size": 32})
    args = [sys.executable, "-m", "cnnsearch", "run", str(space), "--ray-address", cluster.address, "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}", "--trials", "1", "--scheduler", "none"]
    # The mount is the driver's alone: its own storage folder, made in its tmpfs.
    alone = ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"', str(private)]
    refused = subprocess.run([*alone, *args, "--storage", str(private / "study")], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode == 2, refused.stderr
    (line,) = [line for line in refused.stderr.splitlines() if line.startswith("cnnsearch: error:")]
    assert "Traceback" not in refused.stderr
    assert line.startswith(f"cnnsearch: error: --storage {private / 'study'}: a folder that not every node of the cluster can use"), line
    reason = "a folder of its own there, without the file that the driver wrote into its folder"
    assert all(f"(id {node[:8]}): {reason}" in line for node in cluster.node_ids), line
    assert list((private / "study").iterdir()) == []

    shared = subprocess.run([*args, "--storage", str(tmp_path / "shared")], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert shared.returncode == 0 and "1/1 trials done (1 completed)" in shared.stderr, shared.stderr
    assert not [path for path in (tmp_path / "shared").iterdir() if path.name.startswith(".cnnsearch-probe-")]
