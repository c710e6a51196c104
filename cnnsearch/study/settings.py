"""A study's settings: the options it runs with, their resolution, and every check that can refuse it.

:func:`resolve` takes the options, the space (or an ablation's experiment) and the state
that an earlier session saved in the study's storage, and returns a :class:`Plan`: the
resolved settings, the connected tracking store, the loaded data and the cluster's share
of each trial, or a tabular study's table (:mod:`cnnsearch.tabular`), which needs neither
data nor Ray. Every refusal (a storage that holds another study or state of another
version, settings or a recipe that would not compare with a resumed study's, a space that
a tabular study's table does not hold, a prefilter of an unknown proxy, a pool under 1, several objectives
or, in a tabular study, images that do not fit the table's networks, an unreachable tracking store or one without the
study's records, an unreachable Ray address, a local storage folder that a node of the
cluster cannot use, a precision the trials' devices lack) raises
:class:`~cnnsearch.config.ConfigError` there, before anything is written to MLflow or to
the study's storage; a finished study that already holds every trial it is asked for raises
:class:`~cnnsearch.config.AlreadyFinished` there, before its data is loaded or Ray started.
On a new study it applies the guards for short budgets of :mod:`.guards` (a validation
sample where the validation split outweighs the training subset, no ASHA where its rungs
cannot judge the trials), and :attr:`Plan.notes` holds a line for each that acted.
This module also reads and writes the study's state file, and holds
the version of every state file a study keeps (:data:`STATE_VERSION`). It imports neither
Ray nor Optuna: Ray is started through the function that :func:`resolve` is given.

A study folder can move: paths inside it are relative to its root, and a sqlite tracking
store inside the folder or above it is found where it lies from the folder now (see
:func:`_saved_store` and :func:`_tracking_uri`).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import AlreadyFinished, ConfigError
from ..data import held_out_test_fraction, load_dataset, split_dataset
from ..experiment import Experiment
from ..names import DEFAULT_TRACKING_URI, Status
from ..costs import cheapest
from ..space import Prefilter, Space
from ..storage import Storage
from ..train import data_shape
from ..tabular import TABLE_EPOCHS, Table, check_space, load_table, nasbench201_cost, table_name
from ..tracking import connect, trial_statuses
from .guards import asha_objection, default_val_subset, val_subset_note

__all__ = ["STATE_VERSION", "Plan", "RunOptions", "check_version", "concurrency", "resolve", "save_state", "versioned", "with_overrides"]

_STATE_FILE = "cnnsearch.json"
# The format of every state file of a study: cnnsearch.json, each trial's trial.json and each
# checkpoint's train_state.pt. A cnnsearch reads only its own version; raise it with any change.
STATE_VERSION = 1
_VERSION = "version"  # the key that holds it
_SQLITE = "sqlite:///"


@dataclass(frozen=True)
class RunOptions:
    """How to run a study; every field has a command-line flag of the same name."""

    name: str
    storage: str | Path  # a folder, or a URI that pyarrow.fs opens (cnnsearch.storage)
    resume: bool = False
    # Left as None, these take the value a resumed study was started with, else the default.
    trials: int | None = None  # default: the space's search.trials
    sampler: str | None = None  # default: the space's search.sampler, else tpe, or nsga2 for several objectives
    scheduler: str | None = None  # default: asha where its rungs can judge the trials (guards.asha_objection), else none
    seed: int | None = None  # default: 0
    dataset: str | None = None  # default: the space's dataset.name
    epochs: int | None = None  # default: the space's budget.epochs
    subset: int | None = None  # default: the space's dataset.subset
    val_fraction: float | None = None  # default: the space's dataset.val_fraction
    test_fraction: float | None = None  # default: the space's dataset.test_fraction
    val_subset: int | None = None  # default: the space's dataset.val_subset, else a new study's guards.default_val_subset
    lr: float | str | None = None  # default: the space's recipe.lr ("auto" runs a range test per trial)
    batch_size: int | None = None  # default: the space's recipe.batch_size
    precision: str | None = None  # default: the space's recipe.precision
    compile: bool | None = None  # default: the space's recipe.compile
    latency_device: str | None = None  # default: cpu; what measures each trial's latency_ms (cnnsearch.costs.latency)
    tabular: str | None = None  # default: none, trials train; a table of cnnsearch.names.TABLES looks each accuracy up instead
    prefilter: str | None = None  # default: the space's search.prefilter; PROXY:POOL trains the best of each POOL proposals by PROXY
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
class Plan:
    """A study that every check let through: what :func:`resolve` found, for the rest of the driver."""

    options: RunOptions
    storage: Storage
    space: Space  # with the options' overrides applied; an ablation's experiment's space
    experiment: Experiment | None
    digest: str  # of the space, or of the experiment
    state: dict[str, Any] | None  # what an earlier session saved, if any
    settings: dict[str, Any]  # every setting, resolved: the options, else the saved ones, else the defaults
    experiment_name: str  # MLflow's
    tracking_uri: str
    client: Any  # MLflow's, connected
    data: Any  # None for a tabular study, which reads no image, unless a prefilter needs its batch
    split: Any  # likewise
    cpus: float  # of each trial
    gpus: float  # of each trial: none where the cluster has none
    concurrent: int
    memory: float  # the largest Ray node's memory resource, in bytes; 0 for a tabular study, which starts no Ray
    table: Table | None = None  # a tabular study's: its trials' accuracies are looked up there, in the driver
    notes: tuple[str, ...] = ()  # what the guards for short budgets chose (.guards), a line each, for the opening lines

    @property
    def trials(self) -> int:
        return self.settings["trials"]


_DATASET_SETTINGS = ("dataset", "subset", "val_fraction", "test_fraction", "val_subset")
_OVERRIDES = (*_DATASET_SETTINGS, "epochs", "lr", "batch_size", "precision", "compile")
_SETTINGS = ("trials", "sampler", "scheduler", "seed", "latency_device", "tabular", "prefilter", *_OVERRIDES)


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


def concurrency(resources: dict[str, float], cpus_per_trial: float, gpus_per_trial: float) -> int:
    """How many trials fit at once in a cluster's ``resources``: the scarcer of CPUs and GPUs decides."""
    fits = [resources.get("CPU", 1) / cpus_per_trial]
    if gpus_per_trial:
        fits.append(resources.get("GPU", 0) / gpus_per_trial)
    return max(1, int(min(fits) + 1e-9))  # 1 / 0.1 is 9.999...


def resolve(space: Space, options: RunOptions, experiment: Experiment | None,
            start_ray: Callable[[RunOptions, Storage], tuple[dict[str, float], float]]) -> Plan:
    """Resolve the study's settings and run every check that can refuse it, in the order their messages are seen.

    Args:
        space: the space to search; an ``experiment`` brings its own.
        options: the command line's.
        experiment: an ablation's design, or None for a search.
        start_ray: starts or joins Ray, refuses a local storage folder that one of its nodes cannot use, and returns its
            cluster resources and its largest node's memory.

    Raises:
        ConfigError: the storage holds another study or state of another version, or cannot be
            read, the settings or the resolved recipe differ from a resumed study's, the space or a
            setting is invalid, a tabular study's table is unknown or not installed or its space can
            draw networks the table lacks, the tracking store lacks the resumed study's parent run,
            the tracking store, the data or Ray cannot be reached, a node of the cluster cannot use the local storage folder, or the trials' devices lack the precision.
        AlreadyFinished: the study has finished, and holds every trial it is asked for.
    """
    storage = Storage.open(options.storage)
    if experiment is not None:
        space = experiment.space
    digest = experiment.digest if experiment else space.digest
    state = _check_storage(storage, digest, options)
    space, settings = _settings(space, options, experiment, state)
    table = _table(space, experiment, settings["tabular"])
    tracking_uri = _tracking_uri(options, state, storage)
    client = connect(tracking_uri, holding=state["parent_run_id"] if state else None)
    if state is not None and state.get("finished"):
        _check_more_to_run(state, settings["trials"], client, experiment is not None, tracking_uri)
    # A tabular study starts no Ray: its driver looks each trial up, one at a time; it reads images only for a prefilter's batch.
    if table:
        (data, split), notes = _prefilter_data(space, options, table, settings["prefilter"]), []
    else:
        space, data, split, notes = _data(space, options, settings, state)
    gpus, concurrent, memory = (0.0, 1, 0.0) if table else _cluster(space, options, storage, start_ray)
    experiment_name = options.experiment or (state["experiment"] if state else experiment.name if experiment else space.name)
    return Plan(options, storage, space, experiment, digest, state, settings, experiment_name, tracking_uri, client, data, split,
                options.cpus_per_trial, gpus, concurrent, memory, table, tuple(notes))


def _split(space: Space, data: Any) -> Any:
    dataset = space.dataset
    return split_dataset(data.labels, val_fraction=dataset.val_fraction, seed=dataset.split_seed, subset=dataset.subset,
                         val_subset=dataset.val_subset, test_fraction=held_out_test_fraction(dataset.name, dataset.test_fraction))


def _data(space: Space, options: RunOptions, settings: dict[str, Any],
          state: dict[str, Any] | None) -> tuple[Space, Any, Any, list[str]]:
    """The space, the data and its split, after the guards for short budgets (:mod:`.guards`), and a line for each that acted.

    They act on a new study only, on what no flag or space file set: a resumed one goes on with
    the validation images and the scheduler it began with, which its state file holds. Sets
    ``settings``' val_subset (and the space's) to the sample it validates on, and its scheduler
    to none where ASHA's rungs could not judge its trials.
    """
    data = load_dataset(space.dataset.name, cache_dir=options.cache_dir, data_dir=options.data_dir)
    split, notes = _split(space, data), []
    sample = default_val_subset(len(split.train), len(split.val)) if state is None and space.dataset.val_subset is None else None
    if sample is not None:
        notes.append(val_subset_note(sample, len(split.train), len(split.val)))
        space, settings["val_subset"] = with_overrides(space, val_subset=sample), sample
        split = _split(space, data)
    objection = asha_objection(space.budget.epochs, len(split.val)) if settings["scheduler"] == "asha" else None
    if objection and options.scheduler is None and state is None:
        settings["scheduler"] = "none"
        notes.append(f"no early stopping: {objection}; --scheduler asha stops trials anyway")
    elif objection:
        notes.append(f"ASHA stops trials early, as the study asks, though {objection}")
    return space, data, split, notes


def _cluster(space: Space, options: RunOptions, storage: Storage,
             start_ray: Callable[[RunOptions, Storage], tuple[dict[str, float], float]]) -> tuple[float, int, float]:
    """From Ray: each trial's GPUs, the trials at once and the largest node's memory."""
    if options.ray_address:
        _check_reachable(options.ray_address)
    resources, memory = start_ray(options, storage)
    # A GPU request where there is none would leave every trial pending forever.
    gpus = options.gpus_per_trial if resources.get("GPU", 0) > 0 else 0.0
    if space.recipe.precision == "fp16" and not gpus:
        raise ConfigError("precision fp16 needs a CUDA device, and these trials run on CPUs; use bf16 or fp32")
    concurrent = options.max_concurrent or concurrency(resources, options.cpus_per_trial, gpus)
    return gpus, concurrent, memory


def _prefilter_data(space: Space, options: RunOptions, table: Table, prefilter: dict[str, Any] | None) -> tuple[Any, Any]:
    """A tabular study's data and split, which only a prefilter reads a batch of; none without one.

    Raises:
        ConfigError: the data cannot be read, or its images do not fit the table's networks.
    """
    if prefilter is None:
        return None, None
    data = load_dataset(space.dataset.name, cache_dir=options.cache_dir, data_dir=options.data_dir)
    if data_shape(data) != table.shape:
        found, wanted = data_shape(data), table.shape
        raise ConfigError(f"--prefilter {prefilter['proxy']}:{prefilter['pool']}: {data.source} has {found['num_classes']} classes of "
                          f"{found['input_size']}x{found['input_size']} images, and {table.name}'s networks take {wanted['num_classes']} "
                          f"classes of {wanted['input_size']}x{wanted['input_size']}: its images do not fit them")
    # Nothing trains: the batch is drawn from all the training images, not the space's subset of them.
    split = split_dataset(data.labels, val_fraction=space.dataset.val_fraction, seed=space.dataset.split_seed,
                          test_fraction=held_out_test_fraction(space.dataset.name, space.dataset.test_fraction))
    return data, split


def _settings(space: Space, options: RunOptions, experiment: Experiment | None,
              state: dict[str, Any] | None) -> tuple[Space, dict[str, Any]]:
    """The space with the settings' overrides, and every setting resolved; refuses the ones that cannot work together."""
    saved = state["settings"] if state else {}
    settings = {key: saved.get(key) if getattr(options, key) is None else getattr(options, key) for key in _SETTINGS}
    if state:
        _check_unchanged(space, state, settings)
    space = with_overrides(space, **{key: settings[key] for key in _OVERRIDES})
    tabular = _tabular(settings["tabular"], options, state)
    if not tabular:  # a tabular study's space is checked against its table first (_table)
        cheapest(space)
    trials = len(experiment.cells) if experiment else settings["trials"] or space.search.trials
    sampler = "grid" if experiment else settings["sampler"] or space.sampler
    # Every cell of a designed ablation gets the full budget; so does every trial of a study
    # with several objectives (docs/search.md, "Several objectives": ASHA ranks by accuracy alone,
    # and would stop the cheap, less accurate trials that belong on the front).
    several = len(space.objectives) > 1
    scheduler = "none" if experiment else settings["scheduler"] or ("none" if several or tabular else "asha")
    if several and scheduler == "asha":
        raise ConfigError(
            f"{space.source}: --scheduler asha stops trials by accuracy alone, which would cut the cheap end of the front "
            f"of {len(space.objectives)} objectives; leave --scheduler out (none) for a study with several objectives"
        )
    if tabular and scheduler == "asha":
        raise ConfigError(f"--tabular {tabular}: the table holds each cell's accuracy after {TABLE_EPOCHS} epochs only, so there is "
                          "no earlier epoch to stop a trial at; leave --scheduler out (none)")
    seed = settings["seed"] or 0
    if state and options.latency_device and options.latency_device != saved.get("latency_device", "cpu"):
        raise ConfigError(
            f"study {state['name']!r} was run with --latency-device {saved.get('latency_device', 'cpu')}, not {options.latency_device}: "
            "its latencies would not compare; leave --latency-device out to go on with it, or use --name to start a new study"
        )
    latency_device = settings["latency_device"] or "cpu"
    if latency_device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--latency-device cuda: the driver's machine has no CUDA device; use cpu or onnxruntime")
    prefilter = _prefilter(space, settings["prefilter"], experiment)
    settings |= {"trials": trials, "sampler": sampler, "scheduler": scheduler, "seed": seed, "latency_device": latency_device, "tabular": tabular,
                 "prefilter": prefilter}
    if sampler == "grid" and not experiment:
        _check_grid(space, trials)
    return space, settings


def _prefilter(space: Space, setting: str | dict[str, Any] | None, experiment: Experiment | None) -> dict[str, Any] | None:
    """The study's prefilter as cnnsearch.json saves it: ``--prefilter`` (or a resumed study's), else the space's; none for an ablation.

    Raises:
        ConfigError: an unknown proxy, a pool under 1, or a prefilter for a study of several objectives.
    """
    if experiment is not None:
        return None  # an ablation trains each of its designed cells
    found = Prefilter.parse(setting) if isinstance(setting, str) else Prefilter(**setting) if setting else space.search.prefilter
    if found is not None and len(space.objectives) > 1:
        raise ConfigError(f"{space.source}: a prefilter ranks proposals by a proxy of accuracy alone, and would pass over the cheap end "
                          f"of the front of {len(space.objectives)} objectives; leave search.prefilter and --prefilter out")
    return found.model_dump() if found is not None else None


def _table(space: Space, experiment: Experiment | None, name: str | None) -> Table | None:
    """A tabular study's table, once its space (or its ablation's cells) draws only networks the table holds, within the limits."""
    if name is None:
        return None
    table = load_table(name)
    check_space(space, table, experiment)
    cheapest(space, nasbench201_cost)  # what profile counts, in milliseconds rather than seconds
    return table


def _tabular(name: str | None, options: RunOptions, state: dict[str, Any] | None) -> str | None:
    """The full name of the table a study looks its accuracies up in, or None; refuses what a tabular study cannot do.

    Raises:
        ConfigError: an unknown table, another one than a resumed study's (or one for a study
            that trained), --ray-address or --latency-device with a table.
    """
    tabular = table_name(name) if name else None
    if state and tabular != state["settings"].get("tabular"):
        before = state["settings"].get("tabular")
        began = f"looked its accuracies up in {before}" if before else "trained its trials"
        raise ConfigError(
            f"study {state['name']!r} {began}, not " + (f"in {tabular}" if tabular else "from a table")
            + ": its trials would not compare; leave --tabular out to go on with it, or use --name to start a new study"
        )
    if tabular and options.ray_address:
        raise ConfigError(f"--tabular {tabular}: a tabular study looks its trials up in the driver and starts no Ray; leave --ray-address out")
    if tabular and options.latency_device:
        raise ConfigError(f"--tabular {tabular}: each trial's latency_ms is the table's; leave --latency-device out")
    return tabular


# A grid is for running every point of a small space. Past a million points no study runs
# through it, and the few points one runs are a random search: --sampler random does that.
GRID_LIMIT = 1_000_000


def _check_grid(space: Space, trials: int) -> None:
    """Refuse a grid that cannot be built (a continuous knob), that no study runs through, or that has fewer points than ``trials``."""
    points = len(space.grid())  # counted by products, one per combination of the stages' families: nothing is listed
    if points > GRID_LIMIT:
        raise ConfigError(
            f"{space.source}: --sampler grid would enumerate {points:,} points, more than the {GRID_LIMIT:,} "
            "a grid study may run through; narrow the space, or use another --sampler"
        )
    if points < trials:
        raise ConfigError(f"{space.source}: a grid of {points} points cannot fill {trials} trials")


def _setting(space: Space, key: str) -> Any:
    """The value a study setting resolves to in ``space``."""
    section = space.dataset if key in _DATASET_SETTINGS else space.budget if key == "epochs" else space.recipe
    return getattr(section, "name" if key == "dataset" else key)


def _recipe(space: Space) -> dict[str, Any]:
    """The space's recipe, every default filled in, as cnnsearch.json saves it."""
    return space.recipe.model_dump(mode="json")


def _check_unchanged(space: Space, state: dict[str, Any], settings: dict[str, Any]) -> None:
    """Refuse to go on with a study under other data, budget or recipe: its trials would not compare.

    The flags are compared first, for a message that names the flag; then the whole resolved
    recipe, which also differs where this cnnsearch's defaults differ from those that began it.
    """
    saved, study = state["settings"], state["name"]
    before = with_overrides(space, **{key: saved[key] for key in _OVERRIDES})
    after = with_overrides(space, **{key: settings[key] for key in _OVERRIDES})
    for key in _OVERRIDES:
        old, new = _setting(before, key), _setting(after, key)
        if old != new:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"study {study!r} was run with {flag} {old}, not {new}: its trials would not compare; "
                f"leave {flag} out to go on with it, or use --name to start a new study"
            )
    before, now = state["recipe"], _recipe(after)
    for key in [*now, *(key for key in before if key not in now)]:
        if before.get(key, "unset") != now.get(key, "unset"):
            raise ConfigError(
                f"study {study!r} was trained with recipe {key} {before.get(key, 'unset')}, not {now.get(key, 'unset')} "
                "(the space's recipe or this cnnsearch's defaults differ): its trials would not compare; go on with it under "
                "the cnnsearch that began it, or use --name to start a new study"
            )


def versioned(document: dict[str, Any]) -> dict[str, Any]:
    """``document``, a state file's content, with this cnnsearch's :data:`STATE_VERSION`."""
    return document | {_VERSION: STATE_VERSION}


def check_version(document: dict[str, Any], where: str) -> dict[str, Any]:
    """``document``, the content of state file ``where``, without its version, which must be :data:`STATE_VERSION`.

    Raises:
        ConfigError: another version, or none (an earlier cnnsearch wrote it); one line that names the file.
    """
    found = document.get(_VERSION)
    if found != STATE_VERSION:
        written = f"state version {found}" if found is not None else "state of no version (an earlier cnnsearch's)"
        raise ConfigError(
            f"{where}: {written}, and this cnnsearch reads version {STATE_VERSION}; go on with the study under the "
            "cnnsearch that wrote it, or start a new study with another --storage"
        )
    return {key: value for key, value in document.items() if key != _VERSION}


def _load_state(storage: Storage) -> dict[str, Any] | None:
    """The study state that an earlier session saved in ``storage``, if any; refuses state of another version."""
    state_file = storage.path(_STATE_FILE)
    if not storage.exists(state_file):
        return None
    return check_version(json.loads(storage.read_text(state_file)), storage.describe(state_file))


def _saved_store(uri: str, storage: Storage) -> dict[str, str]:
    """How cnnsearch.json saves the tracking store ``uri``: where it is, and where it is from the storage folder.

    ``tracking_uri`` is ``uri`` with a relative sqlite path made absolute (MLflow reads it
    from the working directory). A sqlite file inside a local storage folder or in a folder
    above it (``mlflow.db`` beside ``--storage runs``, or above the default
    ``cnnsearch_runs/NAME``) is also saved as ``tracking_store``, its path relative to the
    storage folder, so that the two can move together.
    """
    if not uri.startswith(_SQLITE) or "?" in uri:
        return {"tracking_uri": uri}
    path, root = Path(uri.removeprefix(_SQLITE)).resolve(), Path(storage.root)
    saved = {"tracking_uri": _SQLITE + path.as_posix()}
    if storage.local and (path.is_relative_to(root) or root.is_relative_to(path.parent)):
        saved["tracking_store"] = os.path.relpath(path, root)
    return saved


def _tracking_uri(options: RunOptions, state: dict[str, Any] | None, storage: Storage) -> str:
    """The study's tracking store: ``--tracking-uri`` always; else, resuming, the saved one; else the default.

    A saved sqlite store is looked for where it lies from the storage folder now (the two
    moved together), then where it was (the storage folder moved alone).
    """
    if options.tracking_uri or state is None:
        return options.tracking_uri or DEFAULT_TRACKING_URI
    beside = (Path(storage.root) / state["tracking_store"]).resolve() if "tracking_store" in state and storage.local else None
    return _SQLITE + beside.as_posix() if beside is not None and beside.is_file() else state["tracking_uri"]


def _check_storage(storage: Storage, digest: str, options: RunOptions) -> dict[str, Any] | None:
    """The saved study state, if any; refuses a folder that holds something else.

    Raises:
        ConfigError: as above, or the storage cannot be reached (no such bucket, no credentials), or
            its state is of another version.
    """
    try:
        state = _load_state(storage)
        others = storage.listdir(storage.root) if state is None else []
    except OSError as error:
        raise ConfigError(f"--storage {storage.uri}: cannot be read ({str(error).strip().splitlines()[0]})") from None
    if state is not None and state["space_hash"] != digest:
        raise ConfigError(
            f"{storage.uri}: holds study {state['name']!r} of another space or experiment (hash {state['space_hash']}, "
            f"not {digest}); use another --storage or --name"
        )
    if state is not None and (options.name != state["name"] or options.experiment not in (None, state["experiment"])):
        # A folder holds one study: another's trials would land under this one's parent run.
        raise ConfigError(
            f"{storage.uri}: holds study {state['name']!r} (experiment {state['experiment']!r}); go on with it under that "
            "--name and --experiment, or give this study another --storage"
        )
    if options.resume and state is None:
        raise ConfigError(f"{storage.uri}: no study to resume here; run without --resume to start one")
    if others:
        raise ConfigError(f"{storage.uri}: not empty and not a cnnsearch study; use another --storage or --name")
    if state is not None and not state.get("finished") and not options.resume:
        raise ConfigError(f"{storage.uri}: study {state['name']!r} was interrupted; add --resume to continue it")
    return state


def _check_more_to_run(state: dict[str, Any], trials: int, client: Any, ablation: bool, tracking_uri: str) -> None:
    """Stop a finished study that already holds ``trials`` trials, before its data is loaded or Ray started.

    As the driver counts them: every trial of a search, whatever its status, but an
    ablation's failed cells run again; a trial left unfinished is resumed.

    Raises:
        AlreadyFinished: nothing to run.
    """
    statuses = trial_statuses(client, state["parent_run_id"])
    done = [status for status in statuses if status is not None and not (ablation and status == Status.FAILED)]
    if None in statuses or len(done) < trials:
        return
    more = "more --seeds add replicates" if ablation else "a larger --trials adds more"
    raise AlreadyFinished(f"study {state['name']!r} has already finished its {len(done)} trials; nothing to run ({more})", tracking_uri)


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


def save_state(plan: Plan, parent_run_id: str, *, finished: bool) -> None:
    """Write the study's state into its storage: what a later session checks and goes on with."""
    state = {"name": plan.options.name, "space_hash": plan.digest, "experiment": plan.experiment_name, "parent_run_id": parent_run_id,
             **_saved_store(plan.tracking_uri, plan.storage), "settings": plan.settings, "recipe": _recipe(plan.space),
             "finished": finished}
    plan.storage.write_text(plan.storage.path(_STATE_FILE), json.dumps(versioned(state), indent=2))
