"""A study: Optuna proposes, Ray Tune schedules and stops early, MLflow records.

The only module that imports ray and that drives optuna. The driver turns each
proposal into an architecture fitted to the data, checks it against the limits and
measures its latency; a trial is a plain function of that architecture. With several
objectives Optuna is told each, and no trial is stopped early. The data set is put in Ray's object
store once and shared by every trial; the driver alone writes to MLflow, keeping the
run ids and counts it needs so each event costs the same at any study size. The study's
state, Optuna's record and Ray Tune's checkpoints live in its storage (a folder, or a URI
that every node of a cluster reaches: :mod:`cnnsearch.storage`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import json
import logging
import math
import os
import platform
import posixpath
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
import torch
from ray import tune
from ray.tune import PlacementGroupFactory
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from .analysis import completed, pareto
from .config import Arch, ConfigError, Interrupted, Recipe
from .data import held_out_test_fraction, load_dataset, split_dataset
from .experiment import Cell, Experiment
from .costs import WORKER_BASE, cheapest, latency, latency_machine, over_limits, profile, training_memory
from .space import Fixed, Objective, Space
from .storage import RecordLog, Storage
from .names import DEFAULT_TRACKING_URI, SCORED, WEIGHTS_FILE, Metrics, Params, Status, Tags
from .tracking import Recorder, connect, trial_name
from .train import EpochReport, data_shape, fit_to_data, resolve_precision, train

__all__ = ["RunOptions", "StudyResult", "concurrency", "rejected_proposals", "run_study", "searched_knobs", "with_overrides"]

_STATE_FILE = "cnnsearch.json"
_RETRIES = 2  # of a trial whose worker was lost


@dataclass(frozen=True)
class RunOptions:
    """How to run a study; every field has a command-line flag of the same name."""

    name: str
    storage: str | Path  # a folder, or a URI that pyarrow.fs opens (cnnsearch.storage)
    resume: bool = False
    # Left as None, these take the value a resumed study was started with, else the default.
    trials: int | None = None  # default: the space's search.trials
    sampler: str | None = None  # default: the space's search.sampler, else tpe, or nsga2 for several objectives
    scheduler: str | None = None  # default: asha
    seed: int | None = None  # default: 0
    dataset: str | None = None  # default: the space's dataset.name
    epochs: int | None = None  # default: the space's budget.epochs
    subset: int | None = None  # default: the space's dataset.subset
    val_fraction: float | None = None  # default: the space's dataset.val_fraction
    test_fraction: float | None = None  # default: the space's dataset.test_fraction
    val_subset: int | None = None  # default: the space's dataset.val_subset
    lr: float | str | None = None  # default: the space's recipe.lr ("auto" runs a range test per trial)
    batch_size: int | None = None  # default: the space's recipe.batch_size
    precision: str | None = None  # default: the space's recipe.precision
    compile: bool | None = None  # default: the space's recipe.compile
    latency_device: str | None = None  # default: cpu; what measures each trial's latency_ms (cnnsearch.costs.latency)
    max_concurrent: int | None = None  # default: as many as the CPUs allow
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    ray_address: str | None = None
    experiment: str | None = None  # default: the space's name
    tracking_uri: str | None = None  # default: a resumed study's, else sqlite:///mlflow.db
    verbose: bool = False
    cache_dir: str | None = None
    data_dir: str | None = None


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


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid without its stop signal, which only Study.optimize can take: Tune runs this study, and --trials bounds it."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState, values: Any) -> None:
        pass


def _sampler(name: str, space: Space, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # Optuna's default of 10 random startup trials would leave a short search purely random;
        # constant_liar keeps concurrent trials from being proposed the same point.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, trials // 4)), constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return _Grid(space.grid(), seed=seed)
    # Optuna's population of 50 would leave a study of fewer trials one random generation.
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=min(50, max(4, trials // 4)))


_REJECTED = "cnnsearch.rejected"  # an Optuna trial's user attribute: why the driver did not train its proposal


@dataclass(frozen=True)
class _Target:
    """What each proposal is fitted to and checked against before it becomes a trial."""

    shape: dict[str, int]  # of the data: classes, image size, channels
    memory: float | None  # the largest Ray node's memory resource, in bytes; None when trials train on GPUs
    precision: str  # recipe.precision as a CPU trial resolves it: its activations' size follows it
    latency_device: str  # what measures latency_ms: cpu, cuda or onnxruntime


def _fitted(space: Space, draw: Any, target: _Target) -> tuple[Arch, Recipe, dict[str, int]]:
    """The architecture and recipe that ``draw`` (an Optuna trial or FixedTrial) samples from the space, the architecture fitted to the data, and its costs.

    Raises:
        ConfigError: it cannot be built or cannot train at the recipe's batch size, it is
            over the space's limits, or a trial of it needs more memory than any node has.
    """
    arch = fit_to_data(space.sample(draw), target.shape)
    recipe = space.sample_recipe(draw)
    try:
        cost = profile(arch)  # on the meta device: nothing is allocated
    except (RuntimeError, ValueError) as error:  # e.g. a feature map shrunk to nothing
        raise ConfigError(f"cannot be built: {str(error).strip().splitlines()[0]}") from None
    violation = over_limits(space.limits, cost)
    if violation:
        raise ConfigError(violation)
    # A training forward on the meta device: an architecture that cannot train at this batch
    # size is rejected here rather than failed in a worker.
    estimate = training_memory(arch, recipe.batch_size, target.precision).total
    # On a GPU the activations live in its memory; the host keeps a worker's base.
    memory = WORKER_BASE if target.memory is None else estimate
    if target.memory is not None and memory > target.memory:
        raise ConfigError(
            f"a trial needs about {memory / 2**30:.1f} GiB of memory at batch {recipe.batch_size}, more than the "
            f"{target.memory / 2**30:.1f} GiB of the largest Ray node; lower recipe.batch_size or narrow the space"
        )
    try:
        # Here, not in the trial: one machine measures every trial, and the value is known
        # before training, as MACs are, to the sampler and to a resumed trial's config.
        milliseconds = latency(arch, target.latency_device)
    except Exception as error:  # e.g. an operation the ONNX exporter lacks: the network cannot run there
        raise ConfigError(f"its latency cannot be measured on {target.latency_device}: {str(error).strip().splitlines()[0]}") from None
    return arch, recipe, {Metrics.PARAMS: cost.params, Metrics.MACS: cost.macs, Metrics.FLOPS: cost.flops, Metrics.LATENCY: milliseconds,
                  Metrics.MEMORY_ESTIMATE: memory / 2**20}


# Tune reuses a finished trial's worker only for a trial that asks for exactly the same
# resources: reservations rounded up to this grain keep workers alive across trials whose
# estimates differ by a few MiB (a fresh worker costs about 2 s).
_MEMORY_GRAIN = 256 * 2**20


def _reservation(config: dict[str, Any]) -> int:
    """The bytes of memory a trial reserves in Ray: its estimate rounded up to the grain."""
    estimate = config["cost"].get(Metrics.MEMORY_ESTIMATE, WORKER_BASE / 2**20) * 2**20
    return math.ceil(estimate / _MEMORY_GRAIN) * _MEMORY_GRAIN


def _objective_values(objectives: tuple[Objective, ...], val_acc: float, cost: dict[str, float]) -> list[float]:
    """What Optuna is told of a finished trial: each objective's value, the costs exactly as the driver measured them."""
    return [val_acc if objective.metric == Metrics.VAL_ACC else cost[objective.metric] for objective in objectives]


def _trial_config(arch: Arch, recipe: Recipe, cost: dict[str, int], record: dict[str, Any], seed: int,
                  cell: str | None = None) -> dict[str, Any]:
    """What a Tune trial receives: the architecture and recipe to train, and what the driver records of it (the seed among it)."""
    return {"arch": arch.to_dict(), "recipe": recipe.model_dump(mode="json"), "cost": cost, "record": record | {"seed": seed}, "cell": cell}


_STATE = "train_state.pt"  # in each Tune checkpoint: what train() needs to go on after the epoch
_CONFIG = "trial.json"  # in each Tune checkpoint: the trial's config, to resume it in a later session
_RESUME_KEYS = ("resume", "run_id", "earlier")  # what a resumed trial's config adds: its state, its run, its accuracies so far


def _peak_memory_mib() -> float:
    """This process's peak resident memory since :func:`_release_memory` (Linux), else since it started."""
    try:
        status = Path("/proc/self/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _release_memory() -> None:
    """Start a trial in a reused worker with the memory of a fresh one, and its peak counted afresh.

    glibc keeps the heap that an earlier trial freed; measured, a DenseNet trial in a reused
    worker peaked 46% above the same trial in a new one. ``malloc_trim`` hands it back.
    Linux resets the peak (VmHWM) on request.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _trial(config: dict[str, Any], *, space: Space, data: Any, split: Any, threads: int, device: str, storage: Storage) -> None:
    """One Ray Tune trial: train the architecture the driver proposed and checked, or go on with an interrupted one.

    A trial whose own code fails (an error, a diverging loss) reports ``failed`` and ends: Tune's
    retries are for trials whose worker was lost, and a retried trial goes on from its checkpoint.
    Every report says on which node and host the trial runs.
    """
    torch.set_num_threads(threads)
    _release_memory()
    arch = Arch.from_dict(config["arch"])
    node = {Tags.RAY_NODE: ray.get_runtime_context().get_node_id(), Tags.RAY_HOSTNAME: platform.node()}
    retried = tune.get_checkpoint()
    if retried is not None:
        with retried.as_directory() as saved:
            resume = torch.load(Path(saved) / _STATE, weights_only=True)
    elif config.get("resume"):  # read from the study's storage, wherever this node is
        resume = torch.load(io.BytesIO(storage.read_bytes(config["resume"])), weights_only=True)
    else:
        resume = None
    folder = Path(tempfile.mkdtemp(prefix="cnnsearch-checkpoint-"))
    (folder / _CONFIG).write_text(json.dumps({key: value for key, value in config.items() if key not in _RESUME_KEYS}))
    epochs = resume["epoch"] if resume else 0

    def save(state: dict[str, Any], epoch: EpochReport) -> None:
        torch.save(state, folder / _STATE)
        torch.save({key: value.detach().cpu() for key, value in state["model"].items()}, folder / WEIGHTS_FILE)

    def report(epoch: EpochReport) -> None:
        nonlocal epochs
        epochs = epoch.epoch
        metrics = {key: getattr(epoch, key) for key in Metrics.PER_EPOCH}
        setup = {Metrics.PEAK_LR: epoch.peak_lr, Params.PRECISION: epoch.precision, Metrics.PEAK_RSS: _peak_memory_mib(),
                 Metrics.COMPILE_SECONDS: epoch.compile_seconds}
        # Tune copies the checkpoint into its storage before report returns: the folder can be reused.
        tune.report(
            {"epoch": epoch.epoch, "budget_spent": epoch.budget_spent, "train_images_per_s": epoch.train_images_per_s, **metrics, **setup,
             **node},
            checkpoint=tune.Checkpoint.from_directory(folder),
        )

    try:
        result = train(arch, data, split, recipe=Recipe.model_validate(config["recipe"]), budget=space.budget, seed=config["record"]["seed"], device=device,
                       checkpoint=save, callback=report, resume=resume)
        failure, diverged = (result.message, True) if result.status == Status.DIVERGED else (None, False)
    except Exception as error:  # the architecture's or the recipe's failure, not the machine's: no retry
        failure, diverged = ": ".join([type(error).__name__, *str(error).strip().splitlines()[:1]]), False
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if failure is not None:
        # NaN, not 0.0: no scheduler rung or sampler may take a failure for a score.
        tune.report({"epoch": epochs + 1, "failed": failure, "diverged": diverged, "budget_spent": False, Metrics.VAL_ACC: math.nan,
                     **node})


def _last_checkpoint(storage: Storage, trial_dir: str | None) -> str | None:
    """The newest complete checkpoint that a trial saved in ``trial_dir`` of the storage, if any."""
    folders = [name for name in reversed(storage.listdir(trial_dir)) if name.startswith("checkpoint_")] if trial_dir else []
    # A kill while Tune copied the newest may have left it without one of its files.
    paths = (posixpath.join(trial_dir, name) for name in folders)
    return next((path for path in paths if {_STATE, _CONFIG, WEIGHTS_FILE} <= set(storage.listdir(path))), None)


class _Stop(tune.Stopper):
    """Ctrl-C, seen by every part of the driver: the first stops launching trials and ends the
    running ones after their current epoch (its checkpoint saved); the second stops them at once."""

    def __init__(self) -> None:
        self.requested = False

    def request(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: no new trials; the running ones stop after their current epoch and can be resumed. "
              "Ctrl-C again stops them now.", file=sys.stderr, flush=True)

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self.requested and not result.get("budget_spent")

    def stop_all(self) -> bool:
        return False


class _Proposer(Searcher):
    """Optuna's ask and tell behind Tune's Searcher interface, with the space's limits applied first.

    Each proposal is fitted to the data and profiled on the meta device here, in the driver.
    One that cannot be built or is over the limits is told to Optuna as failed, which its
    samplers ignore, with the reason as a user attribute; it never reaches Ray and is not a
    trial. A trial that the scheduler stopped is told as pruned, with its per-epoch
    accuracies as intermediate values: TPE ranks every pruned trial below the complete ones,
    so an early accuracy is never compared with full-budget ones as an equal. With several
    objectives a completed trial is told each objective's value; Optuna takes no
    intermediate values there, and no trial is stopped early.
    """

    def __init__(self, study: optuna.Study, space: Space, target: _Target, seed: int, max_rejections: int,
                 stop: _Stop, resumed: list[dict[str, Any]] = (), ended: list[dict[str, Any]] = ()) -> None:
        super().__init__(metric=Metrics.VAL_ACC, mode="max")
        self.study, self.space, self.target, self.seed, self.stop = study, space, target, seed, stop
        self.max_rejections = max_rejections
        self.objectives = space.objectives
        self.single = len(self.objectives) == 1
        trials = study.get_trials(deepcopy=False)
        # Interrupted trials that had used their budget: told complete now, unless they were.
        for config in ended:
            interrupted = trials[config["optuna_trial"]]
            if interrupted.state != optuna.trial.TrialState.COMPLETE:
                accuracy = config["earlier"][max(config["earlier"])]
                study.add_trial(optuna.trial.create_trial(
                    params=interrupted.params, distributions=interrupted.distributions,
                    values=_objective_values(self.objectives, accuracy, config["cost"]),
                    intermediate_values=config["earlier"] if self.single else None,
                ))
        # The others go on first, each as a new Optuna trial of the same knobs (enqueued in
        # this order) that inherits the accuracies saved before the interruption.
        self._resumed = list(resumed)
        for config in resumed:
            study.enqueue_trial(trials[config["optuna_trial"]].params)
        self.rejected = 0  # in this session
        self._proposals: dict[str, optuna.trial.Trial] = {}
        self._costs: dict[str, dict[str, float]] = {}  # each running trial's costs, to tell Optuna with its accuracy
        self._reported: dict[str, int] = {}  # the last epoch each running trial reported to Optuna

    @property
    def exhausted(self) -> bool:
        return self.rejected >= self.max_rejections

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # the metric and mode are fixed above; the space is ours, not Tune's

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.stop.requested:
            return Searcher.FINISHED
        if self._resumed:
            config = self._resumed.pop(0)
            proposal = self.study.ask()
            self.space.sample(proposal)  # the enqueued knobs become the trial's params
            self.space.sample_recipe(proposal)
            if self.single:
                for epoch, value in config["earlier"].items():
                    proposal.report(value, epoch)
            self._proposals[trial_id], self._reported[trial_id] = proposal, max(config["earlier"])
            self._costs[trial_id] = config["cost"]
            return config | {"optuna_trial": proposal.number}
        while not self.exhausted:
            proposal = self.study.ask()
            try:
                arch, recipe, cost = _fitted(self.space, proposal, self.target)
            except ConfigError as error:
                proposal.set_user_attr(_REJECTED, str(error))
                self.study.tell(proposal, state=optuna.trial.TrialState.FAIL)
                self.rejected += 1
                continue
            self._proposals[trial_id], self._costs[trial_id] = proposal, cost
            return _trial_config(arch, recipe, cost, _fixed_values(self.space) | proposal.params, self.seed) | {"optuna_trial": proposal.number}
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and not error:
            self._report(trial_id, result)  # Tune withholds the result on which its scheduler stops a trial
        proposal, cost = self._proposals.pop(trial_id), self._costs.pop(trial_id)
        self._reported.pop(trial_id, None)
        failed = error or not result or "failed" in result
        if self.stop.requested and not failed and not result.get("budget_spent"):
            return  # interrupted: left running in Optuna's record, it goes on when the study resumes
        if failed:
            self.study.tell(proposal, state=optuna.trial.TrialState.FAIL)
        elif result.get("budget_spent"):
            self.study.tell(proposal, _objective_values(self.objectives, result[Metrics.VAL_ACC], cost))
        else:
            self.study.tell(proposal, state=optuna.trial.TrialState.PRUNED)

    def _report(self, trial_id: str, result: dict) -> None:
        epoch = int(result["epoch"])
        if self.single and epoch > self._reported.get(trial_id, 0) and "failed" not in result:
            self._proposals[trial_id].report(result[Metrics.VAL_ACC], epoch)
            self._reported[trial_id] = epoch


class _Cells(Searcher):
    """An ablation's missing cells, handed to Tune one by one: each gets the full budget."""

    def __init__(self, configs: list[dict[str, Any]], stop: _Stop) -> None:
        super().__init__(metric=Metrics.VAL_ACC, mode="max")
        self.configs, self.stop = list(reversed(configs)), stop

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        return self.configs.pop() if self.configs and not self.stop.requested else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # a designed experiment learns nothing while it runs


def _level_param(level: Any) -> Any:
    """A factor's level as a trial's param: a level that sets several knobs is a JSON list."""
    return json.dumps(level) if isinstance(level, list) else level


def _design_tags(experiment: Experiment) -> dict[str, str]:
    """How the parent run of an ablation names its design and, one factor at a time, its baseline."""
    tags = {Tags.ABLATION: experiment.name, Tags.DESIGN: experiment.design}
    if experiment.baseline:
        # str(): what MLflow makes of a param, so a query can find the baseline among the trials' params.
        tags[Tags.BASELINE] = json.dumps({name: str(_level_param(level)) for name, level in experiment.baseline.items()})
    return tags


def _cell_config(space: Space, cell: Cell, target: _Target, seed: int) -> dict[str, Any]:
    """An ablation cell as a trial: its replicate offsets the seed."""
    try:
        arch, recipe, cost = _fitted(space, optuna.trial.FixedTrial(cell.knobs), target)
    except ConfigError as error:  # the experiment checked the cells before they were fitted to the data
        raise ConfigError(f"{space.source}: cell {cell.levels}: {error}") from None
    levels = {name: _level_param(level) for name, level in cell.levels.items()}
    record = _fixed_values(space) | cell.knobs | levels | {"replicate": cell.replicate}
    return _trial_config(arch, recipe, cost, record, seed + cell.replicate, cell=cell.key)


def concurrency(resources: dict[str, float], cpus_per_trial: float, gpus_per_trial: float) -> int:
    """How many trials fit at once in a cluster's ``resources``: the scarcer of CPUs and GPUs decides."""
    fits = [resources.get("CPU", 1) / cpus_per_trial]
    if gpus_per_trial:
        fits.append(resources.get("GPU", 0) / gpus_per_trial)
    return max(1, int(min(fits) + 1e-9))  # 1 / 0.1 is 9.999...


def _fixed_values(space: Space) -> dict[str, Any]:
    """The knobs that the space fixes: recorded with every trial, though never searched."""
    return {name: knob.value for name, knob in space.knobs().items() if isinstance(knob, Fixed)}


def rejected_proposals(study: optuna.Study) -> list[dict[str, Any]]:
    """Every proposal turned away before training (over the limits or the memory, or unable to
    build or train): its knobs and the reason."""
    return [
        trial.params | {"reason": trial.user_attrs[_REJECTED]}
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        if _REJECTED in trial.user_attrs
    ]


def _asha(max_epochs: int, earlier: list[dict[int, float]]) -> ASHAScheduler:
    """ASHA on per-epoch accuracy, its rungs holding the accuracies of the study's ``earlier``
    trials: a resumed or extended study judges a trial against all of them, not only this session's."""
    scheduler = ASHAScheduler(time_attr="epoch", max_t=max_epochs, grace_period=1, reduction_factor=3)
    # Ray has no public way to seed a rung: record each value as the rung's on_result would have.
    for index, accuracies in enumerate(earlier):
        for bracket in scheduler._brackets:
            for milestone, recorded in bracket._rungs:
                if milestone in accuracies:
                    recorded[f"earlier-{index}"] = accuracies[milestone]
    return scheduler


_HEARTBEAT_S = 30.0  # the longest the driver stays silent while trials train: an epoch can take minutes


class _Tracker(tune.Callback):
    """Writes every trial to MLflow and prints a live view of the study.

    The driver keeps each trial's run id, the counts and the best trial, so an event costs
    the same at the thousandth trial as at the first; MLflow is read once, on resume.
    """

    def __init__(self, recorder: Recorder, storage: Storage, space: Space, tags: dict[str, str], total: int, done: list[dict[str, Any]],
                 proposer: _Proposer | None, stop: _Stop) -> None:
        self.recorder, self.storage, self.space, self.tags, self.total = recorder, storage, space, tags, total
        self.proposer, self.stop = proposer, stop
        self.interrupted = 0
        self.done_before = len(done)
        self.counts = Counter(row["status"] for row in done)
        self.best = next((row for row in done if row["status"] == Status.COMPLETED), None)
        self.runs: dict[str, str] = {}  # Tune trial id -> MLflow run id
        self.checkpoints: dict[str, Any] = {}  # Tune trial id -> its newest checkpoint
        self.training: dict[str, int] = {}  # Tune trial id -> epochs it has reported; as many as run at once
        self.nodes: dict[str, dict[str, str]] = {}  # Tune trial id -> the node it runs on, as its run's tags say
        self.epochs = 0  # reported in this session: the pace of the study
        self.started = self.said = time.monotonic()

    def _say(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        self.said = time.monotonic()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.runs:
            return  # a retry after a lost worker: same trial, same run
        run_id = trial.config.get("run_id")  # a resumed trial goes on in its own run
        if run_id is None:
            run_id = self._new_run(trial)
            self.recorder.set_trial_dir(run_id, trial.path)  # where its checkpoints will be
        else:
            self.recorder.resume_trial(run_id)
        self.runs[trial.trial_id] = run_id
        self.training[trial.trial_id] = 0

    def _new_run(self, trial: Any) -> str:
        config = trial.config
        tags = self.tags | ({Tags.CELL: config["cell"]} if config["cell"] else {})
        run_id = self.recorder.start_trial(trial.trial_id, config["record"], space_hash=self.space.digest, tags=tags)
        self.recorder.log_arch(run_id, Arch.from_dict(config["arch"]), config["cost"])
        self.recorder.log_recipe(run_id, config["recipe"])
        return run_id

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        node = {tag: result[tag] for tag in (Tags.RAY_NODE, Tags.RAY_HOSTNAME)}
        if self.nodes.get(trial.trial_id) != node:  # its first result, or its first on another node after a lost worker
            self.recorder.set_tags(self.runs[trial.trial_id], node)
            self.nodes[trial.trial_id] = node
        if "failed" not in result:
            self.recorder.log_epoch(self.runs[trial.trial_id], result, epoch=int(result["epoch"]))
            self.training[trial.trial_id] = int(result["epoch"])
            self.epochs += 1
            self._say(f"[{_clock(time.monotonic() - self.started)}] {trial_name(trial.trial_id)} epoch {result['epoch']}/"
                      f"{self.space.budget.epochs}: val_acc {result[Metrics.VAL_ACC]:.2%}, {result['train_images_per_s']:,.0f} img/s")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Between epochs: every _HEARTBEAT_S, which epoch each running trial is in, and the time left at the pace so far."""
        now = time.monotonic()
        if now - self.said < _HEARTBEAT_S or not self.training:
            return
        epochs = self.space.budget.epochs
        line = f"[{_clock(now - self.started)}] training: " + ", ".join(
            f"{trial_name(trial_id)} epoch {min(done + 1, epochs)}/{epochs}" for trial_id, done in self.training.items())
        if self.epochs:
            left = max(0, (self.total - sum(self.counts.values())) * epochs - sum(self.training.values()))
            line += f"; at most {_clock((now - self.started) / self.epochs * left)} to go at the pace so far"
        self._say(line)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(f"{trial_name(trial.trial_id)} lost its worker ({_error_of(trial)}); it goes on from its last checkpoint")

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        if trial.trial_id not in self.checkpoints and trial.config.get("run_id"):
            # A resumed trial's checkpoints are here from its first new one on; until then the
            # ones it was resumed from are those to go on from.
            self.recorder.set_trial_dir(self.runs[trial.trial_id], trial.path)
        self.checkpoints[trial.trial_id] = checkpoint  # uploaded once, when the trial ends

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if "failed" in last:
            self._finish(trial, Status.DIVERGED if last.get("diverged") else Status.FAILED, last["failed"])
        elif self.stop.requested and not last.get("budget_spent"):
            # Left unfinished in MLflow: a resumed study goes on from the checkpoint of its last epoch.
            self.recorder.note_interrupted(self.runs.pop(trial.trial_id))
            self.checkpoints.pop(trial.trial_id, None)
            self.training.pop(trial.trial_id, None)
            self.interrupted += 1
        elif last.get("budget_spent"):
            self._finish(trial, Status.COMPLETED, val_acc=last[Metrics.VAL_ACC])
        else:
            self._finish(trial, Status.STOPPED_EARLY, "stopped by the scheduler")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        retries = f" (lost its worker {trial.num_failures} times)" if trial.num_failures > 1 else ""
        self._finish(trial, Status.FAILED, _error_of(trial) + retries)

    def _finish(self, trial: Any, status: str, reason: str = "", val_acc: float | None = None) -> None:
        run_id = self.runs.pop(trial.trial_id, None) or self._new_run(trial)  # none if its worker never started
        self.nodes.pop(trial.trial_id, None)
        checkpoint = self.checkpoints.pop(trial.trial_id, None)
        self.training.pop(trial.trial_id, None)
        if status in SCORED and checkpoint is not None:
            # The last epoch's weights, so that `cnnsearch export --retrain-epochs 0` can use them:
            # the one file, not the training state beside it.
            with self.storage.local_file(posixpath.join(checkpoint.path, WEIGHTS_FILE)) as weights:
                self.recorder.log_weights(run_id, weights)
        self.recorder.finish_trial(run_id, status, reason)
        # Ended, a trial is never resumed: its training state (model and optimizer) need not stay.
        resumed_from = [posixpath.dirname(trial.config["resume"])] if trial.config.get("resume") else []
        checkpoints = [posixpath.join(trial.path, name) for name in self.storage.listdir(trial.path) if name.startswith("checkpoint_")]
        for folder in [*checkpoints, *resumed_from]:
            self.storage.delete(folder)
        self.counts[status] += 1
        if status in (Status.FAILED, Status.DIVERGED):
            self._say(f"{trial_name(trial.trial_id)} {status}: {reason}")
        if val_acc is not None and (self.best is None or val_acc > self.best[Metrics.VAL_ACC]):
            self.best = {Metrics.VAL_ACC: val_acc, "knobs": trial.config["record"]}
        done = sum(self.counts.values())
        elapsed = time.monotonic() - self.started
        remaining = max(0, self.total - done)
        self._say(f"[{_clock(elapsed)}] {self.standing()}"
                  + (f"; ETA {_clock(elapsed / max(1, done - self.done_before) * remaining)}" if remaining else ""))

    def interrupt_running(self) -> None:
        for run_id in self.runs.values():
            self.recorder.note_interrupted(run_id)
        self.interrupted += len(self.runs)
        self.runs.clear()

    def standing(self) -> str:
        """Where the study stands: trials done by status, rejected proposals, the best trial."""
        counts = [f"{n} {s}" for s, n in self.counts.items() if n]
        if self.proposer is not None and self.proposer.rejected:
            counts.append(f"{self.proposer.rejected} proposals rejected")
        return (
            f"{sum(self.counts.values())}/{self.total} trials done (" + ", ".join(counts) + ")"
            + (f"; best val_acc {self.best[Metrics.VAL_ACC]:.2%} ({searched_knobs(self.space, self.best['knobs'])})" if self.best else "")
        )


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def searched_knobs(space: Space, knobs: dict[str, Any]) -> str:
    """The knobs that the space searches, as ``name=value`` pairs."""
    names = [name for name, knob in space.knobs().items() if not isinstance(knob, Fixed) and name in knobs]
    return " ".join(f"{name}={knobs[name]}" for name in names)


def _error_of(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        text = Path(path).read_text().strip()
        return text.splitlines()[-1] if text else "failed"
    return "failed"


_DATASET_SETTINGS = ("dataset", "subset", "val_fraction", "test_fraction", "val_subset")
_OVERRIDES = (*_DATASET_SETTINGS, "epochs", "lr", "batch_size", "precision", "compile")
_SETTINGS = ("trials", "sampler", "scheduler", "seed", "latency_device", *_OVERRIDES)


def with_overrides(
    space: Space,
    *,
    dataset: str | None = None,
    epochs: int | None = None,
    subset: int | None = None,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    val_subset: int | None = None,
    lr: float | str | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    compile: bool | None = None,
) -> Space:
    """``space`` with its dataset, epoch budget, subsets, validation or test fraction or recipe values replaced, validated as in a space file."""
    changes = {
        "dataset": {"name": dataset, "subset": subset, "val_fraction": val_fraction, "test_fraction": test_fraction, "val_subset": val_subset},
        "budget": {"epochs": epochs},
        "recipe": {"lr": lr, "batch_size": batch_size, "precision": precision, "compile": compile},
    }
    changes = {section: {k: v for k, v in values.items() if v is not None} for section, values in changes.items()}
    return space.override(**{section: values for section, values in changes.items() if values})


def _setting(space: Space, key: str) -> Any:
    """The value a study setting resolves to in ``space``."""
    section = space.dataset if key in _DATASET_SETTINGS else space.budget if key == "epochs" else space.recipe
    return getattr(section, "name" if key == "dataset" else key)


def _check_unchanged(space: Space, saved: dict[str, Any], settings: dict[str, Any], study: str) -> None:
    """Refuse to go on with a study under other data, budget or recipe: its trials would not compare."""
    if "test_fraction" not in saved:  # saved by a version that held out no test split
        raise ConfigError(
            f"study {study!r} began before a test split was held out: its trials may have trained on what is now test images; "
            "use --name to start a new study"
        )
    before = with_overrides(space, **{key: saved.get(key) for key in _OVERRIDES})
    after = with_overrides(space, **{key: settings[key] for key in _OVERRIDES})
    for key in _OVERRIDES:
        old, new = _setting(before, key), _setting(after, key)
        if old != new:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"study {study!r} was run with {flag} {old}, not {new}: its trials would not compare; "
                f"leave {flag} out to go on with it, or use --name to start a new study"
            )


def _check_storage(storage: Storage, digest: str, options: RunOptions) -> dict[str, Any] | None:
    """The saved study state, if any; refuses a folder that holds something else.

    Raises:
        ConfigError: as above, or the storage cannot be reached (no such bucket, no credentials).
    """
    try:
        state_file = storage.path(_STATE_FILE)
        state = json.loads(storage.read_text(state_file)) if storage.exists(state_file) else None
        others = storage.listdir(storage.root) if state is None else []
    except OSError as error:
        raise ConfigError(f"--storage {storage.uri}: cannot be read ({str(error).strip().splitlines()[0]})") from None
    if state is not None and state["space_hash"] != digest:
        raise ConfigError(
            f"{storage.uri}: holds study {state['name']!r} of another space or experiment (hash {state['space_hash']}, "
            f"not {digest}); use another --storage or --name"
        )
    if options.resume and state is None:
        raise ConfigError(f"{storage.uri}: no study to resume here; run without --resume to start one")
    if others:
        raise ConfigError(f"{storage.uri}: not empty and not a cnnsearch study; use another --storage or --name")
    if state is not None and not state.get("finished") and not options.resume:
        raise ConfigError(f"{storage.uri}: study {state['name']!r} was interrupted; add --resume to continue it")
    return state


def _check_reachable(address: str) -> None:
    """Fail in seconds on a Ray address nobody answers at: ray.init would wait for minutes.

    A Ray Client address (``ray://``) is refused: through it, ``Tuner.fit`` runs Tune's driver
    loop, and with it this study's proposer and MLflow recorder, on the head node, where
    the Optuna journal and a relative tracking store of this machine are out of reach.
    """
    if address.startswith("ray://"):
        raise ConfigError(
            f"Ray at {address}: a Ray Client address would run the study's driver on the head node, away from its MLflow "
            "store and state; run cnnsearch on a node of the cluster with --ray-address HOST:PORT (the address `ray start "
            "--head` printed, port 6379 by default), or submit it there with `ray job submit -- cnnsearch run ...`"
        )
    if address in ("auto", "local"):
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as error:
        raise ConfigError(f"Ray at {address}: cannot connect ({error}); expected HOST:PORT of a running cluster") from None


def _save_state(storage: Storage, **state: Any) -> None:
    storage.write_text(storage.path(_STATE_FILE), json.dumps(state, indent=2))


class _Journal(optuna.storages.journal.BaseJournalBackend):
    """Optuna's journal as a :class:`RecordLog`, for storage that cannot append to a file (an object store).

    The study's driver is its only writer: it reads the log once and then keeps it in memory.
    """

    def __init__(self, log: RecordLog) -> None:
        self.log = log

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        return self.log.records[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self.log.append(logs)


def _optuna_study(storage: Storage, name: str, objectives: tuple[Objective, ...]) -> optuna.Study:
    """The study's Optuna record, kept in its storage so a resumed or extended study samples with its whole history.

    On this machine's filesystem it is Optuna's own journal file; on an object store, which
    cannot append to a file, a folder of numbered objects (:class:`_Journal`), both named
    ``optuna.journal``. Trials that a crash left running, or enqueued to resume and never
    started, are marked failed: samplers ignore them, and the study goes on with them as new trials.
    """
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = storage.path("optuna.journal")
    if storage.local:
        journal = JournalStorage(JournalFileBackend(path))
    else:
        journal = JournalStorage(_Journal(RecordLog(storage, path)))
    study = optuna.create_study(storage=journal, study_name=name, directions=[objective.direction for objective in objectives],
                                load_if_exists=True)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    for _ in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)  # Optuna tells only a trial it has handed out
    return study


def run_study(space: Space, options: RunOptions, *, experiment: Experiment | None = None) -> StudyResult:
    """Run, resume or extend a study of ``space``, or the cells of an ablation ``experiment``.

    MLflow is the record of which trials are done: a resumed study goes on with the trials
    that a crash or Ctrl-C left unfinished from their last checkpoints (and runs again the
    ones that saved none), then runs as many new trials as are missing.

    Raises:
        ConfigError: an invalid space, an unreachable tracking store or Ray address, or a
            storage folder that belongs to another study; all before any trial starts.
        Interrupted: Ctrl-C stopped the study before it finished; it can be resumed.
    """
    storage = Storage.open(options.storage)
    if experiment is not None:
        space = experiment.space
    digest = experiment.digest if experiment else space.digest
    state = _check_storage(storage, digest, options)
    saved = state["settings"] if state else {}
    settings = {key: saved.get(key) if getattr(options, key) is None else getattr(options, key) for key in _SETTINGS}
    if state:
        _check_unchanged(space, saved, settings, state["name"])
    space = with_overrides(space, **{key: settings[key] for key in _OVERRIDES})
    cheapest(space)
    trials = len(experiment.cells) if experiment else settings["trials"] or space.search.trials
    sampler_name = "grid" if experiment else settings["sampler"] or space.sampler
    # Every cell of a designed ablation gets the full budget; so does every trial of a study
    # with several objectives (README, "Several objectives": ASHA ranks by accuracy alone,
    # and would stop the cheap, less accurate trials that belong on the front).
    several = len(space.objectives) > 1
    scheduler_name = "none" if experiment else settings["scheduler"] or ("none" if several else "asha")
    if several and scheduler_name == "asha":
        raise ConfigError(
            f"{space.source}: --scheduler asha stops trials by accuracy alone, which would cut the cheap end of the front "
            f"of {len(space.objectives)} objectives; leave --scheduler out (none) for a study with several objectives"
        )
    seed = settings["seed"] or 0
    if state and options.latency_device and options.latency_device != saved.get("latency_device", "cpu"):
        raise ConfigError(
            f"study {state['name']!r} was run with --latency-device {saved.get('latency_device', 'cpu')}, not {options.latency_device}: "
            "its latencies would not compare; leave --latency-device out to go on with it, or use --name to start a new study"
        )
    latency_device = settings["latency_device"] or "cpu"
    if latency_device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--latency-device cuda: the driver's machine has no CUDA device; use cpu or onnxruntime")
    settings |= {"trials": trials, "sampler": sampler_name, "scheduler": scheduler_name, "seed": seed, "latency_device": latency_device}
    if sampler_name == "grid" and not experiment and (space.size() or 0) < trials:
        raise ConfigError(f"{space.source}: a grid of {space.size()} points cannot fill {trials} trials")
    if not options.verbose:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    tracking_uri = options.tracking_uri or (state["tracking_uri"] if state else DEFAULT_TRACKING_URI)
    client = connect(tracking_uri)
    data = load_dataset(space.dataset.name, cache_dir=options.cache_dir, data_dir=options.data_dir)
    split = split_dataset(data.labels, val_fraction=space.dataset.val_fraction, seed=space.dataset.split_seed, subset=space.dataset.subset,
                          val_subset=space.dataset.val_subset,
                          test_fraction=held_out_test_fraction(space.dataset.name, space.dataset.test_fraction))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not options.verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        # Tune logs each lost worker's traceback; the tracker prints one line per trial instead.
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    if options.ray_address:
        _check_reachable(options.ray_address)
    try:
        ray.init(
            # "local": a Ray of our own, never one that something else left on this machine.
            address=options.ray_address or "local",
            # A cluster's workers get this cnnsearch from the driver: a node needs only its dependencies.
            runtime_env={"py_modules": [str(Path(__file__).parent)], "excludes": ["__pycache__"]} if options.ray_address else None,
            include_dashboard=False,
            log_to_driver=options.verbose,
            logging_level=logging.INFO if options.verbose else logging.ERROR,
            ignore_reinit_error=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ConfigError(f"Ray at {options.ray_address}: cannot connect ({error})") from None
    resources = ray.cluster_resources()
    # A GPU request where there is none would leave every trial pending forever.
    gpus = options.gpus_per_trial if resources.get("GPU", 0) > 0 else 0.0
    cpus = options.cpus_per_trial
    if space.recipe.precision == "fp16" and not gpus:
        raise ConfigError("precision fp16 needs a CUDA device, and these trials run on CPUs; use bf16 or fp32")
    concurrent = options.max_concurrent or concurrency(resources, cpus, gpus)

    experiment_name = options.experiment or (state["experiment"] if state else experiment.name if experiment else space.name)
    # Every trial says what measured its latency; the parent run also holds the objectives.
    tags = (_design_tags(experiment) if experiment else {}) | {Tags.LATENCY_MACHINE: latency_machine(latency_device)}
    recorder = Recorder.open(
        client,
        experiment=experiment_name,
        study=options.name,
        space_hash=digest,
        tags=tags | {Tags.OBJECTIVES: json.dumps([objective.model_dump() for objective in space.objectives])},
        parent_run_id=state["parent_run_id"] if state else None,
        params={
            "seed": seed,
            "sampler": sampler_name,
            "scheduler": scheduler_name,
            "dataset": space.dataset.name,
            "epochs": space.budget.epochs,
            "subset": space.dataset.subset,
            Params.RECIPE: json.dumps(space.recipe.model_dump()),
            "budget": json.dumps(space.budget.model_dump()),
            **{f"split.{k}": v for k, v in split.describe().items()},
        },
        files=[space.source] + ([experiment.source] if experiment else []),
    )
    if experiment is not None:
        recorder.discard_failed()  # a failed cell runs again (a diverged one stands); a failed search trial stays a result of the search
    resumed, ended = [], []
    for run_id, trial_dir in recorder.unfinished().items():
        checkpoint = _last_checkpoint(storage, trial_dir)
        if checkpoint is None:
            recorder.discard(run_id)  # interrupted before its first checkpoint: it runs again from the start
            continue
        config = json.loads(storage.read_text(posixpath.join(checkpoint, _CONFIG)))
        state_file = posixpath.join(checkpoint, _STATE)
        history = torch.load(io.BytesIO(storage.read_bytes(state_file)), weights_only=True, map_location="cpu")["history"]
        for epoch in history[recorder.logged_epochs(run_id):]:  # saved, but the driver died before recording them
            recorder.log_epoch(run_id, epoch, epoch=epoch["epoch"])
        config |= {"run_id": run_id, "earlier": {epoch["epoch"]: epoch["val_acc"] for epoch in history}}
        if history[-1]["budget_spent"]:  # interrupted after its last epoch, before it was recorded as ended
            with storage.local_file(posixpath.join(checkpoint, WEIGHTS_FILE)) as weights:
                recorder.log_weights(run_id, weights)
            recorder.finish_trial(run_id, Status.COMPLETED)
            storage.delete(checkpoint)
            ended.append(config)
        else:
            resumed.append(config | {"resume": state_file})
    done = recorder.trials()
    study_state = {"name": options.name, "space_hash": digest, "experiment": experiment_name,
                   "parent_run_id": recorder.parent_run_id, "tracking_uri": tracking_uri, "settings": settings}
    _save_state(storage, **study_state, finished=False)
    recorder.set_planned_trials(max(trials, len(done)))

    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    target = _Target(data_shape(data), None if gpus else max(node.get("memory", 0) for node in nodes),
                     resolve_precision(space.recipe.precision, torch.device("cpu")), latency_device)
    test = f"{len(split.test):,} test images held out" if len(split.test) else "its own test images set aside"
    print(f"{options.name}: {len(split.train):,} training and {len(split.val):,} validation images of {data.source} ({test}); "
          f"{trials} trials, up to {concurrent} at a time ({cpus:g} CPUs" + (f", {gpus:g} GPUs" if gpus else "") + " each"
          + ("" if gpus else f", and the memory each is expected to need, of the {target.memory / 2**30:.1f} GiB the largest node offers")
          + ")", file=sys.stderr, flush=True)
    # A trial in a running worker starts in milliseconds, a new worker in seconds. Compiled
    # trials get fresh workers: torch.compile's caches would pile up and hit its recompile limit.
    reuse = not space.recipe.compile
    stop = _Stop()
    proposer = None
    if experiment is not None:
        finished = {row["cell"] for row in done} | {config["cell"] for config in resumed}
        configs = resumed + [_cell_config(space, cell, target, seed) for cell in experiment.cells if cell.key not in finished]
        missing = len(configs)
        tune_config = tune.TuneConfig(search_alg=ConcurrencyLimiter(_Cells(configs, stop), max_concurrent=concurrent), num_samples=missing,
                                      reuse_actors=reuse)
    else:
        missing = max(trials - len(done), len(resumed))
        study = _optuna_study(storage, options.name, space.objectives)
        # Each session draws new points: the same seed again would repeat the first session's.
        sampler = _sampler(sampler_name, space, seed + len(study.trials), trials)
        study.sampler = sampler
        proposer = _Proposer(study, space, target, seed, max_rejections=max(100, 10 * missing), stop=stop,
                             resumed=resumed, ended=ended)
        if scheduler_name == "asha":
            earlier = [recorder.accuracies(row["run_id"]) for row in done if row["status"] in SCORED]
            scheduler = _asha(space.budget.epochs, earlier)
        else:
            scheduler = FIFOScheduler()
        tune_config = tune.TuneConfig(
            search_alg=ConcurrencyLimiter(proposer, max_concurrent=concurrent),
            scheduler=scheduler,
            metric=Metrics.VAL_ACC,
            mode="max",
            num_samples=missing,
            reuse_actors=reuse,
        )
    if missing > 0:
        tracker = _Tracker(recorder, storage, space, tags, trials, done, proposer, stop)
        trainable = tune.with_resources(
            tune.with_parameters(_trial, space=space, data=data, split=split, threads=max(1, int(cpus)), device="cuda" if gpus else "cpu",
                                 storage=storage),
            # Each trial reserves the memory it is expected to need: Ray starts no more at once than fit.
            lambda config: PlacementGroupFactory([{"CPU": cpus, "GPU": gpus, "memory": _reservation(config)}]),
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name=f"session-{sum(name.startswith('session-') for name in storage.listdir(storage.path('tune')))}",
                # Trials on every node write their checkpoints there themselves.
                storage_path=storage.path("tune"),
                storage_filesystem=storage.filesystem,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                # A lost worker, node or raylet, or the out-of-memory killer: the trial goes on
                # from its checkpoint. A trial's own errors end it as failed instead (see _trial).
                failure_config=tune.FailureConfig(max_failures=_RETRIES),
                callbacks=[tracker],
                stop=stop,
                verbose=1 if options.verbose else 0,
            ),
        )
        # Tune's own Ctrl-C handler would end the study as if it had finished.
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        previous = signal.signal(signal.SIGINT, stop.request)
        try:
            tuner.fit()
        except KeyboardInterrupt:  # the second Ctrl-C: the running trials were stopped where they were
            stop.requested = True
            tracker.interrupt_running()
        finally:
            signal.signal(signal.SIGINT, previous)
        if stop.requested and (tracker.interrupted or sum(tracker.counts.values()) < trials):
            recorder.interrupt_study()
            running = f"; {tracker.interrupted} interrupted trials go on from their last epoch" if tracker.interrupted else ""
            raise Interrupted(f"study {options.name!r} interrupted with {tracker.standing()}{running}")
    rows = recorder.trials()
    table = [{key: value for key, value in row.items() if key != "knobs"} | row["knobs"] for row in rows]
    best = next((row for row in rows if row["status"] == Status.COMPLETED), None)
    rejected = rejected_proposals(study) if experiment is None else []
    front = pareto(completed(recorder.record()), space.objectives) if several else None
    recorder.finish_study(table, best, rejected, front)
    _save_state(storage, **study_state, finished=True)
    if proposer is not None and proposer.exhausted:
        trained = f"so only {len(rows) - len(done)} of {missing} trials trained"
        # A reason's kind: "cannot be built", "cannot train at batch 128", or over a limit (over_limits's "... > max_params ...").
        kinds = Counter("limits" if "> max_" in row["reason"] else row["reason"].split(":")[0] for row in rejected)
        kind, count = kinds.most_common(1)[0]
        if kind == "limits":
            raise ConfigError(f"{space.source}: its limits turned away {proposer.rejected} proposals in this session, {trained}; "
                              "raise limits.max_params or limits.max_macs, or narrow the space")
        raise ConfigError(f"{space.source}: {proposer.rejected} proposals were turned away in this session ({count} of the study's "
                          f"{len(rejected)}: {kind}), {trained}; narrow the space")
    return StudyResult(options.name, tracking_uri, recorder.experiment_id, recorder.parent_run_id, rows, len(rejected), front)
