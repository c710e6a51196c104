"""Proposing trials, and reading a finished study's knob importances: the only module of cnnsearch that imports Optuna.

It holds the samplers (by the names in :data:`cnnsearch.names.SAMPLERS`; the grid is our
own, each point of the space once with only the knobs it uses, and so is
:class:`RegularizedEvolution`, which Optuna's core lacks), the study's
Optuna record (a journal in the study's storage), and :class:`Proposals`: Optuna's ask
and tell, with each proposal fitted and checked by :mod:`.reject` before it is handed on.
Ray Tune's Searcher that asks it for trials lives in :mod:`.launch`. :func:`importances`
scores a finished study's knobs with Optuna's fANOVA or PED-ANOVA.

Tight limits. A proposal over the space's limits is told to Optuna as failed, which every
sampler ignores, and in its place the nearest point of the space within the limits
(:class:`.reject.WithinLimits`) is enqueued and trained: a trial of the study like any
other, which the sampler learns from by its real result. So a space whose limits admit one
draw in a thousand still trains ``--trials`` architectures, and no sampler is told an
accuracy that was never measured. Optuna's own constraints (``Trial.set_constraint``) do
not serve: TPE reads them only from complete or pruned trials, NSGA-II and GP only from
complete ones, so none would learn from a failed proposal's, and a complete one needs
values it never had; the random sampler ignores them; and a sampler that learns the
feasible region from rejected proposals still spends many of them, where costs known
before training bring a proposal within the limits in a few profiles. The grid does
without: it visits each of its own points once, and an enqueued point would be one it visits again.

A prefilter (:mod:`.prefilter`) asks the sampler for a pool of K proposals and trains only
the one its proxy scores highest. The K-1 others are told to Optuna as failed, with the
proxy's value as a user attribute: every sampler ignores a failed trial, so none of them
is taken for an accuracy it never had, nor for a bad one (a pruned trial would be, by TPE);
the sampler learns from the trials it trains, whose proposals the proxy chose. They are no
trials of the study: not counted in ``--trials``, not rejected, and recorded only in the
parent run's ``passed_over.csv``; a grid visits their points, as it does a rejected proposal's.
"""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch

from ..config import Arch, ConfigError
from ..names import SAMPLERS, SCORED, Metrics, Report, Status, Tags
from ..space import Choice, FloatRange, Fixed, Grid, IntRange, Objective, Space, load_space
from ..storage import RecordLog, Storage
from ..tracking import StudyRecord
from .prefilter import Prefilter, open_prefilter, proxy_metric
from .reject import OverLimits, Target, WithinLimits, fitted, fixed_values, trial_config
from .settings import Plan

__all__ = ["MIN_IMPORTANCE_TRIALS", "Importances", "Proposals", "RegularizedEvolution", "importances", "make_sampler", "passed_over_proposals",
           "rejected_proposals"]

# Optuna's INFO lines ("A new study created in memory", each trial's result) are its bookkeeping:
# cnnsearch says what a study is doing itself.
optuna.logging.set_verbosity(optuna.logging.WARNING)

_REJECTED = "cnnsearch.rejected"  # an Optuna trial's user attribute: why the driver did not train its proposal
_FAILED = "cnnsearch.failed"  # an Optuna trial's user attribute: it failed in training, not in a crash
_GRID_POINT = "cnnsearch.grid_point"  # an Optuna trial's system attribute: the point of the grid that _Grid gave it
_WITHIN_LIMITS_OF = "cnnsearch.within_limits_of"  # an Optuna trial's user attribute: the proposal over the limits that it stands in for
_PASSED_OVER = "cnnsearch.passed_over"  # an Optuna trial's user attribute: the prefilter's value of a proposal it did not pick

# The samplers whose proposals over the limits are followed by the nearest point within them (Proposals._within_limits):
# every one that learns from whatever trials the study holds. The grid visits its own points, each once.
_WITHIN_LIMITS_SAMPLERS = frozenset(SAMPLERS) - {"grid"}


def _point_key(point: dict[str, Any]) -> frozenset:
    return frozenset(point.items())


def _visited_point(trial: optuna.trial.FrozenTrial) -> frozenset | None:
    """The grid point that ``trial`` visits; none when a crash left it (its point is resumed, or proposed again)."""
    # Completed, pruned and running trials visit theirs, and so does an enqueued one (an interrupted
    # trial resumed: its knobs are given). Failed ones only when the driver turned the proposal
    # away, a prefilter passed it over or the driver saw it fail in training, not when a crash left them running.
    if trial.state == optuna.trial.TrialState.FAIL and not {_REJECTED, _PASSED_OVER, _FAILED} & set(trial.user_attrs):
        return None
    attrs = trial.system_attrs
    return _point_key(attrs.get(_GRID_POINT, attrs.get("fixed_params", trial.params)))


class _Grid(optuna.samplers.BaseSampler):
    """Each point of the space's grid once, in a seeded random order, asked for knob by knob (define-by-run).

    Optuna's GridSampler crosses every knob of the space, so a mixed space's grid would repeat
    each architecture once per value of the knobs of the families it does not use; a point here
    holds only the knobs it uses (:meth:`~cnnsearch.space.Space.grid`), counted, never listed.
    A point is visited when a trial of the study has it, unless a crash left that trial
    (:func:`_visited_point`): a resumed grid study runs every point once. Tune runs the
    study and ``--trials`` bounds it: unlike Optuna's, this sampler sends no stop signal,
    and :meth:`run_through` says when no point is left.
    """

    def __init__(self, grid: Grid, seed: int) -> None:
        self.grid, self._rng = grid, random.Random(seed)
        self._visited: set[frozenset] | None = None  # read from the study once, then kept up to date
        self._next: dict[str, Any] | None = None  # drawn by run_through for the next trial
        self._points: dict[int, dict[str, Any]] = {}  # trial number -> its point, for the trials of this session

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return {}

    def run_through(self, study: optuna.Study) -> bool:
        """Whether every point of the grid has been visited; if not, the next trial's point is drawn now."""
        if self._next is None:
            self._next = self._unvisited(self._visited_points(study))
        return self._next is None

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        visited = self._visited_points(study)
        if "fixed_params" in trial.system_attrs:  # enqueued: an interrupted trial resumed, its knobs given
            visited.add(_point_key(trial.system_attrs["fixed_params"]))
            return
        point = self._next if self._next is not None and _point_key(self._next) not in visited else self._unvisited(visited)
        if point is None:
            raise RuntimeError("the grid is run through: ask run_through before each trial")
        self._next, self._points[trial.number] = None, point
        visited.add(_point_key(point))
        # Kept with the trial (as Optuna's GridSampler keeps its grid_id): the knobs of a proposal
        # rejected half-way are not all among its params.
        study._storage.set_trial_system_attr(trial._trial_id, _GRID_POINT, point)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        return self._points[trial.number][param_name]

    def _visited_points(self, study: optuna.Study) -> set[frozenset]:
        if self._visited is None:
            self._visited = {_visited_point(trial) for trial in study.get_trials(deepcopy=False)} - {None}
        return self._visited

    def _unvisited(self, visited: set[frozenset]) -> dict[str, Any] | None:
        """A point that no trial has, at random: drawn, else (a grid nearly run through) found among all of them."""
        size = len(self.grid)
        for _ in range(min(size, 64)):
            point = self.grid.point(self._rng.randrange(size))
            if _point_key(point) not in visited:
                return point
        left = [index for index in range(size) if _point_key(self.grid.point(index)) not in visited]
        return self.grid.point(self._rng.choice(left)) if left else None


@dataclass(frozen=True)
class _Child:
    """What a trial of :class:`RegularizedEvolution` inherits: its parent, and the one knob it changes (None: none can)."""

    parent: optuna.trial.FrozenTrial
    mutated: str | None


class RegularizedEvolution(optuna.samplers.BaseSampler):
    """Regularized evolution (Real et al., AAAI 2019, arXiv:1802.01548) as an Optuna sampler.

    The population is the last ``population_size`` completed trials, in the order they
    completed: each completed child joins it and the oldest member leaves, however good
    (aging, the paper's regularization). Until it is full, trials are drawn at random. Then
    each trial's parent wins a tournament among ``sample_size`` members drawn uniformly
    without replacement, and the child is the parent with exactly one knob changed: one of
    the parent's knobs of more than one value, chosen uniformly and drawn again at random
    until its value differs. A knob the parent lacks (define-by-run: the family a mutation
    switched to brings its own) is drawn at random.

    With one objective the tournament's winner is the best of the sample; with several, one
    drawn among the sample's members that no other member of the sample dominates. Failed,
    pruned and running trials never join the population: a pruned trial has no final value
    to compare with complete ones. The defaults, a population of 10 and tournaments of 3, are
    the NAS-Bench-201 authors' runs of it (Dong & Yang, ICLR 2020, and NATS-Bench).
    """

    def __init__(self, *, population_size: int = 10, sample_size: int = 3, seed: int | None = None) -> None:
        if not 1 <= sample_size <= population_size:
            raise ValueError(f"1 <= sample_size <= population_size must hold, but got sample_size={sample_size}, "
                             f"population_size={population_size}")
        self.population_size, self.sample_size = population_size, sample_size
        self._rng = np.random.RandomState(seed)
        # Seeded from the tournament's stream rather than with the same seed, so the two streams do not repeat each other.
        self._random = optuna.samplers.RandomSampler(seed=int(self._rng.randint(2**31)))
        self._children: dict[int, _Child] = {}  # by trial number, while the trial runs

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        return {}

    def population(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """The study's last ``population_size`` completed trials, oldest first."""
        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return sorted(completed, key=lambda trial: (trial.datetime_complete, trial.number))[-self.population_size:]

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        population = self.population(study)
        if len(population) < self.population_size:
            return
        sample = [population[i] for i in self._rng.choice(len(population), self.sample_size, replace=False)]
        parent = self._winner(sample, study.directions)
        mutable = sorted(name for name, distribution in parent.distributions.items() if not distribution.single())
        self._children[trial.number] = _Child(parent, mutable[self._rng.randint(len(mutable))] if mutable else None)

    def _winner(self, sample: list[optuna.trial.FrozenTrial],
                directions: list[optuna.study.StudyDirection]) -> optuna.trial.FrozenTrial:
        signs = np.array([1.0 if direction == optuna.study.StudyDirection.MINIMIZE else -1.0 for direction in directions])
        losses = [signs * np.array(trial.values) for trial in sample]
        undominated = [trial for trial, loss in zip(sample, losses)
                       if not any(np.all(other <= loss) and np.any(other < loss) for other in losses)]
        return undominated[self._rng.randint(len(undominated))]

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        child = self._children.get(trial.number)
        if child is None or child.parent.distributions.get(param_name) != param_distribution:
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        inherited = child.parent.params[param_name]
        if param_name != child.mutated:
            return inherited
        while (value := self._random.sample_independent(study, trial, param_name, param_distribution)) == inherited:
            pass  # the knob has other values: one of them comes up
        return value

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState,
                    values: Any) -> None:
        self._children.pop(trial.number, None)


class _OneThreadGP(optuna.samplers.GPSampler):
    """Optuna's GPSampler, fitting its process on one of torch's threads.

    The driver shares its cores with the trials: measured on 2 busy cores, 200 proposals took
    GP 506 s on torch's default 2 threads and 61 s on one.
    """

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return super().sample_relative(study, trial, search_space)
        finally:
            torch.set_num_threads(threads)


def make_sampler(name: str, space: Space, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    """The sampler of each name in :data:`~cnnsearch.names.SAMPLERS`.

    Raises:
        ValueError: ``name`` is none of them; the command line and the space file admit only those.
    """
    if name == "tpe":
        # Optuna's default of 10 random startup trials would leave a short search purely random;
        # constant_liar keeps concurrent trials from being proposed the same point.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, trials // 4)), constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return _Grid(space.grid(), seed=seed)
    if name == "nsga2":
        # Optuna's population of 50 would leave a study of fewer trials one random generation.
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=min(50, max(4, trials // 4)))
    if name == "evolution":
        population = min(10, max(2, trials // 4))  # as NSGA-II's: a short study is not one random population
        return RegularizedEvolution(population_size=population, sample_size=min(3, population), seed=seed)
    if name == "gp":
        # GP models the knobs every trial has; in a space that mixes families, each family's own are drawn at
        # random by design, and Optuna's warning for each of them would be noise.
        return _OneThreadGP(seed=seed, n_startup_trials=min(10, max(2, trials // 4)), warn_independent_sampling=False)
    raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")


def _objective_values(objectives: tuple[Objective, ...], val_acc: float, cost: dict[str, float]) -> list[float]:
    """What Optuna is told of a finished trial: each objective's value, the costs exactly as the driver measured them."""
    return [val_acc if objective.metric == Metrics.VAL_ACC else cost[objective.metric] for objective in objectives]


class Proposals:
    """Optuna's ask and tell for a search, with the space's limits applied first.

    Each proposal is fitted to the data and profiled on the meta device here, in the driver.
    One that cannot be built or is over the limits is told to Optuna as failed, which its
    samplers ignore, with the reason as a user attribute; it never reaches Ray and is not a
    trial. Given ``within_limits``, one over the limits is followed by the nearest point
    within them (see the module's docstring), unless the study already has that point. A
    trial that the scheduler stopped is told as pruned, with its per-epoch accuracies as
    intermediate values: TPE ranks every pruned trial below the complete ones, so an early
    accuracy is never compared with full-budget ones as an equal. With several
    objectives a completed trial is told each objective's value; Optuna takes no
    intermediate values there, and no trial is stopped early.
    """

    def __init__(self, study: optuna.Study, space: Space, target: Target, seed: int, max_rejections: int,
                 resumed: list[dict[str, Any]] = (), ended: list[dict[str, Any]] = (), within_limits: WithinLimits | None = None,
                 prefilter: Prefilter | None = None) -> None:
        self.study, self.space, self.target, self.seed = study, space, target, seed
        self.max_rejections, self.within_limits, self.prefilter = max_rejections, within_limits, prefilter
        self.objectives = space.objectives
        self.single = len(self.objectives) == 1
        trials = study.get_trials(deepcopy=False)
        self._points = {_point(trial.params) for trial in trials}  # the knobs of every trial of the study, proposed or enqueued
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
        self.run_through = False  # a grid's every point visited before the trials were filled
        self._proposals: dict[str, optuna.trial.Trial] = {}
        self._costs: dict[str, dict[str, float]] = {}  # each running trial's costs, to tell Optuna with its accuracy
        self._reported: dict[str, int] = {}  # the last epoch each running trial reported to Optuna

    @classmethod
    def open(cls, plan: Plan, target: Target, missing: int, resumed: list[dict[str, Any]], ended: list[dict[str, Any]]) -> Proposals:
        """The plan's search, on its Optuna record, with the sampler its settings name; ``missing`` trials are to run."""
        study = _optuna_study(plan.storage, plan.options.name, plan.space.objectives)
        seed = plan.settings["seed"]
        # Each session draws new points: the same seed again would repeat the first session's.
        study.sampler = make_sampler(plan.settings["sampler"], plan.space, seed + len(study.trials), plan.trials)
        within_limits = WithinLimits(plan.space, target.shape) if plan.settings["sampler"] in _WITHIN_LIMITS_SAMPLERS else None
        return cls(study, plan.space, target, seed, max_rejections=max(100, 10 * missing), resumed=resumed, ended=ended,
                   within_limits=within_limits, prefilter=open_prefilter(plan))

    @property
    def exhausted(self) -> bool:
        """Too many proposals were turned away, or a grid has no point left for the trials still missing."""
        return self.rejected >= self.max_rejections or self.run_through

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The config of Tune's trial ``trial_id``: an interrupted trial's first, then new proposals; None when too many were
        rejected, or when a grid has no point left."""
        if self._resumed:
            return self._resume(trial_id, self._resumed.pop(0))
        pool = []  # a prefilter's proposals that passed the checks: (the Optuna trial, its costs, its config)
        while not self.exhausted and len(pool) < (self.prefilter.pool if self.prefilter else 1):
            if isinstance(self.study.sampler, _Grid) and self.study.sampler.run_through(self.study):
                self.run_through = True  # the limits turned away the points that the trials needed
                break
            config = self._checked(trial_id, self.study.ask())
            if config is not None:
                pool.append((self._proposals.pop(trial_id), self._costs.pop(trial_id), config))
        if not pool:
            return None
        best = 0
        if self.prefilter is not None:
            values = self.prefilter.scores([Arch.from_dict(config["arch"]) for _, _, config in pool])
            best = max(range(len(pool)), key=values.__getitem__)  # the first of equals: the order the sampler proposed them in
            for index, (proposal, _, _) in enumerate(pool):
                if index != best:  # see the module's docstring: failed, which no sampler learns from
                    proposal.set_user_attr(_PASSED_OVER, {"proxy": self.prefilter.proxy, "value": values[index], "pool_of": trial_id})
                    self.study.tell(proposal, state=optuna.trial.TrialState.FAIL)
            pool[best][1][proxy_metric(self.prefilter.proxy)] = values[best]
        self._proposals[trial_id], self._costs[trial_id], config = pool[best]
        return config

    def _checked(self, trial_id: str, proposal: optuna.trial.Trial) -> dict[str, Any] | None:
        """The config of ``proposal`` as trial ``trial_id`` if it passes the checks; else None, and it is told failed.
        One over the limits is followed by the nearest point within them, when there is one."""
        try:
            arch, recipe, cost = fitted(self.space, proposal, self.target)
        except ConfigError as error:
            self._points.add(_point(proposal.params))
            proposal.set_user_attr(_REJECTED, str(error))
            self.study.tell(proposal, state=optuna.trial.TrialState.FAIL)
            self.rejected += 1
            return self._within_limits(trial_id, proposal) if isinstance(error, OverLimits) else None
        self._points.add(_point(proposal.params))
        self._proposals[trial_id], self._costs[trial_id] = proposal, cost
        return trial_config(arch, recipe, cost, fixed_values(self.space) | proposal.params, self.seed) | {"optuna_trial": proposal.number}

    def _within_limits(self, trial_id: str, rejected: optuna.trial.Trial) -> dict[str, Any] | None:
        """The config of the point nearest ``rejected`` within the limits, proposed in its place as trial ``trial_id``
        (enqueued: a trial of the study like any other); None for a sampler that takes no such points, for a
        proposal that was itself one, or when none is found or the one found is a point the study already has."""
        if self.within_limits is None or _WITHIN_LIMITS_OF in rejected.user_attrs:
            return None
        values = self.within_limits.nearest(rejected.params)
        if values is None or _point(values) in self._points:
            return None
        self.study.enqueue_trial(values, user_attrs={_WITHIN_LIMITS_OF: rejected.number})
        return self._checked(trial_id, self.study.ask())

    def _resume(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any]:
        proposal = self.study.ask()
        self.space.sample(proposal)  # the enqueued knobs become the trial's params
        self.space.sample_recipe(proposal)
        if self.single:
            for epoch, value in config["earlier"].items():
                proposal.report(value, epoch)
        self._proposals[trial_id], self._reported[trial_id] = proposal, max(config["earlier"], default=0)  # none: from the start
        self._costs[trial_id] = config["cost"]
        return config | {"optuna_trial": proposal.number}

    def result(self, trial_id: str, result: dict) -> None:
        """A trial's epoch: its accuracy, an intermediate value with one objective."""
        epoch = int(result[Report.EPOCH])
        if self.single and epoch > self._reported.get(trial_id, 0) and Report.FAILED not in result:
            self._proposals[trial_id].report(result[Metrics.VAL_ACC], epoch)
            self._reported[trial_id] = epoch

    def complete(self, trial_id: str, result: dict | None, error: bool, stopping: bool) -> None:
        """A trial's end, told to Optuna; one that Ctrl-C (``stopping``) interrupted stays running there, to go on when the study resumes."""
        proposal, cost = self._proposals.pop(trial_id), self._costs.pop(trial_id)
        self._reported.pop(trial_id, None)
        failed = error or not result or Report.FAILED in result
        if stopping and not failed and not result.get(Report.BUDGET_SPENT):
            return
        if failed:
            proposal.set_user_attr(_FAILED, True)  # not one that a crash left: a grid does not propose its point again
            self.study.tell(proposal, state=optuna.trial.TrialState.FAIL)
        elif result.get(Report.BUDGET_SPENT):
            self.study.tell(proposal, _objective_values(self.objectives, result[Metrics.VAL_ACC], cost))
        else:
            self.study.tell(proposal, state=optuna.trial.TrialState.PRUNED)


def _point(params: dict[str, Any]) -> str:
    """A trial's knobs as a key: two trials of the same knobs have the same."""
    return json.dumps(params, sort_keys=True)


def rejected_proposals(study: optuna.Study) -> list[dict[str, Any]]:
    """Every proposal turned away before training (over the limits or the memory, or unable to
    build or train): its knobs and the reason."""
    return [
        trial.params | {"reason": trial.user_attrs[_REJECTED]}
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        if _REJECTED in trial.user_attrs
    ]


def passed_over_proposals(study: optuna.Study) -> list[dict[str, Any]]:
    """Every proposal that a prefilter scored and did not train: its knobs, the proxy's value and the trial whose pool held it."""
    return [
        trial.params | trial.user_attrs[_PASSED_OVER]
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        if _PASSED_OVER in trial.user_attrs
    ]


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
    started, are marked failed: samplers ignore them, the grid does not count their points as
    visited, and the study goes on with them as new trials.
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


# Importances ------------------------------------------------------------------------------

# Completed trials, stopped-early ones not counted. Measured (benchmarks/importances.py,
# BENCHMARKS.md): on NAS-Bench-201's table, whose edges' true importances are known, fANOVA
# ranked the 6 edges no better than chance from 50 random trials or fewer (median Kendall's
# tau 0.27 or less, the top edge first in 25% of studies or fewer, chance 17%), and clearly
# better from 75 on (tau 0.33 to 0.60, top edge first 40% to 75%). That table holds
# 200-epoch accuracies of 6 knobs: a short trial's are noisier, so this is a floor.
MIN_IMPORTANCE_TRIALS = 75


def _distribution(knob: Any) -> optuna.distributions.BaseDistribution | None:
    if isinstance(knob, Choice):
        return optuna.distributions.CategoricalDistribution(list(knob.choices))
    if isinstance(knob, IntRange):
        return optuna.distributions.IntDistribution(knob.low, knob.high, log=knob.log, step=knob.step)
    if isinstance(knob, FloatRange):
        return optuna.distributions.FloatDistribution(knob.low, knob.high, log=knob.log, step=knob.step)
    return None


def _value(knob: Any, text: str) -> Any:
    if isinstance(knob, Choice):
        return next(c for c in knob.choices if str(c) == text)
    return int(text) if isinstance(knob, IntRange) else float(text)


@dataclass(frozen=True)
class Importances:
    """Knob importances of one group of trials: the whole study, or one family's trials."""

    family: str  # the trials' families (their cnnsearch.family tag), or "" for every trial of the study
    scores: dict[str, float]  # knob -> share of the variance it explains, largest first; empty when ``why`` says why
    completed: int
    stopped_early: int  # counted at the validation accuracy of the last epoch they reached
    why: str = ""


def importances(record: StudyRecord, metric: str = "val_acc", evaluator: str = "fanova") -> list[Importances]:
    """Each searched knob's importance for ``metric`` (Optuna's fANOVA or PED-ANOVA).

    A group is scored only from :data:`MIN_IMPORTANCE_TRIALS` completed trials on; trials
    stopped early do not count towards it. Once it has them, its trials stopped early count
    too, at the last epoch they reached: leaving them out would score only the trials the
    scheduler let through, whose knobs vary least in quality.
    In a space that mixes families, trials of different families have different knobs,
    and fANOVA needs one search space: each family's trials are scored on their own.
    A group without scores says why.
    """
    runs = record.runs
    if not runs.empty:
        runs = runs[runs[f"tags.{Tags.STATUS}"].isin(SCORED)]
    if runs.empty or f"metrics.{metric}" not in runs:
        return [Importances("", {}, 0, 0, f"no trial has recorded {metric}")]
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = record.space_file(folder)
        except FileNotFoundError as error:
            return [Importances("", {}, 0, 0, str(error))]
        space: Space | None = load_space(path) if path else None
    if space is None:
        return [Importances("", {}, 0, 0, "the study's space file is not on record")]
    families = runs[f"tags.{Tags.FAMILY}"].fillna("") if f"tags.{Tags.FAMILY}" in runs else pd.Series("", index=runs.index)
    if families.nunique() == 1:
        return [_importances("", runs, space, metric, evaluator)]
    return [_importances(family, part, space, metric, evaluator) for family, part in runs.groupby(families, sort=True)]


def _importances(family: str, runs: pd.DataFrame, space: Space, metric: str, evaluator: str) -> Importances:
    status = runs[f"tags.{Tags.STATUS}"]
    counts = {Status.COMPLETED.value: int((status == Status.COMPLETED).sum()), "stopped_early": int((status == Status.STOPPED_EARLY).sum())}
    runs = runs[runs[f"metrics.{metric}"].notna()]
    completed = int((runs[f"tags.{Tags.STATUS}"] == Status.COMPLETED).sum())
    if completed < MIN_IMPORTANCE_TRIALS:
        stopped = f" (and {counts['stopped_early']} stopped early, which do not count)" if counts["stopped_early"] else ""
        return Importances(family, {}, **counts, why=(
            f"{completed} completed trials{stopped}; importances need at least {MIN_IMPORTANCE_TRIALS}: from fewer, fANOVA ranked "
            "NAS-Bench-201's knobs no better than chance (BENCHMARKS.md)"))
    # The knobs every trial of the group has and that take more than one value among them.
    varying = {
        name: knob for name, knob in space.knobs().items()
        if not isinstance(knob, Fixed) and f"params.{name}" in runs
        and runs[f"params.{name}"].notna().all() and runs[f"params.{name}"].nunique() > 1
    }
    if not varying:
        return Importances(family, {}, **counts, why="no searched knob varies among these trials")
    distributions = {name: _distribution(knob) for name, knob in varying.items()}
    study = optuna.create_study(direction="maximize")
    for _, run in runs.iterrows():
        study.add_trial(optuna.trial.create_trial(
            params={name: _value(knob, run[f"params.{name}"]) for name, knob in varying.items()},
            distributions=distributions,
            value=float(run[f"metrics.{metric}"]),
        ))
    chosen = (
        optuna.importance.FanovaImportanceEvaluator(seed=0)
        if evaluator == "fanova"
        else optuna.importance.PedAnovaImportanceEvaluator()
    )
    try:
        scores = optuna.importance.get_param_importances(study, evaluator=chosen, params=list(varying))
    except (ValueError, RuntimeError) as error:
        return Importances(family, {}, **counts, why=f"Optuna could not score them ({error})")
    return Importances(family, scores, **counts)
