"""`cnnsearch export` and `evaluate` say what they are doing: each phase as a line on stderr, the rate
at which the model ran, and the precision they measure in and why. On a study written through
tracking (no Ray, no training), whose one trial's untrained checkpoint is exported as it is."""

from __future__ import annotations

import json
import re

import mlflow
import pytest
import torch

from cnnsearch.config import Recipe
from cnnsearch.costs import profile
from cnnsearch.data import load_dataset, split_dataset
from cnnsearch.model import build_model
from cnnsearch.names import Metrics, Params, Status
from cnnsearch.space import Budget, load_space
from cnnsearch.tracking import Recorder
from cnnsearch.train import step

RATE = r"200 test images in [\d.,]+ s: [\d,]+ img/s"  # synthetic's 2,000 images hold 200 out for the test split


STUDIES = {"bf16": "bf16", "fp32": "fp32", "unrecorded": None}  # study name: the precision its trial recorded


def record_study(uri: str, folder, name: str, arch, precision: str | None) -> None:
    """Study ``name`` as a search records it: its parent run's data set, split, recipe and budget, and one completed
    trial with its architecture, checkpoint and, unless None, the precision it trained in."""
    split = split_dataset(load_dataset("synthetic").labels, val_fraction=0.1, test_fraction=0.1, seed=0, subset=256)
    params = {"dataset": "synthetic", "epochs": 1, Params.RECIPE: Recipe().model_dump_json(), "budget": Budget(epochs=1).model_dump_json(),
              **{f"split.{key}": value for key, value in split.describe().items()}}
    recorder = Recorder.open(mlflow.MlflowClient(uri), experiment=name, study=name, space_hash="h", params=params)
    run_id = recorder.start_trial("0", {"seed": 0}, space_hash="h")
    recorder.log_arch(run_id, arch, profile(arch).to_dict())
    torch.save(build_model(arch).state_dict(), folder / "weights.pt")
    recorder.log_weights(run_id, folder / "weights.pt")
    metrics = {"val_acc": 0.9, "val_loss": 1.0, "train_loss": 1.0, "lr": 0.1}
    if precision is not None:
        metrics |= {Metrics.PEAK_LR: 0.1, Params.PRECISION: precision}
    recorder.log_epoch(run_id, metrics, epoch=1)
    recorder.finish_trial(run_id, Status.COMPLETED)


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_space):
    """The tracking URI of STUDIES, one store for all: creating one costs seconds."""
    folder = tmp_path_factory.mktemp("studies")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    arch = load_space(tiny_space(folder)).sample_random(0)
    for name, precision in STUDIES.items():
        record_study(uri, folder, name, arch, precision)
    return uri


@pytest.fixture
def exported(store, tmp_path, cli, monkeypatch):
    """A function that exports a study of STUDIES on a CPU with or without native bf16; returns (the export folder, its stderr)."""

    def export(study: str, native_bf16: bool) -> tuple:
        monkeypatch.setattr(step, "_cpu_has_native_bf16", lambda: native_bf16)
        out = tmp_path / "export"
        status, _, err = cli("export", study, "--retrain-epochs", "0", "--formats", "weights", "--out", out, "--tracking-uri", store)
        assert status == 0, err
        return out, err

    return export


def test_export_says_each_phase_the_rate_and_the_precision_it_measures_in(exported):
    out, err = exported("bf16", native_bf16=True)
    phases = ["reading study 'bf16'", "1 candidate trial, the best trial-0 at 90.00%; loading synthetic",
              "loading the checkpoint of trial-0", "reading the test images",
              "measuring in bf16, the autocast trial-0 trained and validated in; the exported graphs compute in fp32, whose figure may differ",
              "evaluating on 200 test images in bf16", "evaluating on 180 validation images in bf16",
              "evaluating on 200 test images in fp32", "writing weights.pt"]
    positions = [err.find(phase) for phase in phases]
    assert -1 not in positions and positions == sorted(positions), err
    assert len(re.findall(RATE, err)) == 2, err  # in bf16, then in fp32
    meta = json.loads((out / "meta.json").read_text())
    accuracies = meta["accuracies"]
    assert meta["trained_precision"] == "bf16" and accuracies["test"]["precision"] == accuracies["val"]["precision"] == "bf16"
    assert accuracies["test_fp32"]["precision"] == "fp32" and accuracies["test_fp32"]["images"] == 200
    assert accuracies["search"]["precision"] == "bf16"


@pytest.mark.parametrize("study, native_bf16, why", [
    ("bf16", False, "trial-0 trained in bf16, which this CPU does not compute natively"),
    ("unrecorded", True, "trial-0 recorded no precision of its own"),
    ("fp32", True, "the precision trial-0 trained in and the exported graphs compute in"),
])
def test_export_measures_in_fp32_alone_where_it_cannot_measure_in_the_trials_precision(exported, study, native_bf16, why):
    out, err = exported(study, native_bf16)
    assert "measuring in fp32, " in err and why in err, err
    assert len(re.findall(RATE, err)) == 1 and "in bf16" not in err.replace("trained in bf16", ""), err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["trained_precision"] == STUDIES[study] and meta["accuracies"]["test"]["precision"] == "fp32"
    assert "test_fp32" not in meta["accuracies"]


def test_evaluate_says_its_phases_and_rate_and_measures_in_the_exports_precision(exported, cli):
    out, _ = exported("bf16", native_bf16=True)
    accuracies = json.loads((out / "meta.json").read_text())["accuracies"]
    status, stdout, err = cli("evaluate", out)
    assert status == 0, err
    assert "loading synthetic" in err and "measuring in bf16, the autocast the model trained and validated in" in err, err
    assert "--precision fp32 measures it" in err and len(re.findall(RATE, err)) == 1, err
    assert f"recorded at export: {accuracies['test']['accuracy']:.2%}" in stdout and " bf16 " in stdout
    status, stdout, err = cli("evaluate", out, "--precision", "fp32", "--json")
    assert status == 0, err
    result = json.loads(stdout)
    assert result["precision"] == "fp32" and result["recorded"] == accuracies["test_fp32"]["accuracy"]
    assert "measuring in fp32, as asked; the model trained in bf16" in err and len(re.findall(RATE, err)) == 1, err
