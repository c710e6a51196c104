"""Pictures of a study, as PNG files: pivot heatmap, interaction plot, accuracy against cost with
the Pareto front, the front over a study's own objectives, learning curves of the best trials,
parameter importances (per family in a mixed-family space)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .analysis import INTERVALS, completed, pareto, pareto_front, pivot  # noqa: E402
from .study import Importances, importances  # noqa: E402
from .space import Objective  # noqa: E402
from .names import Status, Tags  # noqa: E402
from .tracking import StudyRecord, trial_name  # noqa: E402

__all__ = ["plot_study"]

_LABELS = {"val_acc": "validation accuracy (%)", "val_loss": "validation loss", "train_loss": "training loss"}


def _label(metric: str) -> str:
    return _LABELS.get(metric, metric)


def _scale(metric: str) -> float:
    return 100.0 if metric.endswith("acc") else 1.0


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def heatmap(table: pd.DataFrame, rows: str, cols: str, metric: str, agg: str, title: str, path: Path) -> Path:
    grid = table.pivot(index=rows, columns=cols, values=agg) * _scale(metric)
    counts = table.pivot(index=rows, columns=cols, values="n")
    figure, axes = plt.subplots(figsize=(1.6 * len(grid.columns) + 2.5, 1.0 * len(grid.index) + 2))
    image = axes.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns])
    axes.set_yticks(range(len(grid.index)), [str(r) for r in grid.index])
    axes.set_xlabel(cols)
    axes.set_ylabel(rows)
    values = grid.to_numpy(dtype=float)
    middle = np.nanmean(values)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if not np.isnan(values[i, j]):
                axes.text(j, i, f"{values[i, j]:.1f}\nn={int(counts.iat[i, j])}", ha="center", va="center",
                          color="black" if values[i, j] > middle else "white", fontsize=9)
    figure.colorbar(image, ax=axes, label=f"{agg} {_label(metric)}")
    axes.set_title(f"{title}: {agg} {_label(metric)}")
    return _save(figure, path)


def interaction(table: pd.DataFrame, rows: str, cols: str | None, metric: str, agg: str, title: str, path: Path) -> Path:
    """The aggregate of each cell as a line over ``rows``, one line per level of ``cols``; bars
    show the aggregate's own interval where it has one (none for max, nor for one replicate)."""
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    scale = _scale(metric)
    groups = table.groupby(cols, sort=True) if cols else [(None, table)]
    for level, part in groups:
        part = part.sort_values(rows)
        x = np.array([str(v) for v in part[rows]])
        y = part[agg].to_numpy(dtype=float)
        (line,) = axes.plot(x, y * scale, marker="o", label=f"{cols} = {level}" if cols else None)
        low, high = part["ci_low"].to_numpy(dtype=float), part["ci_high"].to_numpy(dtype=float)
        if metric.endswith("acc"):  # drawn within [0, 100]%: the t-interval of 2 replicates can leave it
            low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
        shown = ~np.isnan(low)
        if shown.any():
            # Lengths from the interval's own ends: an order-statistic interval need not be symmetric about its median.
            lengths = np.clip(np.vstack([y - low, high - y]), 0, None)[:, shown] * scale
            axes.errorbar(x[shown], y[shown] * scale, yerr=lengths, fmt="none", capsize=4, ecolor=line.get_color())
    axes.set_xlabel(rows)
    interval = INTERVALS[agg]
    axes.set_ylabel(f"{agg} {_label(metric)}\n" + (f"bars: {interval}" if interval else f"no interval for {agg}"))
    axes.set_title(f"{title}: {rows}" + (f" x {cols}" if cols else ""))
    if cols:
        axes.legend(title=None)
    axes.grid(alpha=0.3)
    return _save(figure, path)


def accuracy_vs_cost(runs: pd.DataFrame, stopped: pd.DataFrame, cost: str, metric: str, title: str, path: Path) -> Path:
    """Completed trials and their Pareto front, a staircase (the best accuracy at most this cost);
    stopped-early trials drawn apart, at the accuracy of the epoch they reached."""
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    x = runs[f"metrics.{cost}"].to_numpy(dtype=float)
    y = runs[f"metrics.{metric}"].to_numpy(dtype=float) * _scale(metric)
    axes.scatter(x, y, alpha=0.6, label=f"completed trials ({len(runs)})")
    if not stopped.empty and f"metrics.{metric}" in stopped:
        axes.scatter(stopped[f"metrics.{cost}"].to_numpy(dtype=float), stopped[f"metrics.{metric}"].to_numpy(dtype=float) * _scale(metric),
                     facecolors="none", edgecolors="gray", label=f"stopped early, at their last epoch ({len(stopped)})")
    front = pareto_front(np.column_stack([x, y]), ("min", "max"))
    axes.step(x[front], y[front], "r-", where="post")
    axes.plot(x[front], y[front], "ro", label="Pareto front of the completed trials")
    axes.set_xscale("log")
    name, unit = ("MACs", "multiply-accumulates per image") if cost == "macs" else ("parameters", "count")
    axes.set_xlabel(f"{name} ({unit}, log scale)")
    axes.set_ylabel(_label(metric))
    axes.set_title(f"{title}: {_label(metric).split(' (')[0]} vs {name}")
    axes.legend()
    axes.grid(alpha=0.3, which="both")
    return _save(figure, path)


def objectives_front(runs: pd.DataFrame, objectives: tuple[Objective, ...], title: str, path: Path) -> Path:
    """The front over the study's objectives: one panel per other objective against validation accuracy,
    every completed trial drawn and the front's points marked (a point of a front of three or more
    objectives may look dominated in one panel: another objective puts it on the front)."""
    front = pareto(runs, objectives)
    others = [objective for objective in objectives if objective.metric != "val_acc"]
    figure, panels = plt.subplots(1, len(others), figsize=(5.5 * len(others), 4.5), squeeze=False)
    y = runs["metrics.val_acc"].to_numpy(dtype=float) * 100
    for axes, objective in zip(panels[0], others):
        axes.scatter(runs[f"metrics.{objective.metric}"].to_numpy(dtype=float), y, alpha=0.5, color="gray",
                     label=f"completed trials ({len(runs)})")
        axes.scatter(front[objective.metric].to_numpy(dtype=float), front["val_acc"].to_numpy(dtype=float) * 100, color="red",
                     label=f"Pareto front ({len(front)} points)")
        axes.set_xscale("log")
        axes.set_xlabel(f"{objective.metric} ({objective.goal}, log scale)")
        axes.set_ylabel(_label("val_acc"))
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=8)
    figure.suptitle(f"{title}: Pareto front of " + ", ".join(f"{o.metric} {o.goal}" for o in objectives))
    return _save(figure, path)


def learning_curves(record: StudyRecord, runs: pd.DataFrame, metric: str, title: str, path: Path, top: int = 5) -> Path:
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    best = runs.sort_values(f"metrics.{metric}", ascending=False).head(top)
    for _, run in best.iterrows():
        history = record.history(run["run_id"], metric)
        name = trial_name(run[f"tags.{Tags.TRIAL}"])
        axes.plot([s for s, _ in history], [v * _scale(metric) for _, v in history], marker="o",
                  label=f"{name} (final {run[f'metrics.{metric}'] * _scale(metric):.1f})")
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(_label(metric))
    axes.set_title(f"{title}: learning curves of the top {len(best)} trials")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    return _save(figure, path)


def importance_bars(found: Importances, metric: str, title: str, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(6.5, 0.45 * len(found.scores) + 1.8))
    names = list(found.scores)[::-1]
    axes.barh(names, [found.scores[n] for n in names])
    axes.set_xlabel(f"importance for {_label(metric)} (fANOVA, fraction of variance)")
    family = f", family {found.family}" if found.family else ""
    axes.set_title(f"{title}{family}: knob importances, from n={found.completed + found.stopped_early} trials\n"
                   f"({found.completed} completed, {found.stopped_early} stopped early, at their last epoch)", fontsize=10)
    axes.grid(alpha=0.3, axis="x")
    return _save(figure, path)


def plot_study(
    record: StudyRecord, folder: str | Path, *, rows: str | None = None, cols: str | None = None,
    metric: str = "val_acc", agg: str = "mean", say: Callable[[str], None] = lambda line: None,
) -> list[Path]:
    """Write the study's pictures into ``folder`` and return their paths.

    With ``rows`` (and ``cols``): the pivot heatmap and interaction plot of an ablation.
    Always, given completed trials: accuracy vs MACs and vs params with the Pareto front,
    and learning curves of the top five; with several objectives, their front (pareto.png). Searches: knob importances, one picture per family
    in a mixed-family space; ``say`` hears why a group of trials has none.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    title = record.parent.data.tags.get(Tags.STUDY, "study")
    runs = completed(record)
    if runs.empty or f"metrics.{metric}" not in runs:
        return []
    paths = []
    if rows:
        table = pivot(runs, rows, cols, metric, agg)
        if cols:
            paths.append(heatmap(table, rows, cols, metric, agg, title, folder / "heatmap.png"))
        paths.append(interaction(table, rows, cols, metric, agg, title, folder / "interaction.png"))
    stopped = record.runs[record.runs[f"tags.{Tags.STATUS}"] == Status.STOPPED_EARLY]
    for cost in ("macs", "params"):
        paths.append(accuracy_vs_cost(runs, stopped, cost, metric, title, folder / f"{metric}_vs_{cost}.png"))
    if len(record.objectives) > 1:
        paths.append(objectives_front(runs, record.objectives, title, folder / "pareto.png"))
    paths.append(learning_curves(record, runs, metric, title, folder / "learning_curves.png"))
    if not rows:
        for found in importances(record, metric):
            name = f"importances_{found.family.replace(',', '+')}.png" if found.family else "importances.png"
            if found.scores:
                paths.append(importance_bars(found, metric, title, folder / name))
            else:
                say(f"no knob importances{f' for family {found.family}' if found.family else ''}: {found.why}")
    return paths
