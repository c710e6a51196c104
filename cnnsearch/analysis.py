"""Answers from a study's MLflow records: its best trials, pivot tables with the interval that
belongs to each aggregate, and Pareto fronts (knob importances, which need Optuna, are
:func:`cnnsearch.study.importances`).

Every number comes from :func:`mlflow.search_runs`' frame of the study's trial runs (a
metric's value there is its last logged one: the final epoch's), so a query agrees with
anyone who reads MLflow directly. Pivots count only completed trials: a trial stopped early
measured fewer epochs, a rejected or failed one none (:func:`left_out` counts the others).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, get_args

import numpy as np
import pandas as pd
from scipy import stats

from .config import ConfigError
from .space import Objective, ObjectiveMetric, count
from .names import DEFAULT_TRACKING_URI, SCORED, Metrics, Params, Status, Tags
from .tracking import StudyRecord, find_study, trial_name

__all__ = [
    "AGGREGATES", "INTERVALS", "best_trials", "median_interval", "completed", "left_out", "levels", "meeting", "pareto",
    "pareto_front", "pivot", "query", "select", "study_trials", "summarize",
]

CONFIDENCE = 0.95
# The interval each aggregate is shown with; None: the aggregate has none (the maximum of a
# few replicates is an order statistic with no interval worth drawing).
INTERVALS: dict[str, str | None] = {
    "mean": "95% t-interval of the mean",
    "median": "95% order-statistic interval of the median (distribution-free; none below 6 replicates)",
    "max": None,
}
AGGREGATES = tuple(INTERVALS)
OBJECTIVE_METRICS = get_args(ObjectiveMetric)
_WHERE = re.compile(r"^\s*([\w.\-]+)\s*(<=|>=|!=|==|=|<|>)\s*(.+?)\s*$")  # a --where condition: NAME OP VALUE
_COMPARISONS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
                "=": operator.eq, "==": operator.eq, "!=": operator.ne}


def left_out(record: StudyRecord) -> dict[str, int]:
    """How many of the study's trials each status other than completed holds, in :class:`Status`'s order, then
    "unfinished" (a trial still running, or interrupted): the trials that a pivot leaves out."""
    column, runs = f"tags.{Tags.STATUS}", record.runs
    statuses = runs[column] if column in runs else pd.Series(index=runs.index, dtype=object)
    counts = statuses.fillna("unfinished").value_counts()
    order = [status.value for status in Status if status != Status.COMPLETED] + ["unfinished"]
    return {status: int(counts[status]) for status in order if status in counts}


def completed(record: StudyRecord) -> pd.DataFrame:
    """The study's completed trial runs, from mlflow.search_runs."""
    runs = record.runs
    if runs.empty:
        return runs
    return runs[runs[f"tags.{Tags.STATUS}"] == Status.COMPLETED].reset_index(drop=True)


def _as_number(values: pd.Series) -> pd.Series:
    """Levels that are all numbers as numbers: integers as integers (3, not 3.0), though a trial lacks the knob."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers[values.notna()].isna().any():
        return values
    return numbers.astype("Int64") if (numbers.dropna() % 1 == 0).all() else numbers


# Tags that a query groups and filters by as it does by knobs: a NAS-Bench-201 trial's cell.
_TAG_FACTORS = (Tags.NASBENCH201,)


def _column(runs: pd.DataFrame, name: str, what: str) -> str:
    column = f"tags.{name}" if name in _TAG_FACTORS else f"params.{name}"
    if column not in runs:
        known = sorted([c.removeprefix("params.") for c in runs.columns if c.startswith("params.")]
                       + [tag for tag in _TAG_FACTORS if f"tags.{tag}" in runs])
        raise ConfigError(f"{what} {name!r}: no such knob or factor in this study (known: {', '.join(known)})")
    return column


@dataclass(frozen=True)
class _Condition:
    """One ``--where`` condition, ``NAME OP VALUE``: a knob or metric, a comparison and a value."""

    text: str  # as written, for messages
    name: str
    op: str
    value: str

    def compare(self, values: pd.Series, against: Any) -> pd.Series:
        """Which of ``values`` meet the condition's comparison with ``against``."""
        return _COMPARISONS[self.op](values, against)

    def error(self, problem: str) -> ConfigError:
        """An error that quotes the condition."""
        return ConfigError(f"--where {self.text!r}: {problem}")


def _parse_where(text: str, expected: str) -> _Condition:
    """The one grammar of ``--where``, for knobs and metrics alike: ``NAME OP VALUE``, OP one of
    ``=``, ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``; ``expected`` says what the caller takes when ``text`` is none."""
    match = _WHERE.match(text)
    if not match:
        raise ConfigError(f"--where {text!r}: expected {expected}")
    return _Condition(text, *match.groups())


def select(runs: pd.DataFrame, where: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """The runs that meet every ``KNOB=VALUE`` (or ``!=``, ``<``, ``<=``, ``>``, ``>=``) condition.

    Raises:
        ConfigError: a malformed condition, an unknown knob, or a level no run has.
    """
    for text in where:
        condition = _parse_where(text, "KNOB=VALUE (or !=, <, <=, >, >=)")
        name, op, level = condition.name, condition.op, condition.value
        values = runs[_column(runs, name, "--where")]
        numbers, number = pd.to_numeric(values, errors="coerce"), pd.to_numeric(pd.Series([level]), errors="coerce")[0]
        if op in ("=", "==", "!="):
            equal = (numbers == number) if not math.isnan(number) and numbers.notna().all() else (values == level)
            if not equal.any():  # a typo, or a level no completed trial has: say what there is
                present = sorted(values.dropna().unique(), key=lambda value: (pd.to_numeric(value, errors="coerce"), value))
                raise condition.error(f"no completed trial has {name}={level}; values present: {', '.join(present)}")
            keep = equal if op != "!=" else ~equal
        else:
            if math.isnan(number):
                raise condition.error(f"{op} needs a number")
            keep = condition.compare(numbers, number)
        runs = runs[keep.fillna(False)]
    return runs


def summarize(values: pd.Series, agg: str = "mean") -> dict[str, float]:
    """The aggregate of one cell's replicates, the interval that belongs to it (see
    :data:`INTERVALS`; NaN where there is none) and their count.

    A single replicate has no interval, nor do replicates that are all equal: there is no
    spread to make one of (a zero-width interval would claim certainty).
    """
    values = values.dropna().astype(float)
    n = len(values)
    low = high = math.nan
    if n > 1 and values.nunique() > 1:
        if agg == "mean":
            low, high = stats.t.interval(CONFIDENCE, n - 1, loc=values.mean(), scale=stats.sem(values))
        elif agg == "median":
            low, high = median_interval(values.to_numpy())
    return {agg: getattr(values, agg)(), "ci_low": low, "ci_high": high, "n": n}


def median_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The distribution-free interval of the median between two order statistics, or NaNs.

    The median lies between the j-th smallest and the j-th largest of n values with
    probability P(j <= B <= n - j), B ~ Binomial(n, 1/2), whatever the distribution
    (Conover, *Practical Nonparametric Statistics*, 3.2). The interval is the narrowest
    such pair whose probability reaches ``confidence``. Below 6 values none does (the
    range of 5 covers 93.75%; of 3, 75%), and the interval is NaN rather than a range
    that claims more than it holds, as a bootstrap of so few values would.
    """
    n = len(values)
    ordered = np.sort(values)
    for j in range(n // 2, 0, -1):  # from the narrowest pair outwards
        if stats.binom.cdf(n - j, n, 0.5) - stats.binom.cdf(j - 1, n, 0.5) >= confidence:
            return float(ordered[j - 1]), float(ordered[n - j])
    return math.nan, math.nan


def study_trials(record: StudyRecord) -> pd.DataFrame:
    """The study's completed trial runs.

    Raises:
        ConfigError: none has completed yet.
    """
    runs = completed(record)
    if runs.empty:
        raise ConfigError(f"study {record.parent.data.tags.get(Tags.STUDY)!r}: no completed trials yet")
    return runs


def best_trials(record: StudyRecord, where: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """The study's trials that have a validation accuracy (completed or stopped early) and meet ``where``, best first.

    Columns: ``trial``, ``status``, ``val_acc``, ``params``, ``macs``, ``run_id``, then each knob that
    differs among the study's trials (NA where a trial lacks it).

    Raises:
        ConfigError: no trial has a validation accuracy yet, or a malformed or unknown ``where``.
    """
    runs, status = record.runs, f"tags.{Tags.STATUS}"
    scored = runs[runs[status].isin(SCORED)] if status in runs else runs.iloc[:0]
    if scored.empty:
        raise ConfigError(f"study {record.name!r}: no trial has a validation accuracy yet")
    scored = select(scored, where).sort_values(f"metrics.{Metrics.VAL_ACC}", ascending=False)
    not_knobs = (f"params.{Params.PRECISION}", f"params.{Params.SEED}")
    knobs = [column for column in runs if column.startswith("params.") and column not in not_knobs and runs[column].nunique(dropna=False) > 1]
    table = pd.DataFrame({"trial": [trial_name(trial) for trial in scored[f"tags.{Tags.TRIAL}"]], "status": scored[status].to_numpy()})
    for metric in (Metrics.VAL_ACC, Metrics.PARAMS, Metrics.MACS):
        table[metric] = scored[f"metrics.{metric}"].to_numpy() if f"metrics.{metric}" in scored else math.nan
    table["run_id"] = scored["run_id"].to_numpy()
    for column in knobs:
        table[column.removeprefix("params.")] = scored[column].to_numpy()
    return table


def query(
    name: str,
    rows: str,
    cols: str | None = None,
    metric: str = "val_acc",
    agg: str = "mean",
    where: list[str] | tuple[str, ...] = (),
    tracking_uri: str = DEFAULT_TRACKING_URI,
    experiment: str | None = None,
) -> pd.DataFrame:
    """One row per cell (a level of ``rows``, and of ``cols`` if given) of a study's completed trials.

    Columns: the ``rows`` (and ``cols``) knob, then ``agg`` of ``metric`` over the cell's
    replicates, ``ci_low`` and ``ci_high`` (the interval :data:`INTERVALS` names for ``agg``;
    NaN where there is none) and ``n``. Levels that look numeric are numbers and sort as such.

    Raises:
        ConfigError: no such study, knob or metric, or a malformed ``where``.
    """
    if agg not in AGGREGATES:
        raise ConfigError(f"--agg {agg!r}: one of {', '.join(AGGREGATES)}")
    runs = study_trials(find_study(name, tracking_uri, experiment))
    return pivot(runs, rows, cols, metric, agg, list(where))


def levels(runs: pd.DataFrame, names: list[str], metric: str) -> pd.DataFrame:
    """One row per run, on the runs' index: the level of each knob or factor in ``names``
    (numbers where they look like numbers; NA where a run lacks the knob) and ``metric`` as ``value``.

    Raises:
        ConfigError: no such knob or metric in these runs.
    """
    flags = ["--rows", "--cols"]
    columns = [_column(runs, name, flags[min(i, 1)]) for i, name in enumerate(names)]
    if f"metrics.{metric}" not in runs:
        known = sorted(c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics."))
        raise ConfigError(f"--metric {metric!r}: not recorded in this study (metrics: {', '.join(known)})")
    frame = pd.DataFrame({name: _as_number(runs[column]) for name, column in zip(names, columns)}, index=runs.index)
    frame["value"] = runs[f"metrics.{metric}"].astype(float)
    return frame


def pivot(runs: pd.DataFrame, rows: str, cols: str | None, metric: str, agg: str = "mean", where: list[str] = ()) -> pd.DataFrame:
    """:func:`query` on a frame of runs already read from MLflow."""
    names = [rows] + ([cols] if cols else [])
    frame = levels(select(runs, where), names, metric)
    table = [dict(zip(names, group if isinstance(group, tuple) else (group,))) | summarize(cell["value"], agg)
             for group, cell in frame.groupby(names, sort=True)]
    return pd.DataFrame(table, columns=[*names, agg, "ci_low", "ci_high", "n"])


def pareto_front(points: np.ndarray, goals: Sequence[str]) -> np.ndarray:
    """Indices of the non-dominated rows of ``points`` (one column per objective, ``goals`` "max" or "min" each).

    A point is dominated when another is at least as good in every objective and better in
    one; equal points dominate neither other, so both stand. The front is ordered best
    first by the first objective, ties broken by the next.
    """
    # Negate the maximized columns: every objective is then to be minimized.
    signed = np.asarray(points, dtype=float) * np.array([-1.0 if goal == "max" else 1.0 for goal in goals])
    front = [i for i, point in enumerate(signed)
             if not ((signed <= point).all(axis=1) & (signed < point).any(axis=1)).any()]
    front = np.array(front, dtype=int)
    return front[np.lexsort(signed[front].T[::-1])] if len(front) else front


def pareto(runs: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """The Pareto front of completed trial runs (mlflow.search_runs' frame) over ``objectives``.

    Columns: ``trial``, ``run_id``, each objective's metric and, where the trials are NAS-Bench-201
    networks, their cells' strings (``nasbench201.arch``); one row per front point, best first by
    the first objective. A run that lacks an objective's value is not a point.
    """
    metrics = [objective.metric for objective in objectives]
    if runs.empty:
        return pd.DataFrame(columns=["trial", "run_id", *metrics])
    columns = [f"metrics.{metric}" for metric in metrics]
    missing = [metric for metric, column in zip(metrics, columns) if column not in runs]
    if missing:
        raise ConfigError(f"objective {missing[0]!r}: not recorded by this study's trials")
    runs = runs.dropna(subset=columns)
    front = runs.iloc[pareto_front(runs[columns].to_numpy(dtype=float), [objective.goal for objective in objectives])]
    table = pd.DataFrame({"trial": [trial_name(trial) for trial in front[f"tags.{Tags.TRIAL}"]], "run_id": front["run_id"]})
    for metric, column in zip(metrics, columns):
        table[metric] = front[column].to_numpy()
    if f"tags.{Tags.NASBENCH201}" in front:
        table[Tags.NASBENCH201] = front[f"tags.{Tags.NASBENCH201}"].to_numpy()
    return table.reset_index(drop=True)


def meeting(runs: pd.DataFrame, where: Sequence[str]) -> pd.DataFrame:
    """The runs whose metrics meet every ``METRIC<=VALUE`` (or <, >, >=, =, !=) condition; values may be
    written 50M, 1.5K or 2G.

    Raises:
        ConfigError: a malformed condition, one that names no recorded metric, or one no run meets.
    """
    expected = (f"METRIC<=VALUE (or <, >, >=, =, !=), a value such as 50M or 2.5, "
                f"and a metric such as {', '.join(OBJECTIVE_METRICS)}")
    for text in where:
        condition = _parse_where(text, expected)
        bound = count(condition.value)
        if not isinstance(bound, (int, float)):
            raise condition.error(f"expected {expected}")
        column = f"metrics.{condition.name}"
        if column not in runs:
            known = sorted(c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics."))
            raise condition.error(f"{condition.name!r} is no metric of this study's trials (metrics: {', '.join(known)})")
        values = runs[column].astype(float)
        keep = condition.compare(values, bound)
        if not keep.any():
            present = values.dropna()
            span = f"from {present.min():.4g} to {present.max():.4g}" if len(present) else "none recorded"
            raise condition.error(f"no completed trial meets it ({condition.name} of the completed trials: {span})")
        runs = runs[keep]
    return runs
