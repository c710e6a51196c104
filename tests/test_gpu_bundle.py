"""benchmarks/gpu_bundle.sh: its archive runs a study where only the GPU machine's packages are installed.

The bundle is built for this Python, as it is for the GPU machine's 3.12. A clean virtual environment is given
only the distributions that benchmarks/gpu_packages.txt lists (torch, torchvision, numpy, ...), linked from this
one rather than installed again (torch's wheels are gigabytes), and the unpacked archive on PYTHONPATH; pip has
no index and, where the system allows a network namespace, the study has no network either, as on that machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from importlib import metadata
from pathlib import Path, PurePath

import mlflow
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MISSING_THERE = ("ray", "optuna", "mlflow", "pydantic")  # the imports that only the bundle may answer


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The bundle for this Python, unpacked; built once (pip's cache makes a rebuild quick)."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        urllib.request.urlopen(f"{index}/ray/", timeout=15).close()
    except OSError as error:
        pytest.skip(f"the package index {index} cannot be reached ({error}): the bundle cannot be built")
    folder = tmp_path_factory.mktemp("bundle")
    archive = folder / "deps.tar.xz"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    # The fastest compression: the test is about what the bundle holds; the 60 MiB limit still holds at it.
    built = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_bundle.sh"), version, str(archive)],
                           env={**os.environ, "PYTHON": sys.executable, "XZ_LEVEL": "0"},
                           capture_output=True, text=True, timeout=900, check=False)
    assert built.returncode == 0, built.stderr
    site = folder / "site"
    site.mkdir()
    subprocess.run(["tar", "-xJf", str(archive), "-C", str(site)], check=True)
    return site


def _gpu_machine_like(folder: Path) -> Path:
    """A virtual environment holding only the distributions of this one that the GPU machine has; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    (site,) = folder.glob("lib/python*/site-packages")
    listed = {_name(line) for line in (REPO / "benchmarks" / "gpu_packages.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    installed = [d for d in metadata.distributions() if d.files]
    entries = {d: {PurePath(f).parts[0] for f in d.files if not str(f).startswith("..")} - {"__pycache__"}
               for d in installed}
    owners = Counter((d.locate_file(""), entry) for d in installed for entry in entries[d])
    for distribution in installed:
        if _name(distribution.metadata["Name"]) not in listed:
            continue
        for entry in entries[distribution]:
            if owners[distribution.locate_file(""), entry] == 1:
                (site / entry).symlink_to(distribution.locate_file(entry))
                continue
            # A namespace folder that several distributions share (google/, nvidia/): this one's parts of it only.
            (site / entry).mkdir(exist_ok=True)
            for part in {PurePath(f).parts[1] for f in distribution.files if PurePath(f).parts[0] == entry}:
                if not (site / entry / part).exists():
                    (site / entry / part).symlink_to(distribution.locate_file(f"{entry}/{part}"))
    return folder / "bin" / "python"


def _offline() -> list[str]:
    """The prefix that runs a command with loopback alone, where the system allows a network namespace; else none."""
    prefix = ["unshare", "--map-root-user", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "offline"]
    if not (shutil.which("unshare") and shutil.which("ip")):
        return []
    return prefix if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0 else []


def _origins(python: Path, environment: dict[str, str], modules: tuple[str, ...]) -> dict[str, str | None]:
    """Where ``python`` would import each of ``modules`` from (None: nowhere), without importing them."""
    where = ("import importlib.util as u, json, sys;"
             "print(json.dumps({m: getattr(u.find_spec(m), 'origin', None) for m in sys.argv[1:]}))")
    answer = subprocess.run([python, "-c", where, *modules], env=environment, capture_output=True, text=True, check=True)
    return json.loads(answer.stdout)


def test_bundle_runs_a_study_where_only_the_gpu_machines_packages_are(bundle, tmp_path, tiny_space):
    """Two trials through Ray Tune, proposed by Optuna, both completed and recorded in MLflow's sqlite store."""
    python = _gpu_machine_like(tmp_path / "venv")
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("PYTHON", "PIP_", "RAY_", "MLFLOW_"))}
    environment |= {"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull, "PYTHONPATH": str(REPO)}
    assert _origins(python, environment, MISSING_THERE) == dict.fromkeys(MISSING_THERE)  # the environment lacks them
    environment["PYTHONPATH"] = f"{bundle}{os.pathsep}{REPO}"
    found = _origins(python, environment, (*MISSING_THERE, "torch"))
    assert all(Path(found[module]).is_relative_to(bundle) for module in MISSING_THERE), found
    assert Path(found["torch"]).is_relative_to(tmp_path / "venv"), found

    space, uri = tiny_space(tmp_path), f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = subprocess.run(
        [*_offline(), python, "-m", "cnnsearch", "run", space, "--dataset", "synthetic", "--subset", "64", "--val-subset", "32",
         "--epochs", "1", "--trials", "2", "--tracking-uri", uri, "--storage", tmp_path / "runs"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600, check=False)
    assert study.returncode == 0, study.stderr[-3000:]
    assert "2/2 trials done (2 completed)" in study.stderr, study.stderr[-3000:]

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.`cnnsearch.study` != ''")
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line)
    for package in ("ray", "optuna", "mlflow"):  # the bundle's, at constraints.txt's pins, and recorded as such
        assert parent.data.params[f"version.{package}"] == pins[package]
    children = f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    trials = client.search_runs([experiment.experiment_id], filter_string=children)
    assert len(trials) == 2
    for trial in trials:
        assert trial.data.tags["cnnsearch.status"] == "completed" and trial.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(trial.info.run_id, "val_acc")] == [1]
