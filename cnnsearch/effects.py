"""Which factors matter: analysis of variance and corrected pairwise comparisons of a study's
completed trials, computed by statsmodels and scipy.

Factors are categorical: each level is a group, whether its values are numbers or not. A
full-factorial ablation, or a search read as observational data, gets a Type II ANOVA with
the factors' interactions (one factor: one-way) and Tukey's HSD between the levels of each
factor. A one-factor-at-a-time ablation has no crossed cells to separate factors by; each of
its levels is compared with the baseline by Welch's t-test, Holm-corrected per factor.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats
from statsmodels.formula.api import ols
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.multicomp import pairwise_tukeyhsd
from statsmodels.stats.multitest import multipletests

from .analysis import levels, select
from .config import ConfigError

__all__ = ["ALPHA", "RESIDUAL", "TUKEY", "WELCH_HOLM", "anova", "compare"]

ALPHA = 0.05
RESIDUAL = "Residual"  # the ANOVA table's last row: what no term explains
TUKEY = "Tukey HSD"
WELCH_HOLM = "Welch t vs baseline, Holm"


def _frame(runs: pd.DataFrame, factors: list[str], metric: str) -> pd.DataFrame:
    """The runs that have every factor, with each factor's levels as plain values, and at least two levels each."""
    frame = levels(runs, factors, metric).dropna()
    for factor in factors:
        frame[factor] = frame[factor].to_numpy(dtype=object)  # patsy reads no nullable pandas integers
        present = frame[factor].unique()
        if len(present) < 2:
            only = f" ({present[0]})" if len(present) else ""
            raise ConfigError(f"{factor}: one level{only} among {len(frame)} trials: nothing to compare it with")
    return frame


def anova(runs: pd.DataFrame, factors: list[str], metric: str = "val_acc", where: list[str] | tuple[str, ...] = (),
          *, baseline: dict[str, str] | None = None) -> pd.DataFrame:
    """Type II analysis of variance of ``metric`` by ``factors`` (one: one-way; more: with their interactions).

    Args:
        runs: trial runs from :func:`mlflow.search_runs` (see :func:`analysis.study_trials`).
        factors: knob or factor names; a run lacking one is left out.
        where: conditions that select runs, as :func:`analysis.select` takes them.
        baseline: a one-factor-at-a-time design's baseline levels (``StudyRecord.baseline``).

    Returns:
        One row per term (``A``, ``B``, ``A:B`` for two factors), then :data:`RESIDUAL`: ``term``, ``sum_sq``,
        ``df``, ``F``, ``p`` and ``partial_eta_sq`` (sum_sq / (sum_sq + residual sum_sq); NaN
        for the residual, as are its F and p).

    Raises:
        ConfigError: the design cannot support it: a factor with one level, cells that do not
            cross, no residual degrees of freedom, or a one-factor-at-a-time design.
    """
    if baseline is not None:
        raise ConfigError("--anova: a one-factor-at-a-time design has no crossed cells to separate the factors by; "
                          "--compare tests each level against the baseline")
    frame = _frame(select(runs, where), factors, metric)
    cells = frame.groupby(factors).ngroups
    crossed = math.prod(frame[factor].nunique() for factor in factors)
    if cells < crossed:
        raise ConfigError(f"--anova: {' x '.join(factors)}: {crossed - cells} of {crossed} combinations of levels have no "
                          "trial, so the interaction cannot be estimated; ask about one factor, or narrow with --where")
    terms = {f'C(Q("{factor}"))': factor for factor in factors}
    model = ols("value ~ " + " * ".join(terms), data=frame).fit()
    if model.df_resid < 1:
        raise ConfigError(f"--anova: {len(frame)} trials in {cells} cells leave no residual degrees "
                          "of freedom; replicate the cells (ablate --seeds 2 or more)")
    table = anova_lm(model, typ=2)
    residual = table.loc["Residual", "sum_sq"]
    rows = [
        {
            "term": ":".join(terms[part] for part in term.split(":")) if term != "Residual" else RESIDUAL,
            "sum_sq": row["sum_sq"],
            "df": row["df"],
            "F": row["F"],
            "p": row["PR(>F)"],
            "partial_eta_sq": row["sum_sq"] / (row["sum_sq"] + residual) if term != "Residual" else float("nan"),
        }
        for term, row in table.iterrows()
    ]
    return pd.DataFrame(rows)


def compare(runs: pd.DataFrame, factors: list[str], metric: str = "val_acc", where: list[str] | tuple[str, ...] = (),
            *, baseline: dict[str, str] | None = None) -> pd.DataFrame:
    """Pairwise differences of mean ``metric`` between the levels of each factor.

    Without ``baseline``: Tukey's HSD between every two levels of each factor (its
    intervals and p values adjusted for the factor's pairs). With a one-factor-at-a-time
    design's ``baseline``: each level against the baseline, among the runs whose other
    factors sit at theirs, by Welch's t-test (unadjusted 95% interval), p values
    Holm-adjusted over the factor's levels.

    Returns:
        One row per pair: ``factor``, ``level``, ``versus``, ``diff`` (mean at ``level``
        minus mean at ``versus``), ``low`` and ``high`` (its 95% interval), ``p_adj`` and
        ``test`` (:data:`TUKEY` or :data:`WELCH_HOLM`).

    Raises:
        ConfigError: a factor with one level, a name that is not a factor of a
            one-factor-at-a-time design, or a level with fewer than two replicates there.
    """
    runs = select(runs, where)
    rows = []
    for factor in factors:
        if baseline is None:
            frame = _frame(runs, [factor], metric)
            result = pairwise_tukeyhsd(frame["value"].to_numpy(dtype=float), frame[factor].to_numpy(), alpha=ALPHA)
            rows += [{"factor": factor, "level": pair["group_t"], "versus": pair["group_c"], "diff": pair["meandiff"],
                      "low": pair["lower"], "high": pair["upper"], "p_adj": pair["p-adj"], "test": TUKEY}
                     for pair in result.summary_frame().to_dict("records")]  # not iterrows: it makes integer levels floats
        else:
            rows += _against_baseline(runs, factor, metric, baseline)
    table = pd.DataFrame(rows, columns=["factor", "level", "versus", "diff", "low", "high", "p_adj", "test"])
    # Levels of several factors share a column: as objects, growth rate 24 stays 24 beside compression 0.75.
    for column in ("level", "versus"):
        table[column] = pd.Series([row[column] for row in rows], dtype=object)
    return table


def _against_baseline(runs: pd.DataFrame, factor: str, metric: str, baseline: dict[str, str]) -> list[dict]:
    if factor not in baseline:
        raise ConfigError(f"--compare: {factor!r} is not a factor of this one-factor-at-a-time design "
                          f"(factors: {', '.join(baseline)})")
    # The runs that vary this factor alone: every other factor at its baseline level (as the runs record it).
    others = {f"params.{other}": level for other, level in baseline.items() if other != factor}
    part = runs[(runs[list(others)] == pd.Series(others)).all(axis=1)]
    frame = _frame(part, [factor], metric)
    is_base = part.loc[frame.index, f"params.{factor}"] == baseline[factor]
    if not is_base.any():
        raise ConfigError(f"--compare: no completed trial at the baseline {factor}={baseline[factor]}")
    base, base_level = frame.loc[is_base, "value"], frame.loc[is_base, factor].iloc[0]
    tests = []
    for level, values in frame[~is_base].groupby(factor, sort=True)["value"]:
        for name, sample in ((level, values), (base_level, base)):
            if len(sample) < 2:
                raise ConfigError(f"--compare: {factor}={name} has {len(sample)} replicate; Welch's t-test needs 2 or more")
        result = stats.ttest_ind(values, base, equal_var=False)
        interval = result.confidence_interval(1 - ALPHA)
        tests.append({"factor": factor, "level": level, "versus": base_level, "diff": values.mean() - base.mean(),
                      "low": interval.low, "high": interval.high, "p": result.pvalue})
    adjusted = multipletests([test.pop("p") for test in tests], alpha=ALPHA, method="holm")[1]
    return [test | {"p_adj": p, "test": WELCH_HOLM} for test, p in zip(tests, adjusted)]
