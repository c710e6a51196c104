"""The commands on a study's MLflow store: ``query`` (the best trials, pivot tables, ANOVA,
comparisons, the Pareto front), ``plot`` (the study's pictures) and ``ui`` (the MLflow UI on
the store, which must exist, and the address of each study's trials in it), and where a
tracking server shows its own UI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..config import ConfigError
from .flags import add_store_flags, add_tracking_uri, output_folder, positive, tracking_uri
from .render import (
    csv_text,
    footnote,
    format_anova,
    format_comparisons,
    format_front,
    format_table,
    format_trials,
    in_percent,
    observational,
    records,
    say,
)

if TYPE_CHECKING:  # pandas loads only for the commands that read records
    import pandas as pd

    from ..tracking import StudyRecord

TOP = 10  # trials that query lists by default: a screenful


def add_query(commands: argparse._SubParsersAction) -> None:
    """The ``query`` command and its flags."""
    from ..analysis import AGGREGATES

    query = commands.add_parser("query", help="a study's best trials, or a pivot of its MLflow records: aggregate, its interval, replicates; ANOVA")
    query.add_argument("study", help="study name (a space's or experiment's name, or the --name it ran under)")
    query.add_argument("--top", type=positive,
                       help=f"list the N trials of the highest validation accuracy (default {TOP}; what query does without --rows or --pareto)")
    query.add_argument("--rows", help="knob or factor for the rows of a pivot, e.g. dense.growth_rate")
    query.add_argument("--pareto", action="store_true",
                       help="the Pareto front of the completed trials over the study's objectives: each point's objectives and run id")
    query.add_argument("--cols", help="knob or factor for the columns")
    query.add_argument("--metric", default="val_acc", help="metric to aggregate (default val_acc)")
    query.add_argument("--agg", choices=AGGREGATES, default="mean",
                       help="mean (t-interval), median (order-statistic interval) or max (no interval)")
    query.add_argument("--where", action="append", help="keep trials with KNOB=VALUE (or !=, <, <=, >, >=); repeatable")
    query.add_argument("--anova", action="store_true",
                       help="analysis of variance of the metric by --rows (and --cols, with their interaction), Type II")
    query.add_argument("--compare", action="store_true",
                       help="pairwise differences between levels: Tukey HSD; against the baseline, Holm-corrected, one factor at a time")
    query.add_argument("--format", choices=["table", "csv", "json"], default="table",
                       help="csv: accuracies in percent as in the table, in columns NAME_pct; json: as MLflow records them, "
                            "fractions; with --anova, --compare or --pareto, json is one object and csv that table")
    add_store_flags(query)
    query.set_defaults(run=_query)


def add_plot(commands: argparse._SubParsersAction) -> None:
    """The ``plot`` command and its flags."""
    from ..analysis import AGGREGATES

    plot = commands.add_parser("plot", help="draw a study's pictures (heatmap, interaction, Pareto, curves, importances)")
    plot.add_argument("study", help="study name")
    plot.add_argument("--rows", help="knob or factor for the heatmap's rows and the interaction plot's x axis")
    plot.add_argument("--cols", help="knob or factor for the heatmap's columns and the interaction plot's lines")
    plot.add_argument("--metric", default="val_acc")
    plot.add_argument("--agg", choices=AGGREGATES, default="mean")
    plot.add_argument("--out", default="plots", help="folder for the PNG files (default ./plots)")
    plot.add_argument("--force", action="store_true", help="write over a non-empty --out folder")
    plot.add_argument("--log", action="store_true", help="also attach them to the study's parent run in MLflow")
    add_store_flags(plot)
    plot.set_defaults(run=_plot)


def add_ui(commands: argparse._SubParsersAction) -> None:
    """The ``ui`` command and its flags."""
    ui = commands.add_parser("ui", help="start the MLflow UI on the study store (of a tracking server: say where its own is)")
    add_tracking_uri(ui)
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=positive, default=5000)
    ui.set_defaults(run=_ui)


def _query(args: argparse.Namespace) -> None:
    from ..tracking import find_study

    if args.rows is None and (args.cols or args.anova or args.compare):
        raise ConfigError("--cols, --anova and --compare need --rows KNOB")
    if args.top is not None and (args.rows or args.pareto):
        raise ConfigError("--top lists the best trials, --rows pivots them and --pareto gives their front: ask for one")
    record = find_study(args.study, tracking_uri(args), args.experiment)
    if args.pareto:
        _front(record, args.format)
    elif args.rows is None:
        _best(record, args)
    else:
        _pivot(record, args)


def _best(record: StudyRecord, args: argparse.Namespace) -> None:
    """The trials of the highest validation accuracy; a footnote counts those without one."""
    from ..analysis import best_trials, left_out
    from ..names import SCORED

    table = best_trials(record, args.where or [])
    shown = table.head(args.top or TOP)
    if args.format == "json":
        print(json.dumps(records(shown), indent=2))
    elif args.format == "csv":
        print(csv_text(shown, ["val_acc"]), end="")
    else:
        print(format_trials(shown, len(table)))
    _footnote(footnote({status: n for status, n in left_out(record).items() if status not in SCORED}, "list"), args.format)


def _front(record: StudyRecord, form: str) -> None:
    """The Pareto front of the completed trials."""
    from ..analysis import pareto, study_trials

    front = pareto(study_trials(record), record.objectives)
    if form == "json":
        print(json.dumps({"pareto": records(front)}, indent=2))
    elif form == "csv":
        print(csv_text(front, [column for column in front.columns if in_percent(column)]), end="")
    else:
        print(format_front(front))


def _pivot(record: StudyRecord, args: argparse.Namespace) -> None:
    """A pivot of the completed trials, with their ANOVA and comparisons if asked for; a footnote counts the other trials,
    and a line says that a search's analyses are observational (on stderr, apart from CSV or JSON)."""
    from ..analysis import left_out, pivot, study_trials
    from ..effects import anova, compare

    runs = study_trials(record)
    factors = [args.rows] + ([args.cols] if args.cols else [])
    where = args.where or []
    if args.format == "csv" and args.anova and args.compare:
        raise ConfigError("--format csv writes one table: ask for --anova or --compare, not both")
    table = pivot(runs, args.rows, args.cols, args.metric, args.agg, where)
    tests = compare(runs, factors, args.metric, where, baseline=record.baseline) if args.compare else None
    variance = anova(runs, factors, args.metric, where, baseline=record.baseline) if args.anova else None
    percent = in_percent(args.metric)
    if args.format == "csv" and variance is not None:
        print(csv_text(variance), end="")
    elif args.format == "csv" and tests is not None:
        print(csv_text(tests, ["diff", "low", "high"] if percent else []), end="")
    elif args.format == "csv":
        print(csv_text(table, [args.agg, "ci_low", "ci_high"] if percent else []), end="")
    elif args.format == "json" and (args.anova or args.compare):
        print(json.dumps(_analyses(variance, tests), indent=2))
    elif args.format == "json":
        print(table.to_json(orient="records", indent=2))
    else:
        print(format_table(table, args.rows, args.cols, args.metric, args.agg))
    _footnote(footnote(left_out(record), "table"), args.format)
    caveat = None if record.designed or not (args.anova or args.compare) else observational(record.params.get("sampler", "unknown sampler"))
    if caveat and args.format == "table":
        print("\n" + caveat)
    elif caveat:
        say(caveat)
    if args.format == "table":
        for analysed, describe in ((variance, format_anova), (tests, format_comparisons)):
            if analysed is not None:
                print("\n" + describe(analysed, args.metric))


def _footnote(note: str, form: str) -> None:
    """A table's footnote: below it, or on stderr, apart from CSV or JSON."""
    if note and form == "table":
        print(note)
    elif note:
        say(note)


def _analyses(variance: pd.DataFrame | None, tests: pd.DataFrame | None) -> dict[str, object]:
    """The ANOVA (its terms, then the residual apart) and the comparisons that were asked for, for JSON."""
    from ..effects import RESIDUAL

    answer: dict[str, object] = {}
    if variance is not None:
        terms = variance["term"] != RESIDUAL
        answer["anova"] = records(variance[terms])
        (residual,) = records(variance.loc[~terms, ["sum_sq", "df"]])
        answer["residual"] = residual
    if tests is not None:
        answer["compare"] = records(tests)
    return answer


def _plot(args: argparse.Namespace) -> None:
    from ..plots import plot_study
    from ..tracking import find_study

    out = output_folder(args.out, args.force)
    record = find_study(args.study, tracking_uri(args), args.experiment)
    paths = plot_study(record, out, rows=args.rows, cols=args.cols, metric=args.metric, agg=args.agg, say=say)
    if args.log:
        record.log_files(paths, "plots")
    for path in paths:
        print(path)


def is_server(uri: str) -> bool:
    """Whether an MLflow store is a tracking server, which serves its own UI."""
    return uri.startswith(("http://", "https://"))


def server_ui(uri: str, path: str | None = None) -> str:
    """The address of ``path`` (default: the list of experiments) in the MLflow UI that the server at ``uri`` serves."""
    from ..tracking import EXPERIMENTS_PATH

    return f"{uri.rstrip('/')}/{path or EXPERIMENTS_PATH}"


def _say_addresses(base: str, links: list[tuple[str, str]], file: TextIO) -> None:
    """Where the UI at ``base`` lists the experiments and shows each study's trials, and how it picks its view."""
    print(f"MLflow UI: {server_ui(base)}", file=file)
    if links:
        print("Each study's trials, best first, with their status and knobs as columns:", file=file)
        width = max(len(name) for name, _ in links)
        for name, path in links:
            print(f"  {name:<{width}}  {server_ui(base, path)}", file=file)
    print("An experiment opens in the view picked at the top left of the UI: pick Model training once for its runs "
          "(the browser remembers it); its description links to each study's trials.", file=file)


def _ui(args: argparse.Namespace) -> None:
    import shutil

    from ..tracking import check_exists, connect, study_links

    store = tracking_uri(args)
    if is_server(store):  # it serves its own UI
        _say_addresses(store, study_links(connect(store)), sys.stdout)
        return
    check_exists(store)  # as query does: mlflow ui would create an empty store here
    _say_addresses(f"http://{args.host}:{args.port}", study_links(connect(store)), sys.stderr)
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    command = [mlflow, "ui", "--backend-store-uri", store, "--host", args.host, "--port", str(args.port)]
    sys.stderr.flush()
    os.execv(mlflow, command)  # become the server: a signal to this process reaches it
