"""Answers from a study's MLflow records: pivot tables with confidence intervals, Pareto fronts
and parameter importances.

Every number comes from :func:`mlflow.search_runs`' frame of the study's trial runs (a
metric's value there is its last logged one: the final epoch's), so a query agrees with
anyone who reads MLflow directly. Only completed trials count: a trial stopped early
measured fewer epochs, a rejected or failed one none.
"""

from __future__ import annotations

import math
import re
import tempfile
from typing import Any

import numpy as np
import optuna
import pandas as pd
from scipy import stats

from .config import ConfigError
from .space import Choice, FloatRange, Fixed, IntRange, Space, load_space
from .tracking import DEFAULT_TRACKING_URI, Status, StudyRecord, Tags, find_study

__all__ = ["AGGREGATES", "completed", "importances", "pareto_front", "pivot", "query", "summarize"]

AGGREGATES = ("mean", "median", "max")
_WHERE = re.compile(r"^\s*([\w.\-]+)\s*(<=|>=|!=|==|=|<|>)\s*(.+?)\s*$")


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


def _column(runs: pd.DataFrame, name: str, what: str) -> str:
    column = f"params.{name}"
    if column not in runs:
        known = sorted(c.removeprefix("params.") for c in runs.columns if c.startswith("params."))
        raise ConfigError(f"{what} {name!r}: no such knob or factor in this study (known: {', '.join(known)})")
    return column


def _filter(runs: pd.DataFrame, where: list[str]) -> pd.DataFrame:
    for condition in where:
        match = _WHERE.match(condition)
        if not match:
            raise ConfigError(f"--where {condition!r}: expected KNOB=VALUE (or !=, <, <=, >, >=)")
        name, op, text = match.groups()
        values = runs[_column(runs, name, "--where")]
        numbers, number = pd.to_numeric(values, errors="coerce"), pd.to_numeric(pd.Series([text]), errors="coerce")[0]
        if op in ("=", "==", "!="):
            equal = (numbers == number) if not math.isnan(number) and numbers.notna().all() else (values == text)
            if not equal.any():  # a typo, or a level no completed trial has: say what there is
                present = sorted(values.dropna().unique(), key=lambda value: (pd.to_numeric(value, errors="coerce"), value))
                raise ConfigError(f"--where {condition!r}: no completed trial has {name}={text}; values present: {', '.join(present)}")
            keep = equal if op != "!=" else ~equal
        else:
            if math.isnan(number):
                raise ConfigError(f"--where {condition!r}: {op} needs a number")
            keep = {"<": numbers < number, "<=": numbers <= number, ">": numbers > number, ">=": numbers >= number}[op]
        runs = runs[keep.fillna(False)]
    return runs


def summarize(values: pd.Series, agg: str = "mean") -> dict[str, float]:
    """The aggregate of one cell's replicates, the 95% t-interval of their mean, and their count."""
    values = values.dropna().astype(float)
    n = len(values)
    mean = values.mean()
    if n > 1:
        half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        low = high = math.nan
    return {agg: getattr(values, agg)(), "ci_low": low, "ci_high": high, "n": n}


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
    replicates, ``ci_low`` and ``ci_high`` (95% t-interval of the mean; NaN for one
    replicate) and ``n``. Levels that look numeric are numbers and sort as such.

    Raises:
        ConfigError: no such study, knob or metric, or a malformed ``where``.
    """
    if agg not in AGGREGATES:
        raise ConfigError(f"--agg {agg!r}: one of {', '.join(AGGREGATES)}")
    runs = completed(find_study(name, tracking_uri, experiment))
    if runs.empty:
        raise ConfigError(f"study {name!r}: no completed trials yet")
    return pivot(runs, rows, cols, metric, agg, list(where))


def pivot(runs: pd.DataFrame, rows: str, cols: str | None, metric: str, agg: str = "mean", where: list[str] = ()) -> pd.DataFrame:
    """:func:`query` on a frame of runs already read from MLflow."""
    runs = _filter(runs, list(where))
    keys = [_column(runs, rows, "--rows")] + ([_column(runs, cols, "--cols")] if cols else [])
    if f"metrics.{metric}" not in runs:
        known = sorted(c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics."))
        raise ConfigError(f"--metric {metric!r}: not recorded in this study (metrics: {', '.join(known)})")
    frame = pd.DataFrame({key.removeprefix("params."): _as_number(runs[key]) for key in keys})
    frame["value"] = runs[f"metrics.{metric}"].astype(float).to_numpy()
    names = list(frame.columns[:-1])
    table = [dict(zip(names, group if isinstance(group, tuple) else (group,))) | summarize(cell["value"], agg)
             for group, cell in frame.groupby(names, sort=True)]
    return pd.DataFrame(table, columns=[*names, agg, "ci_low", "ci_high", "n"])


def pareto_front(cost: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices of the points that no other point beats on both lower cost and higher accuracy, by cost."""
    order = np.lexsort((-accuracy, cost))
    front, best = [], -math.inf
    for index in order:
        if accuracy[index] > best:
            front.append(index)
            best = accuracy[index]
    return np.array(front, dtype=int)


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


def importances(record: StudyRecord, metric: str = "val_acc", evaluator: str = "fanova") -> dict[str, float]:
    """Each searched knob's importance for ``metric`` (Optuna's fANOVA or PED-ANOVA), from the
    study's completed trials; empty when too few trials or knobs vary."""
    runs = completed(record)
    with tempfile.TemporaryDirectory() as folder:
        path = record.space_file(folder)
        space: Space | None = load_space(path) if path else None
    if space is None or len(runs) < 3 or f"metrics.{metric}" not in runs:
        return {}
    searched = {n: k for n, k in space.knobs().items() if not isinstance(k, Fixed) and f"params.{n}" in runs}
    study = optuna.create_study(direction="maximize")
    for _, run in runs.iterrows():
        present = {n: k for n, k in searched.items() if isinstance(run.get(f"params.{n}"), str)}
        study.add_trial(
            optuna.trial.create_trial(
                params={n: _value(k, run[f"params.{n}"]) for n, k in present.items()},
                distributions={n: _distribution(k) for n, k in present.items()},
                value=float(run[f"metrics.{metric}"]),
            )
        )
    varying = [n for n in searched if len({str(t.params.get(n)) for t in study.trials}) > 1]
    if not varying:
        return {}
    chosen = (
        optuna.importance.FanovaImportanceEvaluator(seed=0)
        if evaluator == "fanova"
        else optuna.importance.PedAnovaImportanceEvaluator()
    )
    try:
        return optuna.importance.get_param_importances(study, evaluator=chosen, params=varying)
    except (ValueError, RuntimeError):  # Optuna needs a search space shared by the trials
        return {}
