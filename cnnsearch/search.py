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
import sys
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
from .profile import cheapest, profile
from .space import Fixed, Space
from .tracking import Metrics, Recorder, connect
from .train import EpochReport, fit_to_data, train

__all__ = ["RunOptions", "run_study", "searched_knobs"]

_STATE_FILE = "cnnsearch.json"


@dataclass(frozen=True)
class RunOptions:
    """How to run a study; every field has a command-line flag of the same name."""

    name: str
    storage: Path
    resume: bool = False
    trials: int | None = None  # default: the space's search.trials
    sampler: str | None = None  # default: the space's search.sampler
    scheduler: str = "asha"
    max_concurrent: int | None = None  # default: as many as the CPUs allow
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    ray_address: str | None = None
    experiment: str | None = None  # default: the space's name
    tracking_uri: str = "sqlite:///mlflow.db"
    seed: int = 0
    verbose: bool = False
    cache_dir: str | None = None
    data_dir: str | None = None


def _sampler(name: str, space: Space, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    return optuna.samplers.NSGAIISampler(seed=seed)


def _trial(config: dict[str, Any], *, space: Space, data: Any, split: Any, seed: int, threads: int, device: str) -> None:
    """One Ray Tune trial: build the sampled architecture, reject it if over the limits, train it."""
    torch.set_num_threads(threads)
    try:
        arch = fit_to_data(space.sample(optuna.trial.FixedTrial(config)), data)
    except ConfigError as error:
        tune.report({"status": "rejected", "reason": str(error), Metrics.VAL_ACC: 0.0, "epoch": 0})
        return
    cost = profile(arch)
    costs = {Metrics.PARAMS: cost.params, Metrics.MACS: cost.macs, Metrics.FLOPS: cost.flops}
    violation = space.limits.violation(cost.params, cost.macs)
    if violation:
        tune.report({"status": "rejected", "reason": violation, Metrics.VAL_ACC: 0.0, "epoch": 0, **costs})
        return

    def report(epoch: EpochReport) -> None:
        metrics = {key: getattr(epoch, key) for key in Metrics.PER_EPOCH}
        tune.report({"status": "running", "epoch": epoch.epoch, "train_images_per_s": epoch.train_images_per_s, **metrics, **costs})

    result = train(arch, data, split, recipe=space.recipe, budget=space.budget, seed=seed, device=device, callback=report)
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

    Tune pickles its callbacks with the experiment and restores them on resume; all the
    state that matters is in MLflow, so a restored tracker carries on.
    """

    def __init__(self, recorder: Recorder, space: Space, total: int) -> None:
        self.recorder, self.space, self.total = recorder, space, total
        self.started = time.monotonic()

    def _run(self, trial: Any) -> str:
        return self.recorder.start_trial(trial.trial_id, _all_knobs(self.space, trial.config), space_hash=self.space.digest)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run(trial)
        try:
            arch = self.space.sample(optuna.trial.FixedTrial(trial.config))
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

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "failed", _error_of(trial))

    def _finish(self, trial: Any, status: str, reason: str = "") -> None:
        self.recorder.finish_trial(self._run(trial), status, reason)
        done = self.recorder.trials()
        counts = {s: sum(row["status"] == s for row in done) for s in ("completed", "stopped early", "rejected", "failed")}
        best = done[0] if done and done[0][Metrics.VAL_ACC] is not None else None
        elapsed = time.monotonic() - self.started
        finished_here = max(1, len(done))
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


def _all_knobs(space: Space, config: dict[str, Any]) -> dict[str, Any]:
    """The sampled knobs and the fixed ones: every knob of the trial, by dotted name."""
    fixed = {name: knob.value for name, knob in space.knobs().items() if isinstance(knob, Fixed)}
    return {**fixed, **config}


def _check_storage(storage: Path, space: Space, options: RunOptions) -> dict[str, Any] | None:
    """The saved study state when resuming; refuses a folder that holds something else."""
    state_file = storage / _STATE_FILE
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    if state is not None and state["space_hash"] != space.digest:
        raise ConfigError(
            f"{storage}: holds study {state['name']!r} of another space (hash {state['space_hash']}, "
            f"not {space.digest}); use another --storage or --name"
        )
    if options.resume and state is None:
        raise ConfigError(f"{storage}: no study to resume here; run without --resume to start one")
    if not options.resume and storage.exists() and any(storage.iterdir()):
        raise ConfigError(f"{storage}: already holds a study; add --resume to continue it, or use another --name")
    return state


def run_study(space: Space, options: RunOptions) -> list[dict[str, Any]]:
    """Run (or resume) a study of ``space`` and return its finished trials, best first.

    Each trial is a dict: trial_id, run_id (MLflow), status, val_acc, params, macs, knobs.

    Raises:
        ConfigError: an invalid space, an unreachable tracking store or Ray address, or a
            storage folder that belongs to another study; all before any trial starts.
    """
    cheapest(space)
    trials = options.trials or space.search.trials
    sampler_name = options.sampler or space.search.sampler
    if sampler_name == "grid" and (space.size() or 0) < trials:
        raise ConfigError(f"{space.source}: a grid of {space.size()} points cannot fill {trials} trials")
    storage = options.storage.resolve()
    state = _check_storage(storage, space, options)
    if not options.verbose:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    client = connect(options.tracking_uri)
    data = load_dataset(space.dataset.name, cache_dir=options.cache_dir, data_dir=options.data_dir)
    split = split_dataset(data.labels, val_fraction=space.dataset.val_fraction, seed=space.dataset.split_seed, subset=space.dataset.subset)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not options.verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
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

    experiment = options.experiment or space.name
    recorder = Recorder.open(
        client,
        experiment=experiment,
        study=options.name,
        space_hash=space.digest,
        parent_run_id=state["parent_run_id"] if state else None,
        params={
            "seed": options.seed,
            "sampler": sampler_name,
            "scheduler": options.scheduler,
            "trials": trials,
            "dataset": space.dataset.name,
            "epochs": space.budget.epochs,
            "subset": space.dataset.subset,
            **{f"split.{k}": v for k, v in split.describe().items()},
        },
        space_file=space.source,
    )
    storage.mkdir(parents=True, exist_ok=True)
    (storage / _STATE_FILE).write_text(
        json.dumps({"name": options.name, "space_hash": space.digest, "experiment_id": recorder.experiment_id,
                    "parent_run_id": recorder.parent_run_id, "tracking_uri": options.tracking_uri})
    )

    trainable = tune.with_resources(
        tune.with_parameters(
            _trial, space=space, data=data, split=split, seed=options.seed, threads=max(1, int(cpus)),
            device="cuda" if gpus else "cpu",
        ),
        {"cpu": cpus, "gpu": gpus},
    )
    run_config = tune.RunConfig(
        name=storage.name,
        storage_path=str(storage.parent),
        callbacks=[_Tracker(recorder, space, trials)],
        verbose=1 if options.verbose else 0,
    )
    if state is not None:
        tuner = tune.Tuner.restore(str(storage), trainable, resume_unfinished=True, resume_errored=False)
    else:
        searcher = OptunaSearch(
            _DefineByRun(space), metric=Metrics.VAL_ACC, mode="max", sampler=_sampler(sampler_name, space, options.seed)
        )
        scheduler = (
            ASHAScheduler(time_attr="training_iteration", max_t=space.budget.epochs, grace_period=1, reduction_factor=3)
            if options.scheduler == "asha"
            else FIFOScheduler()
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrent),
                scheduler=scheduler,
                metric=Metrics.VAL_ACC,
                mode="max",
                num_samples=trials,
            ),
            run_config=run_config,
        )
    tuner.fit()
    rows = recorder.trials()
    table = [{key: value for key, value in row.items() if key != "knobs"} | row["knobs"] for row in rows]
    best = next((row for row in rows if row[Metrics.VAL_ACC] is not None), None)
    recorder.finish_study(table, best)
    return rows
