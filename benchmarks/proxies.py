"""Zero-cost proxies against the truth: NAS-Bench-201's table, and the prefilter in a tabular search.

nasbench201: every proxy of :mod:`cnnsearch.proxies` on random NAS-Bench-201 cells (drawn
            without replacement with seed 0), each cell's network initialised with seed 0 and
            scored on one batch of 64 CIFAR-10 training images from the JPEGs (the same batch
            for every cell), against the table's cifar10-valid accuracy at 200 epochs, mean
            over its seeds. Spearman's rho and Kendall's tau with 95% bootstrap intervals over
            the cells (percentile, 1,000 resamples), beside the published values; and the CPU
            time of the proxies, together as `cnnsearch.proxies.score` shares their passes,
            and each alone on the first cells. Each cell's values are kept in
            results/proxies_nasbench201.partial*.json as they come: an interrupted run goes on
            where it stopped; --worker K/N splits the cells between N processes, and the
            last to finish writes the report.

prefilter:  the space's default sampler (TPE) on NAS-Bench-201's table, with and without a prefilter, 20 seeds each,
            through cnnsearch's own Proposals (the pools, the failed passed-over proposals) with Optuna's
            ask and tell in memory and no MLflow, each trial told one seed's 200-epoch accuracy as a
            tabular trial is; and random search without one. The pick after t trials is the
            study's best by what it was told, reported as that cell's mean accuracy over the
            table's seeds. Reports the trials each needs for the median pick over the seeds to
            reach random search's median pick at 100 trials, and the median pick at 25 and 50.
            Random search and the prefiltered sampler run 100 trials, the sampler alone --trials.
            params and macs are counted from the cell's edges (exactly what the params proxy counts,
            in microseconds); any other proxy runs each cell's network once for all the studies
            (initialised with seed 0, on the batch of the nasbench201 benchmark from --data), where a
            study's prefilter initialises it with the study's seed.

cost:       each proxy's wall time alone, and all seven together, per cell, at torch's default
            threads: the first cells of the nasbench201 draw, and the largest cell.

trained:    every proxy on architectures drawn at random (within its limits, seeds 0, 1, ...) from
            spaces/resnet.yaml and spaces/densenet.yaml, against their accuracy after 3 epochs of
            5,000 CIFAR-10 training images with the space's recipe, seed 0, validated on the same
            2,000 held-out images: Spearman's rho and Kendall's tau for each space and for both
            together. Each training is kept in results/proxies_trained.partial.json as it ends.

Usage: python benchmarks/proxies.py nasbench201 PATH/TO/cifar10/train [--cells 1000] [--threads 1] [--worker K/N]
       python benchmarks/proxies.py cost PATH/TO/cifar10/train [--repeats 3]
       python benchmarks/proxies.py trained PATH/TO/cifar10/train [--archs 6]
       python benchmarks/proxies.py prefilter [--seeds 20] [--trials 200] [--prefilter params:10,synflow:10 --data PATH/TO/cifar10/train]
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

import optuna

from _report import machine, write
from cnnsearch import Arch, load_space
from cnnsearch.config import ConfigError
from cnnsearch.costs import over_limits, profile
from cnnsearch.space import Budget
from cnnsearch.space.knobs import RandomTrial
from cnnsearch.train import fit_to_data, train
from cnnsearch.blocks.cell import arch_string, nasbench201_network
from cnnsearch.names import Metrics, Report
from cnnsearch.study.propose import Proposals, make_sampler
from cnnsearch.study.reject import Target
from cnnsearch.tabular import load_table, nasbench201_cost
from cnnsearch.data import load_dataset, split_dataset
from cnnsearch.proxies import AGGREGATES, PROXIES, PROXY_BATCH, aggregate, check_names, init_network, proxy_batch, rank_correlations, score

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CHOSEN_ON = 118  # the first cells of the draw: mean_rank's proxies were chosen after seeing them (see _report_nasbench201)
COUNTED = ("params", "macs")  # proxies the prefilter benchmark counts from a cell's edges instead of running its network
TIMED_CELLS = 10  # the first cells: timed on one thread, all proxies together and each alone
# Abdelfattah et al., ICLR 2021 (Spearman rho, all 15,625 cells, CIFAR-10); ZiCo (Li et al., ICLR 2023) for params;
# Mellor et al., ICML 2021 for NASWOT (Kendall tau).
PUBLISHED = {"params": ("rho", 0.75), "synflow": ("rho", 0.74), "jacob_cov": ("rho", 0.73), "grad_norm": ("rho", 0.58),
             "snip": ("rho", 0.58), "vote": ("rho", 0.82), "naswot": ("tau", 0.57)}


def _table() -> dict[str, float]:
    """Each cell's mean 200-epoch cifar10-valid accuracy (%), by its architecture string."""
    return {cell: 100 * accuracy for cell, accuracy in load_table("nasbench201").mean_val_accs().items()}


@functools.cache  # one decoding of the data set for every prefilter and benchmark of a run
def _batch(folder: str) -> tuple[torch.Tensor, torch.Tensor]:
    space = load_space(Path(__file__).parents[1] / "spaces" / "nasbench201.yaml")
    data = load_dataset(f"imagefolder:{folder}")
    split = split_dataset(data.labels, val_fraction=space.dataset.val_fraction, seed=space.dataset.split_seed)
    return proxy_batch(data, split.train, PROXY_BATCH, seed=0)


def _timed(function, *args, **kwargs) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def _drawn_cells(table: dict[str, float]) -> list[str]:
    """Every cell in the benchmarks' random order (seed 0): the first cells of a longer run are those of a shorter one."""
    cells = sorted(table)
    random.Random(0).shuffle(cells)
    return cells


def _done() -> dict[str, dict]:
    """Every cell scored so far, by any worker."""
    return {cell: found for path in sorted(RESULTS.glob("proxies_nasbench201.partial*.json")) for cell, found in json.loads(path.read_text()).items()}


def nasbench201(folder: str, count: int, threads: int, worker: tuple[int, int], report_now: bool) -> None:
    table = _table()
    cells = _drawn_cells(table)[:count]
    images, labels = _batch(folder) if not report_now else (None, None)
    done, (index_of_worker, workers) = _done(), worker
    mine = RESULTS / f"proxies_nasbench201.partial{index_of_worker}.json"
    scored = json.loads(mine.read_text()) if mine.exists() else {}
    names = list(PROXIES)
    for index, cell in enumerate(cells):
        if cell in done or index % workers != index_of_worker or report_now:
            continue
        timed = index < TIMED_CELLS
        torch.set_num_threads(1 if timed else threads)
        network = init_network(nasbench201_network(cell), 0)
        values, cpu, wall = _timed(score, network, images, labels, names, seed=0)
        scored[cell] = {"values": values}
        if timed:
            scored[cell]["cpu_s"] = cpu
            scored[cell]["alone_cpu_s"] = {name: _timed(score, network, images, labels, [name], seed=0)[1] for name in names}
        mine.write_text(json.dumps(scored, indent=0))
        print(f"{index + 1}/{count} {cell} table {table[cell]:.2f}% cpu {cpu:.2f} s wall {wall:.2f} s", flush=True)
    done = _done()
    if any(cell not in done for cell in cells) and not report_now:
        print(f"{sum(cell in done for cell in cells)} of {count} cells scored: the other workers go on", flush=True)
        return
    cells = [cell for cell in cells if cell in done]
    rows = [done[cell]["values"] | {"arch": cell, "table_acc": table[cell]} for cell in cells]
    for name in AGGREGATES:
        for row, value in zip(rows, aggregate(name, rows)):
            row[name] = value
    _report_nasbench201(rows, [done[cell] for cell in cells[:TIMED_CELLS]], threads, count)


def _report_nasbench201(rows: list[dict], timings: list[dict], threads: int, count: int) -> None:
    truth = [row["table_acc"] for row in rows]
    correlations = {name: rank_correlations([row[name] for row in rows], truth) for name in [*PROXIES, *AGGREGATES]}
    # mean_rank's proxies were chosen on the first cells: its correlation on the others alone, unseen when it was chosen.
    unseen = rows[CHOSEN_ON:]
    for row, value in zip(unseen, aggregate("mean_rank", unseen)):
        row["mean_rank, unseen cells"] = value
    correlations["mean_rank, unseen cells"] = rank_correlations([row.pop("mean_rank, unseen cells") for row in unseen],
                                                                [row["table_acc"] for row in unseen])
    cpu = np.array([timing["cpu_s"] for timing in timings])
    alone = {name: [timing["alone_cpu_s"][name] for timing in timings] for name in PROXIES}
    report = {"machine": machine(), "threads": threads, "cells": len(rows), "batch": PROXY_BATCH, "correlations": correlations,
              "published": PUBLISHED, "timed_cells": len(timings),
              "cpu_s_all_proxies": {"median": float(np.median(cpu)), "max": float(cpu.max())},
              "alone_cpu_s": {name: {"median": float(np.median(values)), "max": float(max(values))} for name, values in alone.items()},
              "rows": rows}
    lines = [f"{len(rows):,} random NAS-Bench-201 cells (seed 0), each initialised with seed 0 and scored on one batch of "
             f"{PROXY_BATCH} CIFAR-10 training images from the JPEGs, against the table's cifar10-valid accuracy at 200 epochs, "
             f"mean over seeds; 95% bootstrap intervals over the cells. CPU ({machine()}); CPU seconds per cell (process time, "
             f"median and max) on one thread, over the first {len(timings)} cells.", "",
             "| proxy | Spearman rho [95% CI] | Kendall tau [95% CI] | published | CPU s per cell, alone: median, max |",
             "| --- | --- | --- | --- | ---: |"]
    for name, found in correlations.items():
        rho, tau = (f"{value:.3f} [{low:.3f}, {high:.3f}]" for value, low, high in (found["rho"], found["tau"]))
        kind, value = PUBLISHED.get(name, ("", None))
        published = f"{kind} {value:.2f}" if value is not None else ""
        alone_s = report["alone_cpu_s"].get(name)
        seconds = f"{alone_s['median']:.2f}, {alone_s['max']:.2f}" if alone_s else "its proxies' ranks"
        label = f"mean_rank on the {len(unseen):,} cells after the first {CHOSEN_ON}" if name.endswith("unseen cells") else name
        lines.append(f"| {label}{' (aggregate of ' + ', '.join(AGGREGATES[name]) + ')' if name in AGGREGATES else ''} "
                     f"| {rho} | {tau} | {published} | {seconds} |")
    timing = report["cpu_s_all_proxies"]
    lines += ["", f"All seven proxies of a cell together (one shared training-mode pass for naswot, jacob_cov, grad_norm "
              f"and snip): CPU time median {timing['median']:.2f} s, max {timing['max']:.2f} s per cell, on one thread. "
              "Other work shared the machine's 2 cores: wall times are no measure here, CPU times are."]
    lines += [f"mean_rank's three proxies were chosen after the first {CHOSEN_ON} cells of the draw had been scored, as the "
              "combination that ranked them best among the few tried (naswot with synflow; with synflow and jacob_cov; with synflow "
              "and params; with params; with synflow, jacob_cov and snip); its row of the cells after those is a correlation on "
              "cells unseen when it was chosen."]
    command = f"python benchmarks/proxies.py nasbench201 PATH/TO/cifar10/train --cells {count}"
    if len(rows) < count:  # stopped part-way: the cells scored by then, nearly the first of the draw
        command += f"`, stopped once {len(rows)} cells were scored, then `{command} --report-now"
    write("proxies_nasbench201", report, "\n".join(lines), command)


TRAINED_SPACES = ("resnet", "densenet")
TRAINED_BUDGET = (3, 5000)  # epochs, training images
TRAINED_VAL_IMAGES = 2000


def _drawn(space, count: int) -> list[tuple[Arch, dict]]:
    """``count`` distinct architectures of ``space`` within its limits, with their knobs, drawn with seeds 0, 1, ...
    (those it rejects or that are over its limits skipped)."""
    drawn, seed = [], 0
    while len(drawn) < count:
        trial = RandomTrial(random.Random(seed))
        seed += 1
        try:
            arch = space.sample(trial)
        except ConfigError:
            continue
        if over_limits(space.limits, profile(arch)) is None and arch not in [found for found, _ in drawn]:
            drawn.append((arch, trial.drawn))
    return drawn


def trained(folder: str, count: int) -> None:
    partial = RESULTS / "proxies_trained.partial.json"
    done = json.loads(partial.read_text()) if partial.exists() else {}
    data = load_dataset(f"imagefolder:{folder}")
    epochs, images = TRAINED_BUDGET
    rows = []
    for name in TRAINED_SPACES:
        space = load_space(ROOT / "spaces" / f"{name}.yaml")
        split = split_dataset(data.labels, val_fraction=space.dataset.val_fraction, seed=space.dataset.split_seed,
                              subset=images, val_subset=TRAINED_VAL_IMAGES)
        batch = proxy_batch(data, split.train, PROXY_BATCH, seed=0)
        for index, (arch, knobs) in enumerate(_drawn(space, count)):
            key = f"{name} {index} {json.dumps(arch.to_dict(), sort_keys=True)}"
            if key not in done:
                fitted = fit_to_data(arch, data)
                values = score(init_network(fitted, 0), *batch, list(PROXIES), seed=0)
                start = time.perf_counter()
                result = train(fitted, data, split, recipe=space.recipe, budget=Budget(epochs=epochs), seed=0)
                done[key] = {"values": values, "val_acc": 100 * result.val_acc, "seconds": time.perf_counter() - start}
                partial.write_text(json.dumps(done, indent=1))
            found = done[key]
            rows.append(found["values"] | {"space": name, "val_acc": found["val_acc"], "seconds": found["seconds"],
                                           "knobs": ", ".join(f"{knob} {value}" for knob, value in knobs.items())})
            print(f"{name} {index}: {found['val_acc']:.2f}% in {found['seconds']:.0f} s", flush=True)
    groups = {name: [row for row in rows if row["space"] == name] for name in TRAINED_SPACES} | {"both": rows}
    correlations = {}
    for group, members in groups.items():
        truth = [row["val_acc"] for row in members]
        correlations[group] = {proxy_name: rank_correlations([row[proxy_name] for row in members], truth) for proxy_name in PROXIES}
        correlations[group] |= {proxy_name: rank_correlations(aggregate(proxy_name, members), truth) for proxy_name in AGGREGATES}
    report = {"machine": machine(), "budget": {"epochs": epochs, "images": images, "val_images": TRAINED_VAL_IMAGES},
              "correlations": correlations, "rows": rows}
    lines = [f"{count} architectures drawn at random from each of `spaces/resnet.yaml` and `spaces/densenet.yaml` (within their "
             f"limits), each scored by every proxy at initialisation (seed 0) on one batch of {PROXY_BATCH} training images, then "
             f"trained for {epochs} epochs on {images:,} CIFAR-10 training images from the JPEGs with its space's recipe (seed 0) "
             f"and validated on the same {TRAINED_VAL_IMAGES:,} held-out images; CPU ({machine()}). Spearman's rho [95% bootstrap "
             f"interval over the architectures]; an aggregate ranks within the group.", "",
             "| proxy | " + " | ".join(f"rho, {group} ({len(members)})" for group, members in groups.items()) + " |",
             "| --- | " + " | ".join("---" for _ in groups) + " |"]
    for proxy_name in [*PROXIES, *AGGREGATES]:
        lines.append(f"| {proxy_name} | " + " | ".join(
            "{:.2f} [{:.2f}, {:.2f}]".format(*correlations[group][proxy_name]["rho"]) for group in groups) + " |")
    lines += ["", "Accuracies do not depend on the machine's load; the training seconds are wall time, whatever else the "
              "machine ran, and no measure of speed.",
              "", "| space | val acc | params | MACs | knobs | train s |", "| --- | ---: | ---: | ---: | --- | ---: |"]
    lines += [f"| {row['space']} | {row['val_acc']:.2f}% | {row['params']:,.0f} | {row['macs'] / 1e6:.1f}M | {row['knobs']} | "
              f"{row['seconds']:.0f} |" for row in sorted(rows, key=lambda row: (row["space"], -row["val_acc"]))]
    write("proxies_trained", report, "\n".join(lines), f"python benchmarks/proxies.py trained PATH/TO/cifar10/train --archs {count}")


class _CostProxy:
    """A prefilter whose proxy is a cost of the cell's network, counted from its edges: what ``params`` gives, at no cost."""

    def __init__(self, proxy: str, pool: int) -> None:
        self.proxy, self.pool = proxy, pool

    def scores(self, archs: list) -> list[float]:
        return [float(getattr(nasbench201_cost(arch), self.proxy)) for arch in archs]


def cost(folder: str, repeats: int) -> None:
    """Each proxy's wall time alone, and all of them together, per cell, at torch's default threads: the first
    TIMED_CELLS cells of the nasbench201 draw and the largest cell (every edge a 3x3 convolution)."""
    largest = arch_string(["nor_conv_3x3"] * 6)
    cells = [*_drawn_cells(_table())[:TIMED_CELLS], largest]
    images, labels = _batch(folder)
    names = list(PROXIES)
    seconds: dict[str, list[float]] = {name: [] for name in [*names, "all seven"]}
    for cell in cells:
        network = init_network(nasbench201_network(cell), 0)
        for name, chosen in [*((name, [name]) for name in names), ("all seven", names)]:
            times = [_timed(score, network, images, labels, chosen, seed=0)[2] for _ in range(repeats)]
            seconds[name].append(float(np.median(times)))
    report = {"machine": machine(), "threads": torch.get_num_threads(), "repeats": repeats, "cells": cells, "wall_s": seconds}
    lines = [f"Wall seconds per NAS-Bench-201 cell (median of {repeats} runs each), one batch of {PROXY_BATCH} CIFAR-10 training "
             f"images, the first {TIMED_CELLS} cells of the nasbench201 draw and the largest cell (every edge a 3x3 convolution), "
             f"on a quiet machine; CPU ({machine()}):", "",
             "| proxy | median | max | the largest cell |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {name} | {np.median(values):.2f} | {max(values):.2f} | {values[-1]:.2f} |" for name, values in seconds.items()]
    write("proxies_cost", report, "\n".join(lines), f"python benchmarks/proxies.py cost PATH/TO/cifar10/train --repeats {repeats}")


_SCORED: dict[Path, dict[str, dict[str, float]]] = {}  # each proxy's values by cell, from a file of results


class _CachedProxy:
    """A prefilter that runs the proxy on each cell's network, as a study's does, but once a cell for every study:
    its network initialised with seed 0 and scored on the batch of the nasbench201 benchmark (a study's would
    initialise it with the study's seed and draw its batch with it)."""

    def __init__(self, proxy: str, pool: int, folder: str) -> None:
        self.proxy, self.pool = proxy, pool
        self.images, self.labels = _batch(folder)
        self.computed = check_names([proxy])
        # Kept between runs (another pool, another proxy of the same pass): a cell's values do not change.
        self.saved = RESULTS / f"proxies_prefilter.{'_'.join(self.computed)}.partial.json"
        if self.saved not in _SCORED:
            _SCORED[self.saved] = json.loads(self.saved.read_text()) if self.saved.exists() else {}
        self.rows = _SCORED[self.saved]  # shared by the runs of other pools

    def scores(self, archs: list) -> list[float]:
        cells = [arch_string(arch.stages[0].ops) for arch in archs]
        for arch, cell in zip(archs, cells):
            if cell not in self.rows:
                self.rows[cell] = score(init_network(arch, 0), self.images, self.labels, self.computed, seed=0)
        rows = [self.rows[cell] for cell in cells]
        return aggregate(self.proxy, rows) if self.proxy in AGGREGATES else [row[self.proxy] for row in rows]


def _prefilter_study(sampler: str, seed: int, trials: int, prefilter: _CostProxy | None) -> list[float]:
    """The mean accuracy of the cell a study picks after each of its trials."""
    space = load_space(ROOT / "spaces" / "nasbench201.yaml")
    table = load_table("nasbench201")
    study = optuna.create_study(direction="maximize", sampler=make_sampler(sampler, space, seed, trials))
    proposals = Proposals(study, space, Target(table.shape, None, "fp32", "cpu", table), seed, max_rejections=100, prefilter=prefilter)
    picks, best = [], -1.0
    for number in range(trials):
        trial_id = f"{seed}_{number:05d}"
        config = proposals.suggest(trial_id)
        found = table.look_up(Arch.from_dict(config["arch"]), seed + number)
        proposals.complete(trial_id, {Report.EPOCH: 200, Report.BUDGET_SPENT: True, Metrics.VAL_ACC: found.val_acc}, error=False, stopping=False)
        if found.val_acc > best:
            best, picked = found.val_acc, found.arch
        picks.append(100 * table.mean_val_acc(nasbench201_network(picked)))
    return picks


def prefilter_benchmark(seeds: int, trials: int, prefilters: list[tuple[str, int]], folder: str | None) -> None:
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(ROOT / "spaces" / "nasbench201.yaml")
    runs = {"random": ("random", None, min(trials, 100)), space.sampler: (space.sampler, None, trials)}
    for name, pool in prefilters:
        prefilter = _CostProxy(name, pool) if name in COUNTED else _CachedProxy(name, pool, folder)
        runs[f"{space.sampler} --prefilter {name}:{pool}"] = (space.sampler, prefilter, min(trials, 100))
    curves, seconds = {}, {}
    for label, (sampler, prefilter, count) in runs.items():
        start = time.process_time()
        curves[label] = [_prefilter_study(sampler, seed, count, prefilter) for seed in range(seeds)]
        seconds[label] = time.process_time() - start
        print(f"{label}: {seconds[label]:.0f} s of CPU", flush=True)
    medians = {label: [float(np.median([curve[t] for curve in found])) for t in range(len(found[0]))] for label, found in curves.items()}
    target = medians["random"][99] if len(medians["random"]) >= 100 else None
    reached = {label: next((t + 1 for t, value in enumerate(median) if target is not None and value >= target), None)
               for label, median in medians.items()}
    for path, rows in _SCORED.items():
        path.write_text(json.dumps(rows))
    described = ",".join(f"{name}:{pool}" for name, pool in prefilters)
    report = {"machine": machine(), "seeds": seeds, "prefilters": described, "random_100_median": target, "reached": reached,
              "median_picks": medians, "cpu_s": seconds}
    lines = [f"`spaces/nasbench201.yaml`'s default sampler ({space.sampler}) on the cifar10 table, with and without "
             f"{' or '.join(f'`--prefilter {name}:{pool}`' for name, pool in prefilters)}, and random search, {seeds} seeds each; each trial told one seed's 200-epoch accuracy; "
             f"the pick is a study's best by what it was told, as the table's mean accuracy of the cell. Random search's median pick "
             f"at 100 trials: {target:.2f}%.", "",
             "| search | trials for the median pick to reach random's 100-trial median | median pick at 25 trials | at 50 | at 100 |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for label, median in medians.items():
        at = [f"{median[t - 1]:.2f}%" if len(median) >= t else "" for t in (25, 50, 100)]
        lines.append(f"| {label} | {reached[label] if reached[label] else f'not in {len(median)}'} | " + " | ".join(at) + " |")
    write("proxies_prefilter", report, "\n".join(lines),
          f"python benchmarks/proxies.py prefilter --seeds {seeds} --trials {trials} --prefilter {described}"
          + ("" if {name for name, _ in prefilters} <= set(COUNTED) else " --data PATH/TO/cifar10/train"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("nasbench201", help="every proxy on random NAS-Bench-201 cells against the table")
    bench.add_argument("folder", help="the CIFAR-10 training images in ImageFolder layout")
    bench.add_argument("--cells", type=int, default=1000)
    bench.add_argument("--threads", type=int, default=1)
    bench.add_argument("--report-now", action="store_true", help="report on the cells scored so far, scoring none")
    bench.add_argument("--worker", default="0/1", help="K/N: score every Nth cell from the Kth, beside N-1 other workers (default 0/1)")
    timing = commands.add_parser("cost", help="each proxy's wall time per cell at torch's default threads")
    timing.add_argument("folder", help="the CIFAR-10 training images in ImageFolder layout")
    timing.add_argument("--repeats", type=int, default=3)
    on_trained = commands.add_parser("trained", help="every proxy on resnet and densenet architectures against a short training")
    on_trained.add_argument("folder", help="the CIFAR-10 training images in ImageFolder layout")
    on_trained.add_argument("--archs", type=int, default=6, help="architectures of each space (default 6)")
    prefilter = commands.add_parser("prefilter", help="the default sampler with and without a prefilter on the tabular benchmark")
    prefilter.add_argument("--seeds", type=int, default=20)
    prefilter.add_argument("--trials", type=int, default=200)
    prefilter.add_argument("--prefilter", default="params:10,synflow:10",
                           help="PROXY:POOL[,PROXY:POOL...]: a prefiltered search for each (default params:10,synflow:10)")
    prefilter.add_argument("--data", help="the CIFAR-10 training images in ImageFolder layout: a batch for a proxy that runs the network")
    arguments = parser.parse_args()
    if arguments.command == "prefilter":
        prefilters = [(name, int(pool)) for name, pool in (entry.split(":") for entry in arguments.prefilter.split(","))]
        if unknown := [name for name, _ in prefilters if name not in (*PROXIES, *AGGREGATES)]:
            parser.error(f"--prefilter: no proxy {unknown[0]}")
        if arguments.data is None and not {name for name, _ in prefilters} <= set(COUNTED):
            parser.error(f"--prefilter {arguments.prefilter} runs a network on a batch of images: give --data")
        prefilter_benchmark(arguments.seeds, arguments.trials, prefilters, arguments.data)
    if arguments.command == "cost":
        cost(arguments.folder, arguments.repeats)
    if arguments.command == "trained":
        trained(arguments.folder, arguments.archs)
    if arguments.command == "nasbench201":
        worker = tuple(int(part) for part in arguments.worker.split("/"))
        nasbench201(arguments.folder, arguments.cells, arguments.threads, worker, arguments.report_now)


if __name__ == "__main__":
    main()
