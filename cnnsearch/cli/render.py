"""What the commands print, as text for people: counts in K/M/G, an architecture's cost, pivot
tables with the interval of each aggregate, ANOVA and comparison tables, Pareto fronts and
accuracy tables, and a footnote that counts the trials a table leaves out; tables as JSON records
and as CSV; and ``say``, which writes a progress line to stderr.

An accuracy is shown in one unit per output, and its header says which: in percent (percentage
points for a difference) in the tables for people and in CSV, whose columns are named
``NAME_pct``; as MLflow records it, a fraction, in JSON and in the ANOVA's sums of squares.
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


def in_percent(metric: str) -> bool:
    """Whether a metric is an accuracy, which people read in percent."""
    return metric.endswith("acc")


def csv_text(table: pd.DataFrame, accuracies: list[str] = ()) -> str:
    """``table`` as CSV, its ``accuracies`` columns in percent as the tables for people show them, each named ``NAME_pct``."""
    scaled = table.assign(**{column: table[column] * 100 for column in accuracies})
    return scaled.rename(columns={column: f"{column}_pct" for column in accuracies}).to_csv(index=False)


def footnote(counts: dict[str, int], what: str) -> str:
    """A footnote that counts the trials a table or list leaves out by their status, e.g. "2 trials stopped early
    are not in this table"; empty where it leaves none out."""
    if not counts:
        return ""
    (first, number), *others = counts.items()
    parts = [f"{number} trial{'s' if number > 1 else ''} {first}", *(f"{n} {status}" for status, n in others)]
    listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    return f"{listed} {'is' if sum(counts.values()) == 1 else 'are'} not in this {what}"


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


def format_trials(table: pd.DataFrame, of: int) -> str:
    """Trials best first (:func:`cnnsearch.analysis.best_trials`, the first rows of ``of``): accuracy in percent, counts
    in K/M/G, the status, trial and run id, then the knobs that differ among the study's trials."""
    fixed = ("trial", "status", "val_acc", "params", "macs", "run_id")
    knobs = [column for column in table.columns if column not in fixed]

    def count(value: float) -> str:
        return "-" if math.isnan(value) else human(int(value))

    lines = [f"top {len(table)} of {of} trials by validation accuracy, val_acc in %",
             f"  {'val_acc':>7}  {'params':>7}  {'MACs':>7}  {'status':<13}  {'trial':<14}  {'MLflow run id':<32}  knobs"]
    for row in table.to_dict("records"):
        values = " ".join(f"{knob}={row[knob]}" for knob in knobs if isinstance(row[knob], str))
        lines.append(f"  {row['val_acc'] * 100:>7.2f}  {count(row['params']):>7}  {count(row['macs']):>7}  {row['status']:<13}  "
                     f"{row['trial']:<14}  {row['run_id']:<32}  {values}")
    return "\n".join(lines)


def format_table(table: pd.DataFrame, rows: str, cols: str | None, metric: str, agg: str) -> str:
    """A pivot for people: per cell the aggregate, the interval that belongs to it and the replicate count."""
    from ..analysis import INTERVALS

    percent = in_percent(metric)

    def number(value: float) -> str:
        return f"{value * 100:.2f}" if percent else f"{value:.4g}"

    def cell(row: dict) -> str:
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
    # Records, not iterrows: a row of numbers only would turn an integer level into a float (12.0).
    cells = table.to_dict("records")
    if cols is None:
        lines = [f"{rows:>24} | {agg} {metric}"] + [f"{str(r[rows]):>24} | {cell(r)}" for r in cells]
        return header + "\n" + "\n".join(lines)
    levels = sorted({r[cols] for r in cells}, key=lambda v: (isinstance(v, str), v))
    width = max(22, *(len(cell(r)) for r in cells))
    corner = f"{rows} / {cols}"
    lines = [f"{corner:>24} | " + " | ".join(f"{str(c):>{width}}" for c in levels)]
    for level in sorted({r[rows] for r in cells}, key=lambda v: (isinstance(v, str), v)):
        by_col = {r[cols]: cell(r) for r in cells if r[rows] == level}
        lines.append(f"{str(level):>24} | " + " | ".join(f"{by_col.get(c, '-'):>{width}}" for c in levels))
    return header + "\n" + "\n".join(lines)


def format_anova(table: pd.DataFrame, metric: str) -> str:
    """The ANOVA table, then a verdict per term at the significance level."""
    from ..effects import ALPHA, RESIDUAL

    width = max(24, *(len(term) for term in table["term"]))
    unit = " as a fraction" if in_percent(metric) else ""  # as MLflow records it, where the other tables show percent
    lines = [f"ANOVA of {metric}{unit} (Type II sums of squares)",
             f"{'term':<{width}}  {'sum_sq':>10}  {'df':>4}  {'F':>8}  {'p':>10}  {'partial eta^2':>13}"]
    for _, row in table.iterrows():
        tested = row["term"] != RESIDUAL
        lines.append(f"{row['term']:<{width}}  {row['sum_sq']:>10.4g}  {row['df']:>4g}"
                     + (f"  {row['F']:>8.3f}  {row['p']:>10.3g}  {row['partial_eta_sq']:>13.3f}" if tested else ""))
    for _, row in table[table["term"] != RESIDUAL].iterrows():
        verdict = "significant" if row["p"] < ALPHA else "not significant"
        lines.append(f"  {row['term']}: {verdict} at alpha {ALPHA} (F = {row['F']:.3f}, p = {row['p']:.3g})")
    return "\n".join(lines)


def observational(sampler: str) -> str:
    """What an ANOVA or a comparison of a search's trials is: a description of the trials the search chose, not an experiment."""
    return (f"Observational: a search ({sampler}) chose these trials, no design assigned their levels, so the levels are "
            "unbalanced and a knob's effect may be that of knobs it was drawn with, or of where the sampler looked; "
            "`cnnsearch ablate` tests it")


def format_comparisons(table: pd.DataFrame, metric: str) -> str:
    """Pairwise differences of means, their 95% intervals and adjusted p values."""
    scale, unit = (100.0, " (percentage points)") if in_percent(metric) else (1.0, "")
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
    """Accuracies with the images each comes from and the precision it was measured in ("-" where none was recorded);
    any the model trained on is marked "seen in training"."""

    def interval(row: dict) -> str:
        bounds = row["interval"]
        return f"{bounds['low']:.2%} to {bounds['high']:.2%}" if bounds else "-"

    lines = [f"  {'split':<6} {'images':>8}  {'accuracy':>8}  {'precision':<9}  {'95% interval':<18}  {'images were':<18}  of"]
    for row in rows:
        seen = "seen in training" if row["seen_in_training"] else "held out"
        lines.append(f"  {row['split']:<6} {row['images']:>8,}  {row['accuracy']:>8.2%}  {row.get('precision') or '-':<9}  "
                     f"{interval(row):<18}  {seen:<18}  {row['of']}")
    return "\n".join(lines)
