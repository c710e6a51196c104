"""What `run` and `ablate` print and attach after a study: the study they ran, read by its parent
run, even where a newer study has the same name. The study itself is synthetic (written through
tracking as an ablation writes it) and run_study is replaced: no Ray."""

from __future__ import annotations

import mlflow
from optuna.trial import FixedTrial

import cnnsearch.study
from cnnsearch.costs import profile
from cnnsearch.experiment import load_experiment
from cnnsearch.names import Status, Tags
from cnnsearch.study import StudyResult
from cnnsearch.study.record import design_tags
from cnnsearch.tracking import Recorder

EXPERIMENT = """name: twice
space: tiny.yaml
base: {stem.channels: 8}
design: full_factorial
replicates: 2
factors:
  residual.width: [8, 16]
  residual.num_blocks: [1, 2]
"""


def record_ablation(experiment, uri: str, accuracy: float) -> str:
    """One study of ``experiment`` in MLflow whose every trial scored about ``accuracy``; returns its parent run id."""
    tags = design_tags(experiment)
    recorder = Recorder.open(mlflow.MlflowClient(uri), experiment=experiment.name, study=experiment.name, space_hash=experiment.digest,
                             tags=tags, files=[experiment.space.source, experiment.source])
    for cell in experiment.cells:
        run_id = recorder.start_trial(str(cell.index), cell.knobs | {"replicate": cell.replicate}, space_hash=experiment.digest,
                                      tags=tags | {Tags.CELL: cell.key})
        arch = experiment.space.sample(FixedTrial(cell.knobs))
        recorder.log_arch(run_id, arch, profile(arch).to_dict())
        value = accuracy + 0.01 * cell.replicate + 0.001 * cell.index
        recorder.log_epoch(run_id, {"val_acc": value, "val_loss": 1 - value, "train_loss": 1.0, "lr": 0.1}, epoch=1)
        recorder.finish_trial(run_id, Status.COMPLETED)
    return recorder.parent_run_id


def test_ablate_summarizes_the_study_it_ran_not_a_newer_one_of_its_name(tmp_path, tiny_space, monkeypatch, cli):
    tiny_space(tmp_path, residual={"num_blocks": [1, 2], "width": [8, 16]})
    (tmp_path / "twice.yaml").write_text(EXPERIMENT)
    experiment = load_experiment(tmp_path / "twice.yaml")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    older = record_ablation(experiment, uri, 0.30)
    newer = record_ablation(experiment, uri, 0.90)  # started later, with the same name: find_study's pick
    client = mlflow.MlflowClient(uri)

    def resumed_older(space, options, experiment=None, started=lambda: None, summarize=lambda result: None):  # as a resume of the older study ends
        result = StudyResult(experiment.name, uri, client.get_run(older).info.experiment_id, older, trials=[{}] * len(experiment.cells))
        summarize(result)
        return result

    monkeypatch.setattr(cnnsearch.study, "run_study", resumed_older)
    status, out, err = cli("ablate", tmp_path / "twice.yaml", "--storage", tmp_path / "runs", "--tracking-uri", uri)
    assert status == 0, err
    assert "30." in out and "90." not in out  # the table is the older study's
    assert {f.path for f in client.list_artifacts(older, "analysis")} >= {"analysis/anova.csv", "analysis/anova.txt"}
    assert client.list_artifacts(older, "plots")
    assert not client.list_artifacts(newer, "analysis") and not client.list_artifacts(newer, "plots")


def test_run_draws_and_attaches_the_pictures_of_the_study_it_ran(tmp_path, tiny_space, monkeypatch, cli):
    tiny_space(tmp_path, residual={"num_blocks": [1, 2], "width": [8, 16]})
    (tmp_path / "twice.yaml").write_text(EXPERIMENT)
    experiment = load_experiment(tmp_path / "twice.yaml")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    older, newer = record_ablation(experiment, uri, 0.30), record_ablation(experiment, uri, 0.90)
    client = mlflow.MlflowClient(uri)

    def resumed_older(space, options, experiment=None, started=lambda: None, summarize=lambda result: None):
        result = StudyResult("twice", uri, client.get_run(older).info.experiment_id, older, trials=[])
        summarize(result)
        return result

    monkeypatch.setattr(cnnsearch.study, "run_study", resumed_older)
    status, _, err = cli("run", tmp_path / "tiny.yaml", "--name", "twice", "--storage", tmp_path / "runs", "--tracking-uri", uri)
    assert status == 0, err
    assert client.list_artifacts(older, "plots") and not client.list_artifacts(newer, "plots")
