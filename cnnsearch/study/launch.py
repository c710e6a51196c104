"""Launching a study's trials on Ray Tune: the only module of cnnsearch that imports Ray.

It holds the trainable (:func:`_trial`, one trial in a Ray worker), Ray's start, the Tune
Searchers that hand Tune the proposals of :mod:`.propose` or an ablation's cells, ASHA,
the Tuner with each trial's reservation of CPUs, GPUs and memory, the Tune callback that
forwards each event to :mod:`.record`, and Ctrl-C. The data set is put in Ray's object
store once and shared by every trial; trials on every node write their checkpoints into
the study's storage themselves, so a local storage folder is checked from every node of
a cluster before the study starts (:func:`start`).

A trial's errors are the architecture's or the machine's, and only the machine's are
retried. The architecture's (and its recipe's) are whatever ``train()`` raises while it
builds, trains and validates the network: a shape that does not fit, a batch that batch
norm cannot train on, a CPU out of memory in a network that the memory check let
through. Such a trial reports ``failed`` and ends, and Optuna is told so once. The
machine's are what saving and reporting a checkpoint raise (a full disk, an unreachable
S3, a storage folder that the node cannot see, Ray's own errors), a GPU out of memory
(the GPU's state, which another process may share), and anything raised outside
``train()``; with a lost worker or node they leave the trial to Tune, which runs it again
from its last checkpoint, at most :data:`_RETRIES` times, and records it ``failed`` after that.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import logging
import math
import os
import platform
import resource
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.tune import PlacementGroupFactory
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..config import Arch, ConfigError, Recipe
from ..names import WEIGHTS_FILE, Metrics, Params, Report, Status, Tags
from ..space import Space
from ..storage import Storage, unreachable_reason
from ..train import EpochReport, train
from .guards import GRACE, REDUCTION
from .progress import CtrlC
from .propose import Proposals
from .record import CONFIG_FILE, STATE_FILE, Tracker, trial_document
from .reject import reservation
from .settings import Plan, RunOptions, versioned

__all__ = ["Stop", "run_trials", "start"]

_RETRIES = 2  # of a trial whose machine failed: its worker lost, its checkpoint not saved, its GPU out of memory
_PROBE_S = 120  # a node starts a worker for the storage probe in seconds; one that does not answer in this time is refused


def start(options: RunOptions, storage: Storage) -> tuple[dict[str, float], float]:
    """Start a Ray of our own, or join the cluster at ``options.ray_address``; its resources and its largest node's memory, in bytes.

    On a cluster of several nodes, a local ``storage`` folder is checked from each node (:func:`_check_nodes_reach`).

    Raises:
        ConfigError: Ray cannot be reached there, or a node cannot use the local storage folder.
    """
    if not options.verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        # Tune logs the traceback of each trial whose machine failed; the tracker prints one line per trial instead.
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    try:
        ray.init(
            # "local": a Ray of our own, never one that something else left on this machine.
            address=options.ray_address or "local",
            # A cluster's workers get this cnnsearch from the driver: a node needs only its dependencies.
            runtime_env={"py_modules": [str(Path(__file__).parents[1])], "excludes": ["__pycache__"]} if options.ray_address else None,
            include_dashboard=False,
            log_to_driver=options.verbose,
            logging_level=logging.INFO if options.verbose else logging.ERROR,
            ignore_reinit_error=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ConfigError(f"Ray at {options.ray_address}: cannot connect ({error})") from None
    nodes = [node for node in ray.nodes() if node["Alive"]]
    if storage.local and len(nodes) > 1:
        _check_nodes_reach(storage, nodes)
    return ray.cluster_resources(), max(node["Resources"].get("memory", 0) for node in nodes)


def _check_nodes_reach(storage: Storage, nodes: list[dict[str, Any]]) -> None:
    """Refuse a local storage folder that a node of the cluster cannot use, in one line that names each such node.

    Trials on every node write their checkpoints there: on a node without the folder, or
    with a folder of its own at that path, Ray Tune would fail each trial's first checkpoint.
    A task on each node looks for a file that the driver wrote, and writes one of its own.
    """
    probe = ray.remote(num_cpus=0, max_retries=0)(unreachable_reason)
    with storage.marked() as marker:
        answers = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(storage.root, marker)
                   for node in nodes]
        ready, _ = ray.wait(answers, num_returns=len(answers), timeout=_PROBE_S)
        reasons = [_answer(answer) if answer in ready else f"no answer in {_PROBE_S} s" for answer in answers]
    refused = [f"node {node['NodeManagerAddress']} (id {node['NodeID'][:8]}): {reason}" for node, reason in zip(nodes, reasons) if reason]
    if refused:
        raise ConfigError(
            f"--storage {storage.root}: a folder that not every node of the cluster can use ({'; '.join(refused)}); with several "
            "nodes, give a folder shared at the same path on every node, or a URI such as s3://BUCKET/PATH"
        )


def _answer(answer: ray.ObjectRef) -> str | None:
    """A node's answer to the storage probe: why it cannot use the folder, None if it can."""
    try:
        return ray.get(answer)
    except ray.exceptions.RayError as error:
        return f"its probe failed ({str(error).strip().splitlines()[-1]})"


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


def _resume_state(config: dict[str, Any], storage: Storage) -> dict[str, Any] | None:
    """What a retried or resumed trial goes on from: its own newest checkpoint, else the one it was resumed from."""
    retried = tune.get_checkpoint()
    if retried is not None:
        with retried.as_directory() as saved:
            return torch.load(Path(saved) / STATE_FILE, weights_only=True)
    if config.get("resume"):  # read from the study's storage, wherever this node is
        return torch.load(io.BytesIO(storage.read_bytes(config["resume"])), weights_only=True)
    return None


class _MachineError(Exception):
    """What saving or reporting a checkpoint raised inside ``train()``: the machine's error, which :func:`_trial` raises as it was."""


def _on_machine(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, a callback of ``train()`` that uses the machine (its disk, the storage, Ray): its errors are raised as :class:`_MachineError`."""

    def call(*args: Any) -> Any:
        try:
            return function(*args)
        except Exception as error:
            raise _MachineError from error

    return call


def _trial(config: dict[str, Any], *, space: Space, data: Any, split: Any, threads: int, device: str, storage: Storage) -> None:
    """One Ray Tune trial: train the architecture the driver proposed and checked, or go on with an interrupted one.

    A trial whose architecture fails (an error in ``train()``, a diverging loss) reports
    ``failed`` and ends. The machine's errors (see the module's docstring) leave the trial, for
    Tune to retry it from its checkpoint. Every report says on which node and host the trial runs.
    """
    torch.set_num_threads(threads)
    _release_memory()
    arch = Arch.from_dict(config["arch"])
    node = {Tags.RAY_NODE: ray.get_runtime_context().get_node_id(), Tags.RAY_HOSTNAME: platform.node()}
    resume = _resume_state(config, storage)
    folder = Path(tempfile.mkdtemp(prefix="cnnsearch-checkpoint-"))
    (folder / CONFIG_FILE).write_text(trial_document(config))
    epochs = resume["epoch"] if resume else 0

    def save(state: dict[str, Any], epoch: EpochReport) -> None:
        torch.save(versioned(state), folder / STATE_FILE)
        torch.save({key: value.detach().cpu() for key, value in state["model"].items()}, folder / WEIGHTS_FILE)

    def report(epoch: EpochReport) -> None:
        nonlocal epochs
        epochs = epoch.epoch
        metrics = {key: getattr(epoch, key) for key in Metrics.PER_EPOCH}
        setup = {Metrics.PEAK_LR: epoch.peak_lr, Params.PRECISION: epoch.precision, Metrics.PEAK_RSS: _peak_memory_mib(),
                 Metrics.COMPILE_SECONDS: epoch.compile_seconds}
        # Tune copies the checkpoint into its storage before report returns: the folder can be reused.
        tune.report(
            {Report.EPOCH: epoch.epoch, Report.BUDGET_SPENT: epoch.budget_spent, Report.TRAIN_IMAGES_PER_S: epoch.train_images_per_s, **metrics, **setup,
             **node},
            checkpoint=tune.Checkpoint.from_directory(folder),
        )

    try:
        result = train(arch, data, split, recipe=Recipe.model_validate(config["recipe"]), budget=space.budget, seed=config["record"][Params.SEED], device=device,
                       checkpoint=_on_machine(save), callback=_on_machine(report), resume=resume)
        failure, diverged = (result.message, True) if result.status == Status.DIVERGED else (None, False)
    except _MachineError as error:
        raise error.__cause__ from None  # as it was raised, for Tune to retry the trial
    except torch.cuda.OutOfMemoryError:
        raise  # the GPU's state (another process may hold its memory): retried, and failed if it never fits
    except Exception as error:  # the architecture's or the recipe's failure, not the machine's: no retry
        failure, diverged = ": ".join([type(error).__name__, *str(error).strip().splitlines()[:1]]), False
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if failure is not None:
        # NaN, not 0.0: no scheduler rung or sampler may take a failure for a score.
        tune.report({Report.EPOCH: epochs + 1, Report.FAILED: failure, Report.DIVERGED: diverged, Report.BUDGET_SPENT: False, Metrics.VAL_ACC: math.nan,
                     **node})


class Stop(CtrlC, tune.Stopper):
    """Ctrl-C, seen by every part of the driver: the first stops launching trials and ends the
    running ones after their current epoch (its checkpoint saved); the second stops them at once."""

    def __init__(self) -> None:
        super().__init__("the running ones stop after their current epoch and can be resumed. Ctrl-C again stops them now.")

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self.requested and not result.get(Report.BUDGET_SPENT)

    def stop_all(self) -> bool:
        return False


class _Proposer(Searcher):
    """Tune's side of a search: it asks :class:`~.propose.Proposals` for each trial and tells it each result, until Ctrl-C."""

    def __init__(self, proposals: Proposals, stop: Stop) -> None:
        super().__init__(metric=Metrics.VAL_ACC, mode="max")
        self.proposals, self.stop = proposals, stop

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # the metric and mode are fixed above; the space is ours, not Tune's

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.stop.requested:
            return Searcher.FINISHED
        config = self.proposals.suggest(trial_id)
        return Searcher.FINISHED if config is None else config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.proposals.result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and not error:
            self.proposals.result(trial_id, result)  # Tune withholds the result on which its scheduler stops a trial
        self.proposals.complete(trial_id, result, error, stopping=self.stop.requested)


class _Cells(Searcher):
    """An ablation's missing cells, handed to Tune one by one: each gets the full budget."""

    def __init__(self, configs: list[dict[str, Any]], stop: Stop) -> None:
        super().__init__(metric=Metrics.VAL_ACC, mode="max")
        self.configs, self.stop = list(reversed(configs)), stop

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        return self.configs.pop() if self.configs and not self.stop.requested else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # a designed experiment learns nothing while it runs


def _asha(max_epochs: int, earlier: list[dict[int, float]]) -> ASHAScheduler:
    """ASHA on per-epoch accuracy, its rungs holding the accuracies of the study's ``earlier``
    trials: a resumed or extended study judges a trial against all of them, not only this session's."""
    scheduler = ASHAScheduler(time_attr=Report.EPOCH, max_t=max_epochs, grace_period=GRACE, reduction_factor=REDUCTION)
    # Ray has no public way to seed a rung: record each value as the rung's on_result would have.
    for index, accuracies in enumerate(earlier):
        for bracket in scheduler._brackets:
            for milestone, recorded in bracket._rungs:
                if milestone in accuracies:
                    recorded[f"earlier-{index}"] = accuracies[milestone]
    return scheduler


class _Events(tune.Callback):
    """Tune's events, each forwarded to the :class:`~.record.Tracker`."""

    def __init__(self, tracker: Tracker, stop: Stop) -> None:
        self.tracker, self.stop = tracker, stop

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.start(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.tracker.result(trial, result)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.tracker.progress.heartbeat()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.recovered(trial)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        self.tracker.checkpoint(trial, checkpoint)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.complete(trial, stopping=self.stop.requested)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.error(trial)


def _tune_config(plan: Plan, stop: Stop, missing: int, proposals: Proposals | None, configs: list[dict[str, Any]],
                 earlier: list[dict[int, float]]) -> tune.TuneConfig:
    """An ablation's cells as they come, or a search's proposals under ASHA or none, at most ``plan.concurrent`` at once."""
    # A trial in a running worker starts in milliseconds, a new worker in seconds. Compiled
    # trials get fresh workers: torch.compile's caches would pile up and hit its recompile limit.
    reuse = not plan.space.recipe.compile
    if proposals is None:
        return tune.TuneConfig(search_alg=ConcurrencyLimiter(_Cells(configs, stop), max_concurrent=plan.concurrent), num_samples=missing,
                               reuse_actors=reuse)
    scheduler = _asha(plan.space.budget.epochs, earlier) if plan.settings["scheduler"] == "asha" else FIFOScheduler()
    return tune.TuneConfig(
        search_alg=ConcurrencyLimiter(_Proposer(proposals, stop), max_concurrent=plan.concurrent),
        scheduler=scheduler,
        metric=Metrics.VAL_ACC,
        mode="max",
        num_samples=missing,
        reuse_actors=reuse,
    )


def run_trials(plan: Plan, tracker: Tracker, missing: int, *, proposals: Proposals | None = None,
               configs: list[dict[str, Any]] = (), earlier: list[dict[int, float]] = ()) -> bool:
    """Run ``missing`` trials, a search's ``proposals`` or an ablation's cell ``configs``, until they are done or Ctrl-C stops them.

    ``earlier`` holds the per-epoch accuracies of the study's scored trials, for ASHA's rungs.
    The first Ctrl-C stops launching trials; the second stops the running ones at once.

    Returns:
        Whether Ctrl-C stopped the trials.
    """
    stop, storage, cpus, gpus, largest = Stop(), plan.storage, plan.cpus, plan.gpus, plan.memory
    trainable = tune.with_resources(
        tune.with_parameters(_trial, space=plan.space, data=plan.data, split=plan.split, threads=max(1, int(cpus)),
                             device="cuda" if gpus else "cpu", storage=storage),
        # Each trial reserves the memory it is expected to need: Ray starts no more at once than fit.
        # Ray pickles this function with the trainable: it must not hold the plan, whose data set
        # (CIFAR-10's images are 147 MiB) goes to the trials through the object store, as with_parameters puts it.
        lambda config: PlacementGroupFactory([{"CPU": cpus, "GPU": gpus, "memory": reservation(config, largest)}]),
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=_tune_config(plan, stop, missing, proposals, configs, earlier),
        run_config=tune.RunConfig(
            name=f"session-{sum(name.startswith('session-') for name in storage.listdir(storage.path('tune')))}",
            # Trials on every node write their checkpoints there themselves.
            storage_path=storage.path("tune"),
            storage_filesystem=storage.filesystem,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # A lost worker, node or raylet, the out-of-memory killer, or another of the machine's
            # errors: the trial goes on from its checkpoint. The architecture's errors end it as
            # failed instead (see the module's docstring).
            failure_config=tune.FailureConfig(max_failures=_RETRIES),
            callbacks=[_Events(tracker, stop)],
            stop=stop,
            verbose=1 if plan.options.verbose else 0,
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
    return stop.requested
