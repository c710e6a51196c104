"""The commands that run a study: ``run`` searches a space and ``ablate`` runs a designed ablation.
Both say how to resume once the study exists, then print the best trials (or the ablation's
table, ANOVA and comparisons) and draw the study's pictures before it is marked finished, and
say how to query and browse it. A finished study run again with nothing to add says so instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import AlreadyFinished, ConfigError
from ..names import DEFAULT_TRACKING_URI, PROXIES, PROXY_AGGREGATES, SAMPLERS, SCHEDULERS, Status
from ..space import Space, load_space
from .flags import add_study_flags, positive, recipe_overrides
from .records import is_server, server_ui
from .render import csv_text, footnote, format_anova, format_comparisons, format_front, format_table, human, say

if TYPE_CHECKING:  # the heavy modules load only for the commands that need them
    import pandas as pd

    from ..experiment import Experiment
    from ..study import RunOptions, StudyResult
    from ..tracking import StudyRecord


def add_run(commands: argparse._SubParsersAction) -> None:
    """The ``run`` command and its flags."""
    run = commands.add_parser("run", help="search a space: Optuna proposes, Ray Tune schedules, MLflow records")
    run.add_argument("space", help="search space YAML file")
    run.add_argument("--trials", type=positive, help="number of trials (default: the space's search.trials)")
    run.add_argument("--sampler", choices=SAMPLERS, help="default: the space's, else tpe")
    run.add_argument("--scheduler", choices=SCHEDULERS, help="early stopping (default asha; none with several objectives or --tabular, "
                     "or where ASHA's rungs cannot judge: under 3 epochs, or under 2,401 validation images)")
    run.add_argument("--prefilter", metavar="PROXY:POOL", help="train only the best of each POOL proposals by a zero-cost proxy "
                     f"({', '.join([*PROXIES, *PROXY_AGGREGATES])}); default: the space's search.prefilter")
    add_study_flags(run)
    run.set_defaults(run=_run)


def add_ablate(commands: argparse._SubParsersAction) -> None:
    """The ``ablate`` command and its flags."""
    ablate = commands.add_parser("ablate", help="run a designed ablation: every cell of an experiment, replicated")
    ablate.add_argument("experiment_file", metavar="EXPERIMENT", help="experiment YAML file (see experiments/)")
    ablate.add_argument("--seeds", type=positive, help="replicates per cell (default: the file's replicates)")
    add_study_flags(ablate)
    ablate.set_defaults(run=_ablate)


def _run(args: argparse.Namespace) -> None:
    space = load_space(args.space)
    options = _options(args, args.name or space.name, trials=args.trials, sampler=args.sampler, scheduler=args.scheduler,
                       prefilter=args.prefilter)
    _study(args, space, options, lambda result: _summarize_search(result, space, options))


def _ablate(args: argparse.Namespace) -> None:
    from ..experiment import load_experiment

    experiment = load_experiment(args.experiment_file)
    if args.seeds:
        experiment = experiment.with_replicates(args.seeds)
    options = _options(args, args.name or experiment.name)
    _study(args, experiment.space, options, lambda result: _summarize_ablation(result, experiment, options), experiment)


def _study(args: argparse.Namespace, space: Space, options: RunOptions, summarize: Callable[[StudyResult], None],
           experiment: Experiment | None = None) -> None:
    """Run the study, summarized before it is marked finished (a Ctrl-C in the summary leaves it to resume), then say how
    to query and browse it; a finished study that holds every trial asked for says so, and runs nothing."""
    from ..study import run_study

    try:
        result = run_study(space, options, experiment=experiment, started=lambda: _say_how_to_resume(args), summarize=summarize)
    except AlreadyFinished as finished:
        print(finished)
        _footer(options.name, finished.tracking_uri)
        return
    _footer(result.name, result.tracking_uri, result.experiment_id)


def _summarize_search(result: StudyResult, space: Space, options: RunOptions) -> None:
    """A search's best trials, its Pareto front with several objectives, and its pictures."""
    from ..study import searched_knobs
    from ..tracking import study_of_run, trial_name

    scored = [t for t in result.trials if t["val_acc"] is not None]
    rejected = (f" ({result.rejected} rejected proposals were not trained; the parent run's rejected.csv says why)"
                if result.rejected else "")
    print(f"\n{result.name}: {len(result.trials)} trials{rejected}; top {min(5, len(scored))} by validation accuracy:")
    print(f"  {'val_acc':>8}  {'params':>8}  {'MACs':>8}  {'status':<13}  {'trial':<14}  {'MLflow run id':<32}  architecture")
    for t in scored[:5]:
        print(
            f"  {t['val_acc']:>8.2%}  {human(int(t['params'])):>8}  {human(int(t['macs'])):>8}  {t['status']:<13}  "
            f"{trial_name(t['trial_id']):<14}  {t['run_id']:<32}  {searched_knobs(space, t['knobs'])}"
        )
    _looked_up(result)
    if result.front is not None:
        print(f"\nPareto front of the {sum(t['status'] == Status.COMPLETED for t in result.trials)} completed trials "
              f"({', '.join(f'{o.metric} {o.goal}' for o in space.objectives)}), {len(result.front)} points:")
        print(format_front(result.front))
    _pictures(study_of_run(result.parent_run_id, result.tracking_uri), options)


def _summarize_ablation(result: StudyResult, experiment: Experiment, options: RunOptions) -> None:
    """An ablation's table of its completed cells, their ANOVA and comparisons, and its pictures."""
    from ..analysis import completed, left_out, pivot
    from ..tracking import study_of_run

    factors = list(experiment.factors)
    rows, cols = factors[0], factors[1] if len(factors) > 1 else None
    # By its parent run: a newer study may have the same name.
    record = study_of_run(result.parent_run_id, result.tracking_uri)
    runs = completed(record)
    if not runs.empty:
        print(f"\n{result.name}: {len(result.trials)} trials ({experiment.design}, {experiment.replicates} replicates per cell)")
        print(format_table(pivot(runs, rows, cols, "val_acc"), rows, cols, "val_acc", "mean"))
        _looked_up(result)
        if note := footnote(left_out(record), "table"):
            print(note)
        _effects(record, runs, factors, options.storage)
    _pictures(record, options, rows, cols)


def _options(args: argparse.Namespace, name: str, **search: object) -> RunOptions:
    from ..study import RunOptions

    return RunOptions(
        name=name,
        storage=args.storage or Path("cnnsearch_runs") / name,
        resume=args.resume,
        max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        ray_address=args.ray_address or os.environ.get("RAY_ADDRESS"),
        experiment=args.experiment,
        tracking_uri=args.tracking_uri,  # None: a resumed study's own store, else the default (run_study decides)
        seed=args.seed,
        dataset=args.dataset,
        epochs=args.epochs,
        subset=args.subset,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        val_subset=args.val_subset,
        latency_device=args.latency_device,
        tabular=args.tabular,
        **recipe_overrides(args),
        verbose=args.verbose,
        cache_dir=args.cache_dir,
        data_dir=args.data_dir,
        **search,
    )


def _looked_up(result: StudyResult) -> None:
    """Under a tabular study's results: where its accuracies come from, and how to train its choice for real."""
    from ..tabular import TABLE_EPOCHS

    if result.tabular:
        print(f"These accuracies were looked up in the {result.tabular} table (NAS-Bench-201's, after {TABLE_EPOCHS} epochs, one of each "
              f"cell's seeds), not trained; `cnnsearch export {result.name}` trains the chosen network for real.")


def _say_how_to_resume(args: argparse.Namespace) -> None:
    """Once the study exists: from then on a Ctrl-C, wherever it comes, ends with the command that resumes it."""
    args.resumable = True
    # Said at once: if Ray itself is lost (its raylet killed for memory), Ray ends this process.
    print(f"Should the study stop (Ctrl-C, a lost machine), this goes on with it: {args.resume_command}", file=sys.stderr, flush=True)


def _effects(record: StudyRecord, runs: pd.DataFrame, factors: list[str], storage: str | Path) -> None:
    """An ablation's ANOVA and pairwise comparisons: printed, written as CSV and text into the study's
    storage (``analysis/``) and attached to its parent run; one that the design cannot support says why instead."""
    from ..effects import anova, compare
    from ..storage import Storage

    with Storage.open(storage).local_folder("analysis") as folder:
        paths = []
        # Each CSV in the unit of the text beside it: the comparisons' differences in percentage points.
        for name, analyse, describe, accuracies in (("anova", anova, format_anova, []),
                                                    ("comparisons", compare, format_comparisons, ["diff", "low", "high"])):
            try:
                table = analyse(runs, factors, "val_acc", baseline=record.baseline)
            except ConfigError as error:
                print(f"\n{name}: not computed: {error}")
                continue
            text = describe(table, "val_acc")
            print("\n" + text)
            (folder / f"{name}.csv").write_text(csv_text(table, accuracies))
            (folder / f"{name}.txt").write_text(text + "\n")
            paths += [folder / f"{name}.csv", folder / f"{name}.txt"]
        record.log_files(paths, "analysis")


def _pictures(record: StudyRecord, options: RunOptions, rows: str | None = None, cols: str | None = None) -> None:
    """Draw the study's pictures into its storage and attach them to its parent run."""
    from ..plots import plot_study
    from ..storage import Storage

    storage = Storage.open(options.storage)
    with storage.local_folder("plots") as folder:
        paths = plot_study(record, folder, rows=rows, cols=cols, say=say)
        record.log_files(paths, "plots")
    if paths:
        print(f"Pictures: {storage.describe(storage.path('plots'))}/ ({', '.join(p.name for p in paths)}), also in MLflow under plots/")


def _footer(name: str, tracking_uri: str, experiment_id: str | None = None) -> None:
    """How to query the study and where to browse it: on a tracking server, its trials (given its experiment) or its list."""
    from ..tracking import trials_path

    flag = f" --tracking-uri {tracking_uri}" if tracking_uri != DEFAULT_TRACKING_URI else ""
    print(f"\nQuery it: cnnsearch query {name} [--top N | --rows KNOB [--cols KNOB] [--anova] [--compare]]{flag}")
    if is_server(tracking_uri):
        print(f"Browse it: {server_ui(tracking_uri, trials_path(experiment_id, name) if experiment_id else None)}")
    else:
        print(f"Browse it: cnnsearch ui{flag}   (it prints the address of each study's trials)")
