"""A study: Optuna proposes, Ray Tune schedules and stops early, MLflow records.

The only module that imports ray and optuna. Trials are plain functions of their
sampled knobs; the data set is put in Ray's object store once and shared by every
trial; the driver alone writes to MLflow.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from .config import ConfigError
from .data import load_dataset, split_dataset
from .experiment import Cell, Experiment
from .profile import cheapest, profile
from .space import Fixed, Space
from .tracking import DEFAULT_TRACKING_URI, WEIGHTS_FILE, Metrics, Params, Recorder, Tags, connect
from .train import EpochReport, fit_to_data, train

__all__ = ["RunOptions", "StudyResult", "run_study", "searched_knobs", "with_overrides"]

_STATE_FILE = "cnnsearch.json"


@dataclass(frozen=True)
class RunOptions:
    """How to run a study; every field has a command-line flag of the same name."""

    name: str
    storage: Path
    resume: bool = False
    # Left as None, these take the value a resumed study was started with, else the default.
    trials: int | None = None  # default: the space's search.trials
    sampler: str | None = None  # default: the space's search.sampler
    scheduler: str | None = None  # default: asha
    seed: int | None = None  # default: 0
    dataset: str | None = None  # default: the space's dataset.name
    epochs: int | None = None  # default: the space's budget.epochs
    subset: int | None = None  # default: the space's dataset.subset
    val_fraction: float | None = None  # default: the space's dataset.val_fraction
    lr: float | str | None = None  # default: the space's recipe.lr ("auto" runs a range test per trial)
    batch_size: int | None = None  # default: the space's recipe.batch_size
    precision: str | None = None  # default: the space's recipe.precision
    compile: bool | None = None  # default: the space's recipe.compile
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

    Each trial is a dict: trial_id, run_id (MLflow), status, val_acc, params, macs, knobs.
    """

    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    trials: list[dict[str, Any]]


def _sampler(name: str, space: Space, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # Optuna's default of 10 random startup trials would leave a short search purely random;
        # constant_liar keeps concurrent trials from being proposed the same point.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, trials // 4)), constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    return optuna.samplers.NSGAIISampler(seed=seed)


def _trial(config: dict[str, Any], *, space: Space, cells: tuple[Cell, ...] | None, data: Any, split: Any, seed: int,
           threads: int, device: str) -> None:
    """One Ray Tune trial: build the sampled architecture, reject it if over the limits, train it."""
    torch.set_num_threads(threads)
    values, _, seed = _trial_values(config, cells, seed)
    try:
        arch = fit_to_data(space.sample(optuna.trial.FixedTrial(values)), data)
    except ConfigError as error:
        tune.report({"status": "rejected", "reason": str(error), Metrics.VAL_ACC: 0.0, "epoch": 0})
        return
    cost = profile(arch)
    costs = {Metrics.PARAMS: cost.params, Metrics.MACS: cost.macs, Metrics.FLOPS: cost.flops}
    violation = space.limits.violation(cost.params, cost.macs)
    if violation:
        tune.report({"status": "rejected", "reason": violation, Metrics.VAL_ACC: 0.0, "epoch": 0, **costs})
        return

    folder = Path(tempfile.mkdtemp(prefix="cnnsearch-checkpoint-"))

    def save(model: torch.nn.Module, epoch: EpochReport) -> None:
        torch.save({key: value.detach().cpu() for key, value in model.state_dict().items()}, folder / WEIGHTS_FILE)

    def report(epoch: EpochReport) -> None:
        metrics = {key: getattr(epoch, key) for key in Metrics.PER_EPOCH}
        setup = {Metrics.PEAK_LR: epoch.peak_lr, Params.PRECISION: epoch.precision}
        tune.report(
            {"status": "running", "epoch": epoch.epoch, "train_images_per_s": epoch.train_images_per_s, **metrics, **setup, **costs},
            checkpoint=tune.Checkpoint.from_directory(folder),
        )

    result = train(arch, data, split, recipe=space.recipe, budget=space.budget, seed=seed, device=device,
                   checkpoint=save, callback=report)
    if result.status == "diverged":
        raise RuntimeError(result.message)


@dataclass(frozen=True)
class _DefineByRun:
    """The space as an Optuna define-by-run function (a picklable one: Tune saves its searcher)."""

    space: Space

    def __call__(self, trial: optuna.Trial) -> None:
        try:
            self.space.sample(trial)
        except ConfigError:
            pass  # the trial itself records the rejection


class _Tracker(tune.Callback):
    """Writes every trial to MLflow and prints a live view of the study.

    All the state that matters is in MLflow, which is also what a resumed study counts.
    """

    def __init__(
        self, recorder: Recorder, space: Space, cells: tuple[Cell, ...] | None, seed: int, tags: dict[str, str], total: int, done_before: int
    ) -> None:
        self.recorder, self.space, self.cells, self.seed, self.tags = recorder, space, cells, seed, tags
        self.total, self.done_before = total, done_before
        self.started = time.monotonic()

    def _run(self, trial: Any) -> str:
        values, extra, seed = _trial_values(trial.config, self.cells, self.seed)
        fixed = {name: knob.value for name, knob in self.space.knobs().items() if isinstance(knob, Fixed)}
        tags = self.tags | ({Tags.CELL: self.cells[trial.config["cell"]].key} if self.cells else {})
        return self.recorder.start_trial(
            trial.trial_id, fixed | values | extra | {"seed": seed}, space_hash=self.space.digest, tags=tags
        )

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run(trial)
        try:
            arch = self.space.sample(optuna.trial.FixedTrial(_trial_values(trial.config, self.cells, self.seed)[0]))
        except ConfigError:
            return
        self.recorder.log_arch(run_id, arch, profile(arch).to_dict())

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get("status") == "running":
            self.recorder.log_epoch(self._run(trial), result, epoch=int(result["epoch"]))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if last.get("status") == "rejected":
            self._finish(trial, "rejected", last.get("reason", ""))
        elif int(last.get("epoch", 0)) < self.space.budget.epochs and self.space.budget.max_seconds is None:
            self._finish(trial, "stopped early", "stopped by the scheduler")
        else:
            self._finish(trial, "completed")

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        # The newest weights of every trial, so that `cnnsearch export --retrain-epochs 0` can use them.
        with tempfile.TemporaryDirectory() as folder:
            self.recorder.log_checkpoint(self._run(trial), checkpoint.to_directory(folder))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "failed", _error_of(trial))

    def _finish(self, trial: Any, status: str, reason: str = "") -> None:
        self.recorder.finish_trial(self._run(trial), status, reason)
        done = self.recorder.trials()
        counts = {s: sum(row["status"] == s for row in done) for s in ("completed", "stopped early", "rejected", "failed")}
        best = done[0] if done and done[0][Metrics.VAL_ACC] is not None else None
        elapsed = time.monotonic() - self.started
        finished_here = max(1, len(done) - self.done_before)
        remaining = max(0, self.total - len(done))
        print(
            f"[{_clock(elapsed)}] {len(done)}/{self.total} trials done ("
            + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
            + ")"
            + (f"; best val_acc {best[Metrics.VAL_ACC]:.2%} ({searched_knobs(self.space, best['knobs'])})" if best else "")
            + (f"; ETA {_clock(elapsed / finished_here * remaining)}" if remaining else ""),
            file=sys.stderr,
            flush=True,
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


def _trial_values(config: dict[str, Any], cells: tuple[Cell, ...] | None, seed: int) -> tuple[dict[str, Any], dict[str, Any], int]:
    """A trial's searched knob values, what else to record of it, and its seed.

    A search trial's config holds its knobs; an ablation trial's holds the index of its
    cell, whose replicate offsets the seed.
    """
    if cells is None:
        return config, {}, seed
    cell = cells[config["cell"]]
    levels = {name: json.dumps(level) if isinstance(level, list) else level for name, level in cell.levels.items()}
    return cell.knobs, levels | {"replicate": cell.replicate}, seed + cell.replicate


_OVERRIDES = ("dataset", "epochs", "subset", "val_fraction", "lr", "batch_size", "precision", "compile")
_SETTINGS = ("trials", "sampler", "scheduler", "seed", *_OVERRIDES)


def with_overrides(
    space: Space,
    *,
    dataset: str | None = None,
    epochs: int | None = None,
    subset: int | None = None,
    val_fraction: float | None = None,
    lr: float | str | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    compile: bool | None = None,
) -> Space:
    """``space`` with its dataset, epoch budget, subset, validation fraction or recipe values replaced, validated as in a space file."""
    changes = {
        "dataset": {"name": dataset, "subset": subset, "val_fraction": val_fraction},
        "budget": {"epochs": epochs},
        "recipe": {"lr": lr, "batch_size": batch_size, "precision": precision, "compile": compile},
    }
    changes = {section: {k: v for k, v in values.items() if v is not None} for section, values in changes.items()}
    return space.override(**{section: values for section, values in changes.items() if values})


def _check_storage(storage: Path, digest: str, options: RunOptions) -> dict[str, Any] | None:
    """The saved study state, if any; refuses a folder that holds something else."""
    state_file = storage / _STATE_FILE
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    if state is not None and state["space_hash"] != digest:
        raise ConfigError(
            f"{storage}: holds study {state['name']!r} of another space or experiment (hash {state['space_hash']}, "
            f"not {digest}); use another --storage or --name"
        )
    if options.resume and state is None:
        raise ConfigError(f"{storage}: no study to resume here; run without --resume to start one")
    if state is None and storage.exists() and any(storage.iterdir()):
        raise ConfigError(f"{storage}: not empty and not a cnnsearch study; use another --storage or --name")
    if state is not None and not state.get("finished") and not options.resume:
        raise ConfigError(f"{storage}: study {state['name']!r} was interrupted; add --resume to continue it")
    return state


def _check_reachable(address: str) -> None:
    """Fail in seconds on a Ray address nobody answers at: ray.init would wait for minutes."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as error:
        raise ConfigError(f"Ray at {address}: cannot connect ({error}); expected HOST:PORT of a running cluster") from None


def _save_state(storage: Path, **state: Any) -> None:
    storage.mkdir(parents=True, exist_ok=True)
    (storage / _STATE_FILE).write_text(json.dumps(state, indent=2))


def _optuna_study(storage: Path, name: str) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    """The study's Optuna record, kept on disk so a resumed or extended study samples with its whole history.

    Trials that a crash left running are marked failed: the sampler ignores them and the
    study runs them again.
    """
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = JournalStorage(JournalFileBackend(str(storage / "optuna.journal")))
    study = optuna.create_study(storage=journal, study_name=name, direction="maximize", load_if_exists=True)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return study, journal


def run_study(space: Space, options: RunOptions, *, experiment: Experiment | None = None) -> StudyResult:
    """Run, resume or extend a study of ``space``, or the cells of an ablation ``experiment``.

    MLflow is the record of which trials are done: a resumed study deletes the child runs
    that a crash left unfinished and runs only as many trials as are missing.

    Raises:
        ConfigError: an invalid space, an unreachable tracking store or Ray address, or a
            storage folder that belongs to another study; all before any trial starts.
    """
    storage = options.storage.resolve()
    if experiment is not None:
        space = experiment.space
    digest = experiment.digest if experiment else space.digest
    state = _check_storage(storage, digest, options)
    saved = state["settings"] if state else {}
    settings = {key: saved.get(key) if getattr(options, key) is None else getattr(options, key) for key in _SETTINGS}
    space = with_overrides(space, **{key: settings[key] for key in _OVERRIDES})
    cheapest(space)
    trials = len(experiment.cells) if experiment else settings["trials"] or space.search.trials
    sampler_name = "grid" if experiment else settings["sampler"] or space.search.sampler
    # Every cell of a designed ablation gets the full budget.
    scheduler_name = "none" if experiment else settings["scheduler"] or "asha"
    seed = settings["seed"] or 0
    settings |= {"trials": trials, "sampler": sampler_name, "scheduler": scheduler_name, "seed": seed}
    if sampler_name == "grid" and not experiment and (space.size() or 0) < trials:
        raise ConfigError(f"{space.source}: a grid of {space.size()} points cannot fill {trials} trials")
    if not options.verbose:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    tracking_uri = options.tracking_uri or (state["tracking_uri"] if state else DEFAULT_TRACKING_URI)
    client = connect(tracking_uri)
    data = load_dataset(space.dataset.name, cache_dir=options.cache_dir, data_dir=options.data_dir)
    split = split_dataset(data.labels, val_fraction=space.dataset.val_fraction, seed=space.dataset.split_seed, subset=space.dataset.subset)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not options.verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if options.ray_address:
        _check_reachable(options.ray_address)
    try:
        ray.init(
            address=options.ray_address,
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
    concurrent = options.max_concurrent or max(1, int(resources.get("CPU", 1) // cpus))

    experiment_name = options.experiment or (state["experiment"] if state else experiment.name if experiment else space.name)
    tags = {Tags.ABLATION: experiment.name} if experiment else {}
    recorder = Recorder.open(
        client,
        experiment=experiment_name,
        study=options.name,
        space_hash=digest,
        tags=tags,
        parent_run_id=state["parent_run_id"] if state else None,
        params={
            "seed": seed,
            "sampler": sampler_name,
            "scheduler": scheduler_name,
            "dataset": space.dataset.name,
            "epochs": space.budget.epochs,
            "subset": space.dataset.subset,
            "recipe": json.dumps(space.recipe.model_dump()),
            "budget": json.dumps(space.budget.model_dump()),
            **{f"split.{k}": v for k, v in split.describe().items()},
        },
        files=[space.source] + ([experiment.source] if experiment else []),
    )
    recorder.discard_unfinished()
    done = len(recorder.trials())
    study_state = {"name": options.name, "space_hash": digest, "experiment": experiment_name,
                   "parent_run_id": recorder.parent_run_id, "tracking_uri": tracking_uri, "settings": settings}
    _save_state(storage, **study_state, finished=False)
    recorder.set_planned_trials(max(trials, done))

    cells = experiment.cells if experiment else None
    if experiment is not None:
        finished = {row["cell"] for row in recorder.trials()}
        missing = [cell.index for cell in experiment.cells if cell.key not in finished]
        tune_config = tune.TuneConfig(max_concurrent_trials=concurrent, num_samples=1)
        param_space = {"cell": tune.grid_search(missing)}
    else:
        missing = list(range(trials - done))
        study, journal = _optuna_study(storage, options.name)
        searcher = OptunaSearch(
            _DefineByRun(space),
            metric=Metrics.VAL_ACC,
            mode="max",
            # Each session draws new points: the same seed again would repeat the first session's.
            sampler=_sampler(sampler_name, space, seed + len(study.trials), trials),
            storage=journal,
            study_name=options.name,
        )
        scheduler = (
            ASHAScheduler(time_attr="training_iteration", max_t=space.budget.epochs, grace_period=1, reduction_factor=3)
            if scheduler_name == "asha"
            else FIFOScheduler()
        )
        tune_config = tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrent),
            scheduler=scheduler,
            metric=Metrics.VAL_ACC,
            mode="max",
            num_samples=len(missing),
        )
        param_space = None
    if missing:
        trainable = tune.with_resources(
            tune.with_parameters(
                _trial, space=space, cells=cells, data=data, split=split, seed=seed, threads=max(1, int(cpus)),
                device="cuda" if gpus else "cpu",
            ),
            {"cpu": cpus, "gpu": gpus},
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name=f"session-{len(list((storage / 'tune').glob('session-*')))}",
                storage_path=str(storage / "tune"),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[_Tracker(recorder, space, cells, seed, tags, trials, done)],
                verbose=1 if options.verbose else 0,
            ),
        )
        tuner.fit()
    rows = recorder.trials()
    table = [{key: value for key, value in row.items() if key != "knobs"} | row["knobs"] for row in rows]
    best = next((row for row in rows if row[Metrics.VAL_ACC] is not None), None)
    recorder.finish_study(table, best)
    _save_state(storage, **study_state, finished=True)
    return StudyResult(options.name, tracking_uri, recorder.experiment_id, recorder.parent_run_id, rows)
