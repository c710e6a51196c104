"""What the commands print, as text for people: counts in K/M/G, an architecture's cost, pivot
tables with the interval of each aggregate, ANOVA and comparison tables, Pareto fronts and
accuracy tables; tables as JSON records; and ``say``, which writes a progress line to stderr.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

from ..names import Tags

if TYPE_CHECKING:  # pandas loads only for the commands that print tables
    import pandas as pd

    from ..costs import Cost


def human(count: int) -> str:
    """A count in K, M or G to three significant digits: 1.23M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.3g}{suffix}"
    return str(count)


def cost_line(cost: Cost) -> str:
    """Params, MACs and FLOPs in aligned columns."""
    return f"{cost.params:>12,} params  {cost.macs:>15,} MACs  {cost.flops:>15,} FLOPs"


def say(line: str) -> None:
    """Progress for people, on stderr, apart from a command's answer on stdout."""
    print(line, file=sys.stderr)


def format_front(front: pd.DataFrame) -> str:
    """A Pareto front for people: accuracy in percent, counts in K/M/G, latency in ms, then the trial, its run id
    and, of a NAS-Bench-201 network, its cell's string."""
    metrics = [column for column in front.columns if column not in ("trial", "run_id", Tags.NASBENCH201)]

    def value(metric: str, number: float) -> str:
        if metric == "val_acc":
            return f"{number:.2%}"
        return f"{number:.3g}" if metric == "latency_ms" else human(int(number))

    def cell(row: pd.Series) -> str:  # a trial that is no NAS-Bench-201 network has none (NaN)
        return row[Tags.NASBENCH201] if isinstance(row.get(Tags.NASBENCH201), str) else ""

    header = "  " + "  ".join(f"{metric:>10}" for metric in metrics) + f"  {'trial':<18}  {'MLflow run id':<32}"
    lines = [header + (f"  {Tags.NASBENCH201}" if Tags.NASBENCH201 in front else "")]
    for _, row in front.iterrows():
        lines.append("  " + "  ".join(f"{value(metric, row[metric]):>10}" for metric in metrics)
                     + f"  {row['trial']:<18}  {row['run_id']:<32}  {cell(row)}")
    return "\n".join(line.rstrip() for line in lines)


def format_table(table: pd.DataFrame, rows: str, cols: str | None, metric: str, agg: str) -> str:
    """A pivot for people: per cell the aggregate, the interval that belongs to it and the replicate count."""
    from ..analysis import INTERVALS

    percent = metric.endswith("acc")

    def number(value: float) -> str:
        return f"{value * 100:.2f}" if percent else f"{value:.4g}"

    def cell(row: pd.Series) -> str:
        low, high = row["ci_low"], row["ci_high"]
        if math.isnan(low):
            spread = ""
        elif agg == "mean":  # symmetric: its half-width says it all
            spread = f" ± {number((high - low) / 2)}"
        else:
            spread = f" [{number(low)}, {number(high)}]"
        return f"{number(row[agg])}{spread} (n={int(row['n'])})"

    unit = " (%)" if percent else ""
    interval = {
        "mean": f"± half-width of the {INTERVALS['mean']} (none for n=1 or replicates all equal)",
        "median": f"[{INTERVALS['median']}] (none for n=1 or replicates all equal)",
    }.get(agg, f"no interval for {agg}")
    header = f"{agg} {metric}{unit}, {interval}, n replicates"
    if cols is None:
        lines = [f"{rows:>24} | {agg} {metric}"] + [f"{str(r[rows]):>24} | {cell(r)}" for _, r in table.iterrows()]
        return header + "\n" + "\n".join(lines)
    levels = sorted(table[cols].unique(), key=lambda v: (isinstance(v, str), v))
    width = max(22, *(len(cell(r)) for _, r in table.iterrows()))
    corner = f"{rows} / {cols}"
    lines = [f"{corner:>24} | " + " | ".join(f"{str(c):>{width}}" for c in levels)]
    for level, part in table.groupby(rows, sort=True):
        by_col = {r[cols]: cell(r) for _, r in part.iterrows()}
        lines.append(f"{str(level):>24} | " + " | ".join(f"{by_col.get(c, '-'):>{width}}" for c in levels))
    return header + "\n" + "\n".join(lines)


def format_anova(table: pd.DataFrame, metric: str) -> str:
    """The ANOVA table, then a verdict per term at the significance level."""
    from ..effects import ALPHA, RESIDUAL

    width = max(24, *(len(term) for term in table["term"]))
    lines = [f"ANOVA of {metric} (Type II sums of squares)",
             f"{'term':<{width}}  {'sum_sq':>10}  {'df':>4}  {'F':>8}  {'p':>10}  {'partial eta^2':>13}"]
    for _, row in table.iterrows():
        tested = row["term"] != RESIDUAL
        lines.append(f"{row['term']:<{width}}  {row['sum_sq']:>10.4g}  {row['df']:>4g}"
                     + (f"  {row['F']:>8.3f}  {row['p']:>10.3g}  {row['partial_eta_sq']:>13.3f}" if tested else ""))
    for _, row in table[table["term"] != RESIDUAL].iterrows():
        verdict = "significant" if row["p"] < ALPHA else "not significant"
        lines.append(f"  {row['term']}: {verdict} at alpha {ALPHA} (F = {row['F']:.3f}, p = {row['p']:.3g})")
    return "\n".join(lines)


def format_comparisons(table: pd.DataFrame, metric: str) -> str:
    """Pairwise differences of means, their 95% intervals and adjusted p values."""
    percent = metric.endswith("acc")
    scale, unit = (100.0, " (percentage points)") if percent else (1.0, "")
    lines = [f"Pairwise differences of mean {metric}{unit}: level minus versus, 95% interval, adjusted p",
             f"{'factor':>24}  {'level':>10}  {'versus':>10}  {'diff':>8}  {'interval':>20}  {'p_adj':>8}  test"]
    for _, row in table.iterrows():
        interval = f"[{row['low'] * scale:.3g}, {row['high'] * scale:.3g}]"
        lines.append(f"{row['factor']:>24}  {str(row['level']):>10}  {str(row['versus']):>10}  {row['diff'] * scale:>8.3g}  "
                     f"{interval:>20}  {row['p_adj']:>8.3g}  {row['test']}")
    return "\n".join(lines)


def records(table: pd.DataFrame) -> list[dict[str, object]]:
    """A table's rows for JSON: full precision, NaN as null, numpy scalars as Python ones."""
    return [{key: None if isinstance(value, float) and math.isnan(value) else getattr(value, "item", lambda: value)()
             for key, value in row.items()} for row in table.to_dict("records")]


def accuracy_table(rows: list[dict[str, object]]) -> str:
    """Accuracies with the images each comes from; any the model trained on is marked "seen in training"."""

    def interval(row: dict) -> str:
        bounds = row["interval"]
        return f"{bounds['low']:.2%} to {bounds['high']:.2%}" if bounds else "-"

    lines = [f"  {'split':<6} {'images':>8}  {'accuracy':>8}  {'95% interval':<18}  {'images were':<18}  of"]
    for row in rows:
        seen = "seen in training" if row["seen_in_training"] else "held out"
        lines.append(f"  {row['split']:<6} {row['images']:>8,}  {row['accuracy']:>8.2%}  {interval(row):<18}  {seen:<18}  {row['of']}")
    return "\n".join(lines)
