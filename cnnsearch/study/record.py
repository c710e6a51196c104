"""Recording a study in MLflow: its parent run, each trial's run from Tune's events, checkpoint recovery, and the finish.

:class:`Tracker` writes every trial to MLflow as :mod:`.launch`'s Tune callback forwards
its events (a tabular trial whole, as :mod:`.lookup` hands it over), and tells
:mod:`.progress` what to print. The driver keeps each trial's run id and its newest
checkpoint, so an event costs the same at the thousandth trial as at the first; MLflow is read when a session opens the study (:func:`recover`, :func:`earlier_accuracies`,
its finished trials) and when it ends (:func:`finish`), never to handle an epoch. A trial's
checkpoint is a folder of :data:`STATE_FILE`, :data:`CONFIG_FILE` and the weights; each
unfinished trial's config is also in the storage's :data:`TRIALS_FOLDER`, from its start, so
that one interrupted before its first checkpoint goes on in its own run. A trial's folder is
tagged relative to the storage's root, so the study can move. Imports neither Ray nor Optuna.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..analysis import completed, pareto
from ..config import Arch
from ..experiment import Experiment
from ..names import SCORED, WEIGHTS_FILE, Metrics, Params, Report, Status, Tags
from ..costs import latency_machine
from ..data import held_out_test_fraction
from ..space import Fixed, Space
from ..storage import Storage
from ..tracking import Recorder
from .progress import Progress
from .reject import level_param
from .settings import Plan, check_version, versioned

__all__ = [
    "CONFIG_FILE", "STATE_FILE", "TRIALS_FOLDER", "StudyResult", "Tracker", "design_tags", "earlier_accuracies", "finish", "last_checkpoint",
    "open_study", "recover", "study_tags", "trial_document",
]

STATE_FILE = "train_state.pt"  # in each Tune checkpoint: what train() needs to go on after the epoch
CONFIG_FILE = "trial.json"  # in each Tune checkpoint: the trial's config, to resume it in a later session
TRIALS_FOLDER = "trials"  # of the storage: RUN_ID.json, each unfinished trial's config
RESUME_KEYS = ("resume", "run_id", "earlier")  # what a resumed trial's config adds: its state, its run, its accuracies so far


@dataclass(frozen=True)
class StudyResult:
    """A finished study: where MLflow holds it and its trials, best first.

    Each trial is a dict: trial_id, run_id (MLflow), status, val_acc, params, macs, flops, latency_ms, knobs.
    ``rejected`` counts the proposals turned away before training (over the limits or the
    memory, or unable to build or to train at the batch size), in every session.
    ``front``: with several objectives, the Pareto front of the completed trials (see
    :func:`cnnsearch.analysis.pareto`); None with one.
    """

    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    trials: list[dict[str, Any]]
    rejected: int = 0
    front: pd.DataFrame | None = None
    tabular: str | None = None  # the table its accuracies were looked up in, if they were not trained


def design_tags(experiment: Experiment) -> dict[str, str]:
    """How the parent run of an ablation names its design and, one factor at a time, its baseline."""
    tags = {Tags.ABLATION: experiment.name, Tags.DESIGN: experiment.design}
    if experiment.baseline:
        # str(): what MLflow makes of a param, so a query can find the baseline among the trials' params.
        tags[Tags.BASELINE] = json.dumps({name: str(level_param(level)) for name, level in experiment.baseline.items()})
    return tags


def study_tags(plan: Plan) -> dict[str, str]:
    """What every trial run is tagged with: what measured its latency, an ablation's design, and a tabular study's table."""
    tags = design_tags(plan.experiment) if plan.experiment else {}
    if plan.table is not None:
        return tags | {Tags.TABULAR: plan.table.name, Tags.LATENCY_MACHINE: f"the {plan.table.name} table's: NAS-Bench-201 measured it"}
    return tags | {Tags.LATENCY_MACHINE: latency_machine(plan.settings["latency_device"])}


def _split_params(plan: Plan) -> dict[str, Any]:
    """How the study splits its data, as its parent run's params: what export splits it by again.

    A tabular study reads no image: it records the split that its space asks for, without
    the digests of the images it would hold, and the validation images of its table's accuracies.
    """
    if plan.split is not None:
        return plan.split.describe()
    dataset = plan.space.dataset
    return {"val_fraction": dataset.val_fraction, "test_fraction": held_out_test_fraction(dataset.name, dataset.test_fraction),
            "seed": dataset.split_seed, "subset": dataset.subset, "val_subset": dataset.val_subset,
            "val_images": plan.table.data.val_images}


def open_study(plan: Plan, tags: dict[str, str]) -> Recorder:
    """The study's parent run, created or reopened: the first thing the study writes. The parent run also holds the objectives.
    The MLflow UI's view of its trials shows their searched knobs (an ablation's: its factors) as columns."""
    space, experiment, settings = plan.space, plan.experiment, plan.settings
    knobs = list(experiment.factors) if experiment else [name for name, knob in space.knobs().items() if not isinstance(knob, Fixed)]
    recorder = Recorder.open(
        plan.client,
        experiment=plan.experiment_name,
        study=plan.options.name,
        space_hash=plan.digest,
        tags=tags | {Tags.OBJECTIVES: json.dumps([objective.model_dump() for objective in space.objectives])},
        parent_run_id=plan.state["parent_run_id"] if plan.state else None,
        params={
            Params.SEED: settings["seed"],
            "sampler": settings["sampler"],
            "scheduler": settings["scheduler"],
            "dataset": space.dataset.name,
            "epochs": space.budget.epochs,
            "subset": space.dataset.subset,
            Params.RECIPE: json.dumps(space.recipe.model_dump()),
            "budget": json.dumps(space.budget.model_dump()),
            **{f"split.{k}": v for k, v in _split_params(plan).items()},
        },
        files=[space.source] + ([experiment.source] if experiment else []),
        objectives=space.objectives,
        knobs=knobs,
    )
    if experiment is not None:
        recorder.discard_failed()  # a failed cell runs again (a diverged one stands); a failed search trial stays a result of the search
    return recorder


def trial_document(config: dict[str, Any]) -> str:
    """A trial's config as its :data:`CONFIG_FILE` holds it: without what a resumed trial adds, with the state version."""
    return json.dumps(versioned({key: value for key, value in config.items() if key not in RESUME_KEYS}))


def _saved_config(storage: Storage, run_id: str) -> dict[str, Any] | None:
    """The config that trial run ``run_id`` saved when it started, if it lived to save it."""
    path = storage.path(TRIALS_FOLDER, f"{run_id}.json")
    return check_version(json.loads(storage.read_text(path)), storage.describe(path)) if storage.exists(path) else None


def last_checkpoint(storage: Storage, trial_dir: str | None) -> str | None:
    """The newest complete checkpoint that a trial saved in ``trial_dir`` (relative to the storage's root), if any."""
    trial_dir = storage.path(trial_dir) if trial_dir else None
    folders = [name for name in reversed(storage.listdir(trial_dir)) if name.startswith("checkpoint_")] if trial_dir else []
    # A kill while Tune copied the newest may have left it without one of its files.
    paths = (posixpath.join(trial_dir, name) for name in folders)
    return next((path for path in paths if {STATE_FILE, CONFIG_FILE, WEIGHTS_FILE} <= set(storage.listdir(path))), None)


def recover(recorder: Recorder, storage: Storage) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The trials that an earlier session left unfinished: those to go on from their last checkpoint, and those that had ended.

    A trial with no checkpoint goes on from the start in its own run; the epochs that a
    checkpoint holds and MLflow lacks are recorded; a trial that had used its budget is
    recorded as completed. Only a run that a kill left before its trial began (its config
    not yet saved, nothing trained) is discarded. Returns the configs of the resumed and of
    the ended trials.

    Raises:
        ConfigError: a checkpoint's files are of another state version.
    """
    resumed, ended = [], []
    for run_id, trial_dir in recorder.unfinished().items():
        checkpoint = last_checkpoint(storage, trial_dir)
        if checkpoint is None:
            config = _saved_config(storage, run_id)
            if config is None:
                recorder.discard(run_id)
            else:
                resumed.append(config | {"run_id": run_id, "earlier": {}})
            continue
        config_file, state_file = posixpath.join(checkpoint, CONFIG_FILE), posixpath.join(checkpoint, STATE_FILE)
        config = check_version(json.loads(storage.read_text(config_file)), storage.describe(config_file))
        state = torch.load(io.BytesIO(storage.read_bytes(state_file)), weights_only=True, map_location="cpu")
        history = check_version(state, storage.describe(state_file))["history"]
        for epoch in history[recorder.logged_epochs(run_id):]:  # saved, but the driver died before recording them
            recorder.log_epoch(run_id, epoch, epoch=epoch["epoch"])
        config |= {"run_id": run_id, "earlier": {epoch["epoch"]: epoch["val_acc"] for epoch in history}}
        if history[-1]["budget_spent"]:  # interrupted after its last epoch, before it was recorded as ended
            with storage.local_file(posixpath.join(checkpoint, WEIGHTS_FILE)) as weights:
                recorder.log_weights(run_id, weights)
            recorder.finish_trial(run_id, Status.COMPLETED)
            for path in (checkpoint, storage.path(TRIALS_FOLDER, f"{run_id}.json")):
                storage.delete(path)
            ended.append(config)
        else:
            resumed.append(config | {"resume": state_file})
    return resumed, ended


def earlier_accuracies(recorder: Recorder, done: list[dict[str, Any]]) -> list[dict[int, float]]:
    """The per-epoch accuracies of the study's scored trials, for the scheduler to judge new ones against."""
    return [recorder.accuracies(row["run_id"]) for row in done if row["status"] in SCORED]


def _error_of(trial: Any) -> str:
    """The last line of a Tune trial's error file."""
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        text = Path(path).read_text().strip()
        return text.splitlines()[-1] if text else Status.FAILED
    return Status.FAILED


class Tracker:
    """Writes every trial to MLflow, from the Tune events that :mod:`.launch`'s callback forwards, and tells ``progress`` of each."""

    def __init__(self, recorder: Recorder, storage: Storage, space: Space, tags: dict[str, str], progress: Progress) -> None:
        self.recorder, self.storage, self.space, self.tags, self.progress = recorder, storage, space, tags, progress
        self.runs: dict[str, str] = {}  # Tune trial id -> MLflow run id
        self.checkpoints: dict[str, Any] = {}  # Tune trial id -> its newest checkpoint
        self.nodes: dict[str, dict[str, str]] = {}  # Tune trial id -> the node it runs on, as its run's tags say

    def start(self, trial: Any) -> None:
        if trial.trial_id in self.runs:
            return  # a retry after its machine failed: same trial, same run
        run_id = trial.config.get("run_id")  # a resumed trial goes on in its own run
        if run_id is None:
            run_id = self._new_run(trial.trial_id, trial.config)
            self.storage.write_text(self.storage.path(TRIALS_FOLDER, f"{run_id}.json"), trial_document(trial.config))
            self.recorder.set_trial_dir(run_id, self._relative(trial.path))  # where its checkpoints will be
        else:
            self.recorder.resume_trial(run_id)
        self.runs[trial.trial_id] = run_id
        self.progress.started_trial(trial.trial_id)

    def _relative(self, path: str) -> str:
        """A path of the storage, relative to its root: the study's folder can move."""
        return posixpath.relpath(path, self.storage.root)

    def _new_run(self, trial_id: str, config: dict[str, Any]) -> str:
        run_id = self.recorder.start_trial(trial_id, config["record"], space_hash=self.space.digest, tags=self._trial_tags(config))
        self.recorder.log_arch(run_id, Arch.from_dict(config["arch"]), config["cost"])
        self.recorder.log_recipe(run_id, config["recipe"])
        return run_id

    def looked_up(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        """A tabular trial, whole: its run, as a trained trial's, with the ``result`` from its table at the table's epoch."""
        self.recorder.record_trial(
            trial_id, config["record"], space_hash=self.space.digest, tags=self._trial_tags(config), arch=Arch.from_dict(config["arch"]),
            cost=config["cost"], recipe=config["recipe"], result={key: result[key] for key in (Metrics.VAL_ACC, Metrics.TRAIN_SECONDS)},
            step=result[Report.EPOCH],
        )
        self.progress.finished(trial_id, Status.COMPLETED, "", result[Metrics.VAL_ACC], config["record"])

    def _trial_tags(self, config: dict[str, Any]) -> dict[str, str]:
        """What a trial's run is tagged with besides its architecture: the study's tags, and an ablation's cell."""
        return self.tags | ({Tags.CELL: config["cell"]} if config["cell"] else {})

    def result(self, trial: Any, result: dict) -> None:
        node = {tag: result[tag] for tag in (Tags.RAY_NODE, Tags.RAY_HOSTNAME)}
        if self.nodes.get(trial.trial_id) != node:  # its first result, or its first on another node after a lost worker
            self.recorder.set_tags(self.runs[trial.trial_id], node)
            self.nodes[trial.trial_id] = node
        if Report.FAILED not in result:
            self.recorder.log_epoch(self.runs[trial.trial_id], result, epoch=int(result[Report.EPOCH]))
            self.progress.epoch(trial.trial_id, result)

    def recovered(self, trial: Any) -> None:
        self.progress.retried(trial.trial_id, _error_of(trial))

    def checkpoint(self, trial: Any, checkpoint: Any) -> None:
        if trial.trial_id not in self.checkpoints and trial.config.get("run_id"):
            # A resumed trial's checkpoints are here from its first new one on; until then the
            # ones it was resumed from are those to go on from.
            self.recorder.set_trial_dir(self.runs[trial.trial_id], self._relative(trial.path))
        self.checkpoints[trial.trial_id] = checkpoint  # uploaded once, when the trial ends

    def complete(self, trial: Any, stopping: bool) -> None:
        """A trial's end; one that Ctrl-C (``stopping``) ended before its budget stays unfinished, to go on when the study resumes."""
        last = trial.last_result or {}
        if Report.FAILED in last:
            self._finish(trial, Status.DIVERGED if last.get(Report.DIVERGED) else Status.FAILED, last[Report.FAILED])
        elif stopping and not last.get(Report.BUDGET_SPENT):
            # Left unfinished in MLflow: a resumed study goes on from the checkpoint of its last epoch.
            self.recorder.note_interrupted(self.runs.pop(trial.trial_id))
            self.checkpoints.pop(trial.trial_id, None)
            self.progress.interrupted_trial(trial.trial_id)
        elif last.get(Report.BUDGET_SPENT):
            self._finish(trial, Status.COMPLETED, val_acc=last[Metrics.VAL_ACC])
        else:
            self._finish(trial, Status.STOPPED_EARLY, "stopped by the scheduler")

    def error(self, trial: Any) -> None:
        retries = f" (its machine failed {trial.num_failures} times)" if trial.num_failures > 1 else ""
        self._finish(trial, Status.FAILED, _error_of(trial) + retries)

    def _finish(self, trial: Any, status: str, reason: str = "", val_acc: float | None = None) -> None:
        run_id = self.runs.pop(trial.trial_id, None) or self._new_run(trial.trial_id, trial.config)  # none if its worker never started
        self.nodes.pop(trial.trial_id, None)
        checkpoint = self.checkpoints.pop(trial.trial_id, None)
        if status in SCORED and checkpoint is not None:
            # The last epoch's weights, so that `cnnsearch export --retrain-epochs 0` can use them:
            # the one file, not the training state beside it.
            with self.storage.local_file(posixpath.join(checkpoint.path, WEIGHTS_FILE)) as weights:
                self.recorder.log_weights(run_id, weights)
        self.recorder.finish_trial(run_id, status, reason)
        # Ended, a trial is never resumed: its training state (model and optimizer) need not stay.
        resumed_from = [posixpath.dirname(trial.config["resume"])] if trial.config.get("resume") else []
        checkpoints = [posixpath.join(trial.path, name) for name in self.storage.listdir(trial.path) if name.startswith("checkpoint_")]
        for path in [*checkpoints, *resumed_from, self.storage.path(TRIALS_FOLDER, f"{run_id}.json")]:
            self.storage.delete(path)
        self.progress.finished(trial.trial_id, status, reason, val_acc, trial.config["record"])

    def interrupt_running(self) -> None:
        """The second Ctrl-C stopped the running trials where they were: each stays unfinished, to go on when the study resumes."""
        for run_id in self.runs.values():
            self.recorder.note_interrupted(run_id)
        self.progress.interrupted += len(self.runs)
        self.runs.clear()


def finish(plan: Plan, recorder: Recorder, rejected: list[dict[str, Any]], passed_over: list[dict[str, Any]] = ()) -> StudyResult:
    """Write the study's summary (its trials, best first, the ``rejected`` proposals, those a prefilter ``passed_over``,
    the Pareto front); the driver marks it finished in its storage after that."""
    rows = recorder.trials()
    table = [{key: value for key, value in row.items() if key != "knobs"} | row["knobs"] for row in rows]
    best = next((row for row in rows if row["status"] == Status.COMPLETED), None)
    front = pareto(completed(recorder.record()), plan.space.objectives) if len(plan.space.objectives) > 1 else None
    recorder.finish_study(table, best, rejected, front, passed_over)
    return StudyResult(plan.options.name, plan.tracking_uri, recorder.experiment_id, recorder.parent_run_id, rows, len(rejected), front,
                       plan.settings["tabular"])
