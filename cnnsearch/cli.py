"""The ``cnnsearch`` command line. Nothing imports this module."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from .config import LONG_STEPS, SHORT_STEPS, ConfigError, Interrupted, format_validation_error, list_presets, load_arch
from .costs import LATENCY_DEVICES, Cost, cheapest, over_limits, profile, training_memory
from .space import Choice, DatasetSpec, Fixed, Space, load_space

if TYPE_CHECKING:  # the heavy modules load only for the commands that need them
    import pandas as pd

    from .study import RunOptions, StudyResult
    from .tracking import StudyRecord

_DESCRIPTION = "Neural-architecture search and ablations of convolutional networks: Optuna proposes, Ray Tune runs, MLflow records."


def _human(count: int) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.3g}{suffix}"
    return str(count)


def _cost_line(cost: Cost) -> str:
    return f"{cost.params:>12,} params  {cost.macs:>15,} MACs  {cost.flops:>15,} FLOPs"


def _show(args: argparse.Namespace) -> None:
    import torch

    from .train import resolve_precision

    space = load_space(args.space)
    found = cheapest(space)
    knobs = space.knobs()
    variable = {name: knob for name, knob in knobs.items() if not isinstance(knob, Fixed)}
    print(f"{space.source}: space {space.name!r} (hash {space.digest})")
    if space.description:
        print(f"  {space.description}")
    width = max(map(len, knobs))
    print(f"\nknobs ({len(variable)} searched, {len(knobs) - len(variable)} fixed):")
    for name, knob in variable.items():
        print(f"  {name:<{width}}  {knob}")
    print("  fixed: " + ", ".join(f"{name}={knob}" for name, knob in knobs.items() if name not in variable))
    size = space.size()
    print(f"\npoints: {'continuous (a float range has no step)' if size is None else f'{size:,} distinct architectures'}")
    limits = space.limits
    shown = [f"{key} {value:,}" for key, value in limits.model_dump().items() if value is not None]
    print(f"limits: {', '.join(shown) if shown else 'none'}")
    if found is None:
        print("cheapest: not determined (too many categorical combinations to enumerate)")
    else:
        arch, cost = found
        print(f"cheapest within limits: {_human(cost.params)} params, {_human(cost.macs)} MACs")
    costs, memories = [], []
    precision = resolve_precision(space.recipe.precision, torch.device("cpu"))
    batch_knob = space.recipe_knobs.get("batch_size")
    batch = max(batch_knob.choices) if isinstance(batch_knob, Choice) else batch_knob.high if batch_knob else space.recipe.batch_size
    print(f"\n{args.samples} random samples (seed {args.seed}); memory: a CPU trial's expected peak at batch "
          f"{batch}{' (the largest searched)' if batch_knob else ''}, {precision}:")
    for index in range(args.samples):
        try:
            arch = space.sample_random(args.seed + index)
            cost = profile(arch)
            memory = training_memory(arch, batch, precision).total
        except ConfigError as error:
            print(f"  #{index}: rejected: {error}")
            continue
        costs.append(cost)
        memories.append(memory)
        over = over_limits(limits, cost)
        print(f"  #{index}: {_cost_line(cost)}, memory {memories[-1] / 2**30:.1f} GiB  {'over limits: ' + over if over else 'ok'}")
    if costs:
        params = sorted(cost.params for cost in costs)
        macs = sorted(cost.macs for cost in costs)
        within = sum(over_limits(limits, cost) is None for cost in costs)
        print(
            f"range: params {_human(params[0])} to {_human(params[-1])}, "
            f"MACs {_human(macs[0])} to {_human(macs[-1])}, memory {min(memories) / 2**30:.1f} to {max(memories) / 2**30:.1f} GiB; "
            f"{within} of {args.samples} within limits"
        )
    d, b, s = space.dataset, space.budget, space.search
    print(
        f"\ndataset: {d.name}, {_test_split(d.name, d.test_fraction)}, {d.val_fraction:.0%} of the rest for validation"
        + (f", subset {d.subset:,}" if d.subset else "")
        + (f", validating trials on {d.val_subset:,} of the held-out images" if d.val_subset else "")
        + f"; budget: {b.epochs} epochs; recipe: {_recipe_line(space)}; search: {space.sampler}, {s.trials} trials"
        + "; objectives: " + ", ".join(f"{objective.metric} {objective.goal}" for objective in space.objectives)
    )


def _test_split(dataset: str, test_fraction: float) -> str:
    """Where a data set's test split comes from, in words."""
    from .data import held_out_test_fraction

    fraction = held_out_test_fraction(dataset, test_fraction)
    return f"{fraction:.0%} held out for testing" if fraction else "its own test images for testing"


def _profile(args: argparse.Namespace) -> None:
    arch = load_arch(args.arch)
    updates = {key: value for key, value in (("input_size", args.input_size), ("num_classes", args.num_classes)) if value}
    if updates:
        arch = type(arch).from_dict(arch.to_dict() | updates, source=args.arch)
    try:
        cost = profile(arch)
    except ConfigError as error:
        raise ConfigError(f"{args.arch}: {error}") from None
    if args.json:
        print(json.dumps(cost.to_dict()))
        return
    print(f"{arch.name}: {arch.input_size}x{arch.input_size} input, {arch.num_classes} classes, hash {arch.digest}")
    print(f"  params {cost.params:,} ({_human(cost.params)})")
    print(f"  MACs   {cost.macs:,} ({_human(cost.macs)})")
    print(f"  FLOPs  {cost.flops:,} (2 x MACs of convolutions and linear layers)")


def _train(args: argparse.Namespace) -> None:
    from .config import Recipe
    from .data import held_out_test_fraction, load_dataset, split_dataset
    from .space import Budget
    from .train import fit_to_data, resolve_device, train

    device = resolve_device(args.device)  # before minutes of decoding, not after
    arch = load_arch(args.arch)
    data = load_dataset(args.dataset, cache_dir=args.cache_dir, data_dir=args.data_dir)
    arch = fit_to_data(arch, data)
    split = split_dataset(data.labels, val_fraction=args.val_fraction, seed=args.split_seed, subset=args.subset,
                          test_fraction=held_out_test_fraction(args.dataset, args.test_fraction))
    recipe = Recipe(**_recipe_overrides(args))
    budget = Budget(epochs=args.epochs, max_seconds=args.max_seconds)
    result = train(arch, data, split, recipe=recipe, budget=budget, seed=args.seed, device=device, progress=True)
    if args.json:
        print(json.dumps({"arch": arch.name, "arch_digest": arch.digest, **result.to_dict()}))
        return
    print(f"{arch.name} on {data.source}: {result.status}" + (f" ({result.message})" if result.message else ""))
    if result.val_acc is not None:
        print(f"  val_acc {result.val_acc:.2%}, val_loss {result.val_loss:.4f}, train_loss {result.train_loss:.4f}")
    print(
        f"  {result.epochs:g} epochs, {result.images:,} images in {result.seconds:.1f} s, "
        f"{result.train_images_per_s:,.0f} training images/s on {result.device}"
    )
    if recipe.compile:
        print(f"  compiled in {result.compile_seconds:.1f} s of those, not counted in the images/s")
    print(f"  peak lr {result.lr:.4g}{' (range test)' if recipe.lr == 'auto' else ''}, {result.precision}")
    print(f"  split: {split.describe()}")


def _options(args: argparse.Namespace, name: str, **search: object) -> RunOptions:
    from .study import RunOptions

    return RunOptions(
        name=name,
        storage=args.storage or Path("cnnsearch_runs") / name,
        resume=args.resume,
        max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        ray_address=args.ray_address or os.environ.get("RAY_ADDRESS"),
        experiment=args.experiment,
        tracking_uri=args.tracking_uri,
        seed=args.seed,
        dataset=args.dataset,
        epochs=args.epochs,
        subset=args.subset,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        val_subset=args.val_subset,
        latency_device=args.latency_device,
        **_recipe_overrides(args),
        verbose=args.verbose,
        cache_dir=args.cache_dir,
        data_dir=args.data_dir,
        **search,
    )


def _pictures(result: StudyResult, options: RunOptions, rows: str | None = None, cols: str | None = None) -> None:
    """Draw the study's pictures into its storage and attach them to its parent run."""
    from .plots import plot_study
    from .storage import Storage
    from .tracking import find_study

    record = find_study(result.name, result.tracking_uri)
    storage = Storage.open(options.storage)
    with storage.local_folder("plots") as folder:
        paths = plot_study(record, folder, rows=rows, cols=cols, say=_say)
        record.log_files(paths, "plots")
    if paths:
        print(f"Pictures: {storage.describe(storage.path('plots'))}/ ({', '.join(p.name for p in paths)}), also in MLflow under plots/")


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def _footer(result: StudyResult) -> None:
    print(f"\nQuery it: cnnsearch query {result.name} --rows KNOB [--cols KNOB] [--anova] [--compare]"
          + (f" --tracking-uri {result.tracking_uri}" if result.tracking_uri != "sqlite:///mlflow.db" else ""))
    if _is_server(result.tracking_uri):
        print(f"Browse it: {_server_ui(result.tracking_uri)}")
    else:
        print(f"Browse it: mlflow ui --backend-store-uri {result.tracking_uri}   (or: cnnsearch ui)")


def _is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def _server_ui(tracking_uri: str) -> str:
    """Where a tracking server shows its runs: MLflow 3's UI opens on its GenAI view unless the URL picks model training."""
    return f"{tracking_uri.rstrip('/')}/#/experiments?workflowType=machine_learning"


def _say_how_to_resume(args: argparse.Namespace) -> None:
    # Said first: if Ray itself is lost (its raylet killed for memory), Ray ends this process.
    print(f"Should the study stop (Ctrl-C, a lost machine), this goes on with it: {args.resume_command}", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> None:
    from .study import run_study, searched_knobs
    from .tracking import trial_name

    space = load_space(args.space)
    name = args.name or space.name
    options = _options(args, name, trials=args.trials, sampler=args.sampler, scheduler=args.scheduler)
    _say_how_to_resume(args)
    result = run_study(space, options)
    scored = [t for t in result.trials if t["val_acc"] is not None]
    rejected = (f" ({result.rejected} rejected proposals were not trained; the parent run's rejected.csv says why)"
                if result.rejected else "")
    print(f"\n{name}: {len(result.trials)} trials{rejected}; top {min(5, len(scored))} by validation accuracy:")
    print(f"  {'val_acc':>8}  {'params':>8}  {'MACs':>8}  {'status':<13}  {'trial':<14}  {'MLflow run id':<32}  architecture")
    for t in scored[:5]:
        print(
            f"  {t['val_acc']:>8.2%}  {_human(int(t['params'])):>8}  {_human(int(t['macs'])):>8}  {t['status']:<13}  "
            f"{trial_name(t['trial_id']):<14}  {t['run_id']:<32}  {searched_knobs(space, t['knobs'])}"
        )
    if result.front is not None:
        print(f"\nPareto front of the {sum(t['status'] == 'completed' for t in result.trials)} completed trials "
              f"({', '.join(f'{o.metric} {o.goal}' for o in space.objectives)}), {len(result.front)} points:")
        print(_format_front(result.front))
    _pictures(result, options)
    _footer(result)


def _format_front(front: pd.DataFrame) -> str:
    """A Pareto front for people: accuracy in percent, counts in K/M/G, latency in ms, then the trial and its run id."""
    metrics = [column for column in front.columns if column not in ("trial", "run_id")]

    def value(metric: str, number: float) -> str:
        if metric == "val_acc":
            return f"{number:.2%}"
        return f"{number:.3g}" if metric == "latency_ms" else _human(int(number))

    lines = ["  " + "  ".join(f"{metric:>10}" for metric in metrics) + f"  {'trial':<18}  MLflow run id"]
    for _, row in front.iterrows():
        lines.append("  " + "  ".join(f"{value(metric, row[metric]):>10}" for metric in metrics) + f"  {row['trial']:<18}  {row['run_id']}")
    return "\n".join(lines)


def _ablate(args: argparse.Namespace) -> None:
    from .analysis import completed, pivot
    from .experiment import load_experiment
    from .study import run_study
    from .tracking import find_study

    experiment = load_experiment(args.experiment_file)
    if args.seeds:
        experiment = experiment.with_replicates(args.seeds)
    name = args.name or experiment.name
    options = _options(args, name)
    _say_how_to_resume(args)
    result = run_study(experiment.space, options, experiment=experiment)
    factors = list(experiment.factors)
    rows, cols = factors[0], factors[1] if len(factors) > 1 else None
    record = find_study(result.name, result.tracking_uri)
    runs = completed(record)
    if not runs.empty:
        print(f"\n{name}: {len(result.trials)} trials ({experiment.design}, {experiment.replicates} replicates per cell)")
        print(_format_table(pivot(runs, rows, cols, "val_acc"), rows, cols, "val_acc", "mean"))
        _effects(record, runs, factors, options.storage)
    _pictures(result, options, rows, cols)
    _footer(result)


def _effects(record: StudyRecord, runs: pd.DataFrame, factors: list[str], storage: str | Path) -> None:
    """An ablation's ANOVA and pairwise comparisons: printed, written as CSV and text into the study's
    storage (``analysis/``) and attached to its parent run; one that the design cannot support says why instead."""
    from .effects import anova, compare
    from .storage import Storage

    with Storage.open(storage).local_folder("analysis") as folder:
        paths = []
        for name, analyse, describe in (("anova", anova, _format_anova), ("comparisons", compare, _format_comparisons)):
            try:
                table = analyse(runs, factors, "val_acc", baseline=record.baseline)
            except ConfigError as error:
                print(f"\n{name}: not computed: {error}")
                continue
            text = describe(table, "val_acc")
            print("\n" + text)
            (folder / f"{name}.csv").write_text(table.to_csv(index=False))
            (folder / f"{name}.txt").write_text(text + "\n")
            paths += [folder / f"{name}.csv", folder / f"{name}.txt"]
        record.log_files(paths, "analysis")


def _format_table(table: pd.DataFrame, rows: str, cols: str | None, metric: str, agg: str) -> str:
    """A pivot for people: per cell the aggregate, the interval that belongs to it and the replicate count."""
    from .analysis import INTERVALS

    percent = metric.endswith("acc")

    def number(value: float) -> str:
        return f"{value * 100:.2f}" if percent else f"{value:.4g}"

    def cell(row: pd.Series) -> str:
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
    if cols is None:
        lines = [f"{rows:>24} | {agg} {metric}"] + [f"{str(r[rows]):>24} | {cell(r)}" for _, r in table.iterrows()]
        return header + "\n" + "\n".join(lines)
    levels = sorted(table[cols].unique(), key=lambda v: (isinstance(v, str), v))
    width = max(22, *(len(cell(r)) for _, r in table.iterrows()))
    corner = f"{rows} / {cols}"
    lines = [f"{corner:>24} | " + " | ".join(f"{str(c):>{width}}" for c in levels)]
    for level, part in table.groupby(rows, sort=True):
        by_col = {r[cols]: cell(r) for _, r in part.iterrows()}
        lines.append(f"{str(level):>24} | " + " | ".join(f"{by_col.get(c, '-'):>{width}}" for c in levels))
    return header + "\n" + "\n".join(lines)


def _format_anova(table: pd.DataFrame, metric: str) -> str:
    """The ANOVA table, then a verdict per term at the significance level."""
    from .effects import ALPHA, RESIDUAL

    width = max(24, *(len(term) for term in table["term"]))
    lines = [f"ANOVA of {metric} (Type II sums of squares)",
             f"{'term':<{width}}  {'sum_sq':>10}  {'df':>4}  {'F':>8}  {'p':>10}  {'partial eta^2':>13}"]
    for _, row in table.iterrows():
        tested = row["term"] != RESIDUAL
        lines.append(f"{row['term']:<{width}}  {row['sum_sq']:>10.4g}  {row['df']:>4g}"
                     + (f"  {row['F']:>8.3f}  {row['p']:>10.3g}  {row['partial_eta_sq']:>13.3f}" if tested else ""))
    for _, row in table[table["term"] != RESIDUAL].iterrows():
        verdict = "significant" if row["p"] < ALPHA else "not significant"
        lines.append(f"  {row['term']}: {verdict} at alpha {ALPHA} (F = {row['F']:.3f}, p = {row['p']:.3g})")
    return "\n".join(lines)


def _format_comparisons(table: pd.DataFrame, metric: str) -> str:
    """Pairwise differences of means, their 95% intervals and adjusted p values."""
    percent = metric.endswith("acc")
    scale, unit = (100.0, " (percentage points)") if percent else (1.0, "")
    lines = [f"Pairwise differences of mean {metric}{unit}: level minus versus, 95% interval, adjusted p",
             f"{'factor':>24}  {'level':>10}  {'versus':>10}  {'diff':>8}  {'interval':>20}  {'p_adj':>8}  test"]
    for _, row in table.iterrows():
        interval = f"[{row['low'] * scale:.3g}, {row['high'] * scale:.3g}]"
        lines.append(f"{row['factor']:>24}  {str(row['level']):>10}  {str(row['versus']):>10}  {row['diff'] * scale:>8.3g}  "
                     f"{interval:>20}  {row['p_adj']:>8.3g}  {row['test']}")
    return "\n".join(lines)


def _records(table: pd.DataFrame) -> list[dict[str, object]]:
    """A table's rows for JSON: full precision, NaN as null, numpy scalars as Python ones."""
    return [{key: None if isinstance(value, float) and math.isnan(value) else getattr(value, "item", lambda: value)()
             for key, value in row.items()} for row in table.to_dict("records")]


def _query(args: argparse.Namespace) -> None:
    from .analysis import pareto, pivot, study_trials
    from .effects import RESIDUAL, anova, compare
    from .tracking import find_study

    record = find_study(args.study, args.tracking_uri, args.experiment)
    runs = study_trials(record)
    if args.pareto:
        front = pareto(runs, record.objectives)
        if args.format == "json":
            print(json.dumps({"pareto": _records(front)}, indent=2))
        elif args.format == "csv":
            print(front.to_csv(index=False), end="")
        else:
            print(_format_front(front))
        return
    if args.rows is None:
        raise ConfigError("query needs --rows KNOB, or --pareto")
    factors = [args.rows] + ([args.cols] if args.cols else [])
    where = args.where or []
    if args.format == "csv" and args.anova and args.compare:
        raise ConfigError("--format csv writes one table: ask for --anova or --compare, not both")
    table = pivot(runs, args.rows, args.cols, args.metric, args.agg, where)
    tests = compare(runs, factors, args.metric, where, baseline=record.baseline) if args.compare else None
    variance = anova(runs, factors, args.metric, where, baseline=record.baseline) if args.anova else None
    if args.format == "csv":
        print(next((t for t in (variance, tests) if t is not None), table).to_csv(index=False), end="")
    elif args.format == "json" and (args.anova or args.compare):
        answer: dict[str, object] = {}
        if variance is not None:
            terms = variance["term"] != RESIDUAL
            answer["anova"] = _records(variance[terms])
            (residual,) = _records(variance.loc[~terms, ["sum_sq", "df"]])
            answer["residual"] = residual
        if tests is not None:
            answer["compare"] = _records(tests)
        print(json.dumps(answer, indent=2))
    elif args.format == "json":
        print(table.to_json(orient="records", indent=2))
    else:
        print(_format_table(table, args.rows, args.cols, args.metric, args.agg))
        for analysed, describe in ((variance, _format_anova), (tests, _format_comparisons)):
            if analysed is not None:
                print("\n" + describe(analysed, args.metric))


def _plot(args: argparse.Namespace) -> None:
    from .plots import plot_study
    from .tracking import find_study

    record = find_study(args.study, args.tracking_uri, args.experiment)
    paths = plot_study(record, args.out, rows=args.rows, cols=args.cols, metric=args.metric, agg=args.agg, say=_say)
    if args.log:
        record.log_files(paths, "plots")
    for path in paths:
        print(path)


def _ui(args: argparse.Namespace) -> None:
    import shutil

    if _is_server(args.tracking_uri):  # it serves its own UI
        print(f"MLflow UI: {_server_ui(args.tracking_uri)}")
        return
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    command = [mlflow, "ui", "--backend-store-uri", args.tracking_uri, "--host", args.host, "--port", str(args.port)]
    print(f"MLflow UI: {_server_ui(f'http://{args.host}:{args.port}')}", file=sys.stderr)
    sys.stderr.flush()
    os.execv(mlflow, command)  # become the server: a signal to this process reaches it


def _export(args: argparse.Namespace) -> None:
    from .export import export_front, export_study

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    out = Path(args.out or Path("exports") / args.study)
    common = dict(retrain_epochs=args.retrain_epochs, formats=formats, tracking_uri=args.tracking_uri, experiment=args.experiment,
                  dataset=args.dataset, cache_dir=args.cache_dir, data_dir=args.data_dir, device=args.device, force=args.force, say=_say)
    if args.pareto:
        if args.where or args.top > 1:
            raise ConfigError("--pareto exports every point of the front; --where and --top pick one trial: give one or the other")
        for meta in export_front(args.study, out, seeds=args.seeds, **common):
            _describe_export(meta, out / meta["trial"])
        return
    _describe_export(export_study(args.study, out, top=args.top, seeds=args.seeds, where=args.where, **common), out)


def _describe_export(meta: dict[str, object], out: Path) -> None:
    trained, accuracies = meta["trained_on"], meta["accuracies"]
    print(f"{meta['name']} from study {meta['study']} -> {out}/ ({', '.join(meta['formats'])}); "
          f"{_human(meta['params'])} params, {_human(meta['macs'])} MACs")
    print(f"  trained on {' + '.join(trained['splits'])} ({trained['images']:,} images, {trained['epochs']} epochs, {trained['how']})")
    print(_accuracy_table([accuracies[key] for key in ("test", "val", "search")]))
    if "registered_model" in meta:
        print(f"  MLflow: {meta['registered_model']['uri']} (version {meta['registered_model']['version']})")


def _evaluate(args: argparse.Namespace) -> None:
    from .export import evaluate

    result = evaluate(args.folder, args.dataset, split=args.split, cache_dir=args.cache_dir, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(result))
        return
    recorded = "" if result["recorded"] is None else f"; recorded at export: {result['recorded']:.2%}"
    print(f"{args.folder} on {result['dataset']}{recorded}")
    print(_accuracy_table([result | {"of": "the exported model"}]))


def _accuracy_table(rows: list[dict[str, object]]) -> str:
    """Accuracies with the images each comes from; any the model trained on is marked "seen in training"."""

    def interval(row: dict) -> str:
        bounds = row["interval"]
        return f"{bounds['low']:.2%} to {bounds['high']:.2%}" if bounds else "-"

    lines = [f"  {'split':<6} {'images':>8}  {'accuracy':>8}  {'95% interval':<18}  {'images were':<18}  of"]
    for row in rows:
        seen = "seen in training" if row["seen_in_training"] else "held out"
        lines.append(f"  {row['split']:<6} {row['images']:>8,}  {row['accuracy']:>8.2%}  {interval(row):<18}  {seen:<18}  {row['of']}")
    return "\n".join(lines)


def _predict(args: argparse.Namespace) -> None:
    from .export import predict

    for path, classes in zip(args.images, predict(args.folder, args.images, top=args.top)):
        print(f"{path}: " + ", ".join(f"{name} {p:.1%}" for name, p in classes))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _learning_rate(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def _recipe_line(space: Space) -> str:
    """The recipe's batch, lr and precision, and each searched key as its knob."""
    r, searched = space.recipe, space.recipe_knobs
    lr = r.lr or f"{r.scaled_lr(SHORT_STEPS):g} to {r.scaled_lr(LONG_STEPS):g} by steps"
    shown = [f"batch {searched.get('batch_size', r.batch_size)}", f"lr {searched.get('lr', lr)}"]
    shown += [f"{key} {knob}" for key, knob in searched.items() if key not in ("batch_size", "lr")]
    return ", ".join([*shown, f"{r.precision} precision"])


def _recipe_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that override the recipe, for train, run and ablate."""
    parser.add_argument("--lr", type=_learning_rate, help="peak learning rate, or auto for a range test (default: scaled to the batch)")
    parser.add_argument("--batch-size", type=_positive)
    from typing import get_args

    from .config import Recipe

    precisions = get_args(Recipe.model_fields["precision"].annotation)  # the recipe's own list
    parser.add_argument("--precision", choices=precisions, help="autocast dtype (default auto)")
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")


def _recipe_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {key: getattr(args, key) for key in ("lr", "batch_size", "precision", "compile") if getattr(args, key) is not None}


def _store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow store (default sqlite:///mlflow.db)")
    parser.add_argument("--experiment", help="MLflow experiment holding the study (default: any)")


def _study_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that run and ablate share: where a study runs, where it is recorded, what overrides its files."""
    parser.add_argument("--max-concurrent", type=_positive, help="trials at once (default: as many as CPUs allow)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs (and torch threads) per trial")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="0.5 packs two trials per GPU; 0 without GPUs")
    parser.add_argument("--ray-address", help="join a Ray cluster (default: $RAY_ADDRESS, else start Ray here)")
    parser.add_argument("--experiment", help="MLflow experiment (default: the space's or experiment's name)")
    parser.add_argument("--tracking-uri", help="MLflow store (default sqlite:///mlflow.db)")
    parser.add_argument("--storage", help="study state: a folder, or a URI that every node reaches, such as "
                        "s3://BUCKET/PATH?endpoint_override=HOST:PORT (default ./cnnsearch_runs/NAME)")
    parser.add_argument("--name", help="study name (default: the space's or experiment's name)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted study with the settings it began with")
    parser.add_argument("--seed", type=int, help="seeds the sampler and every trial (default 0)")
    parser.add_argument("--dataset", help="override the dataset (cifar10, cifar100, synthetic, imagefolder:PATH)")
    parser.add_argument("--epochs", type=_positive, help="override budget.epochs")
    parser.add_argument("--subset", type=_positive, help="override dataset.subset (training images per trial)")
    parser.add_argument("--val-fraction", type=float, help="override dataset.val_fraction (validation share of the images)")
    parser.add_argument("--test-fraction", type=float,
                        help="override dataset.test_fraction (test share held out first, for data sets without test images)")
    parser.add_argument("--val-subset", type=_positive,
                        help="override dataset.val_subset (validate trials on this many held-out images; export uses all)")
    _recipe_flags(parser)
    parser.add_argument("--cache-dir", help="where decoded data sets are cached")
    parser.add_argument("--data-dir", help="where torchvision's CIFAR files are or are downloaded to")
    parser.add_argument("--latency-device", choices=LATENCY_DEVICES,
                        help="what measures each trial's latency_ms, in the driver, before training: cpu (default), cuda or onnxruntime")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own logs")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line, not after its usage block."""

    def error(self, message: str) -> None:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnsearch", description=_DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)

    show = commands.add_parser("show", help="validate a search space and summarize it")
    show.add_argument("space", help="search space YAML file")
    show.add_argument("--samples", type=_positive, default=8, help="random architectures to profile (default 8)")
    show.add_argument("--seed", type=int, default=0)
    show.set_defaults(run=_show)

    prof = commands.add_parser("profile", help="params, MACs and FLOPs of an architecture")
    prof.add_argument("arch", help=f"preset ({', '.join(list_presets())}) or architecture YAML file")
    prof.add_argument("--input-size", type=_positive, help="image height and width (default: the architecture's)")
    prof.add_argument("--num-classes", type=_positive, help="classifier outputs (default: the architecture's)")
    prof.add_argument("--json", action="store_true", help="print one JSON object with params, macs, flops")
    prof.set_defaults(run=_profile)

    tr = commands.add_parser("train", help="train one architecture and report its validation accuracy")
    tr.add_argument("arch", help="preset or architecture YAML file; classes and input size follow the data")
    tr.add_argument("--dataset", required=True, help="cifar10, cifar100, synthetic or imagefolder:PATH")
    tr.add_argument("--epochs", type=_positive, default=10)
    tr.add_argument("--subset", type=_positive, help="train on this many images of the training split")
    tr.add_argument("--seed", type=int, default=0, help="seeds weights, data order and augmentation")
    tr.add_argument("--device", default="cpu", help="cpu or cuda")
    _recipe_flags(tr)
    tr.add_argument("--max-seconds", type=float, help="stop training after this many seconds")
    dataset = DatasetSpec.model_fields  # the space's defaults, stated once
    tr.add_argument("--val-fraction", type=float, default=dataset["val_fraction"].default,
                    help="validation share of the images left after the test split (default %(default)s)")
    tr.add_argument("--test-fraction", type=float, default=dataset["test_fraction"].default,
                    help="test share held out first, unless the data set has test images of its own (default %(default)s)")
    tr.add_argument("--split-seed", type=int, default=dataset["split_seed"].default,
                    help="seed of the test/train/validation split (default %(default)s)")
    tr.add_argument("--cache-dir", help="where decoded data sets are cached (default ~/.cache/cnnsearch)")
    tr.add_argument("--data-dir", help="where torchvision's CIFAR files are or are downloaded to")
    tr.add_argument("--json", action="store_true", help="print the result as one JSON object")
    tr.set_defaults(run=_train)

    run = commands.add_parser("run", help="search a space: Optuna proposes, Ray Tune schedules, MLflow records")
    run.add_argument("space", help="search space YAML file")
    run.add_argument("--trials", type=_positive, help="number of trials (default: the space's search.trials)")
    run.add_argument("--sampler", choices=["tpe", "random", "grid", "nsga2"], help="default: the space's, else tpe")
    run.add_argument("--scheduler", choices=["asha", "none"], help="early stopping (default asha)")
    _study_flags(run)
    run.set_defaults(run=_run)

    ablate = commands.add_parser("ablate", help="run a designed ablation: every cell of an experiment, replicated")
    ablate.add_argument("experiment_file", metavar="EXPERIMENT", help="experiment YAML file (see experiments/)")
    ablate.add_argument("--seeds", type=_positive, help="replicates per cell (default: the file's replicates)")
    _study_flags(ablate)
    ablate.set_defaults(run=_ablate)

    query = commands.add_parser("query", help="pivot a study's MLflow records: aggregate, its interval, replicates; ANOVA")
    query.add_argument("study", help="study name (a space's or experiment's name, or the --name it ran under)")
    query.add_argument("--rows", help="knob or factor for the rows, e.g. dense.growth_rate (required but with --pareto)")
    query.add_argument("--pareto", action="store_true",
                       help="the Pareto front of the completed trials over the study's objectives: each point's objectives and run id")
    query.add_argument("--cols", help="knob or factor for the columns")
    query.add_argument("--metric", default="val_acc", help="metric to aggregate (default val_acc)")
    query.add_argument("--agg", choices=["mean", "median", "max"], default="mean",
                       help="mean (t-interval), median (bootstrap interval) or max (no interval)")
    query.add_argument("--where", action="append", help="keep runs with KNOB=VALUE (or !=, <, <=, >, >=); repeatable")
    query.add_argument("--anova", action="store_true",
                       help="analysis of variance of the metric by --rows (and --cols, with their interaction), Type II")
    query.add_argument("--compare", action="store_true",
                       help="pairwise differences between levels: Tukey HSD; against the baseline, Holm-corrected, one factor at a time")
    query.add_argument("--format", choices=["table", "csv", "json"], default="table",
                       help="with --anova, --compare or --pareto, json is one object and csv that table")
    _store_flags(query)
    query.set_defaults(run=_query)

    plot = commands.add_parser("plot", help="draw a study's pictures (heatmap, interaction, Pareto, curves, importances)")
    plot.add_argument("study", help="study name")
    plot.add_argument("--rows", help="knob or factor for the heatmap's rows and the interaction plot's x axis")
    plot.add_argument("--cols", help="knob or factor for the heatmap's columns and the interaction plot's lines")
    plot.add_argument("--metric", default="val_acc")
    plot.add_argument("--agg", choices=["mean", "median", "max"], default="mean")
    plot.add_argument("--out", default="plots", help="folder for the PNG files (default ./plots)")
    plot.add_argument("--log", action="store_true", help="also attach them to the study's parent run in MLflow")
    _store_flags(plot)
    plot.set_defaults(run=_plot)

    export = commands.add_parser("export", help="export a study's best architecture as a trained model")
    export.add_argument("study", help="study name")
    export.add_argument("--top", type=_positive, default=1, help="re-evaluate the top K trials (default 1)")
    export.add_argument("--seeds", type=_positive, default=1, help="seeds per re-evaluated trial (default 1)")
    export.add_argument("--retrain-epochs", type=int, help="epochs on train+val (default: the study's); 0 reuses the trial's checkpoint")
    export.add_argument("--out", help="output folder (default ./exports/STUDY)")
    export.add_argument("--formats", default="pt2,onnx,weights,mlflow", help="any of pt2,onnx,weights,mlflow (default all)")
    export.add_argument("--dataset", help="the study's data set, if it moved (e.g. imagefolder:PATH)")
    export.add_argument("--cache-dir", help="where decoded data sets are cached")
    export.add_argument("--data-dir", help="where torchvision's CIFAR files are")
    export.add_argument("--device", default="cpu", help="device for re-evaluation and retraining")
    export.add_argument("--force", action="store_true", help="export a best trial that sat at chance level all the same")
    export.add_argument("--where", action="append", default=[],
                        help="only trials whose metric meets METRIC<=VALUE (or <, >, >=, =, !=), e.g. macs<=50M, latency_ms<=2; repeatable")
    export.add_argument("--pareto", action="store_true", help="export every point of the study's Pareto front, each into OUT/TRIAL/")
    _store_flags(export)
    export.set_defaults(run=_export)

    from .export import SPLITS

    evaluate = commands.add_parser("evaluate", help="accuracy of an exported model")
    evaluate.add_argument("folder", help="export folder")
    evaluate.add_argument("--dataset", help="data set (default: the one it was exported with)")
    evaluate.add_argument("--split", choices=SPLITS, default=SPLITS[0],
                          help="test (default: images no training or search saw), the export's validation split, or every image")
    evaluate.add_argument("--cache-dir")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(run=_evaluate)

    predict = commands.add_parser("predict", help="top classes of images under an exported model")
    predict.add_argument("folder", help="export folder")
    predict.add_argument("images", nargs="+", help="image files")
    predict.add_argument("--top", type=_positive, default=3)
    predict.set_defaults(run=_predict)

    ui = commands.add_parser("ui", help="start the MLflow UI on the study store (of a tracking server: say where its own is)")
    ui.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow store (default sqlite:///mlflow.db)")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=_positive, default=5000)
    ui.set_defaults(run=_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.resume_command = f"cnnsearch {shlex.join(argv if '--resume' in argv else [*argv, '--resume'])}"
    try:
        args.run(args)
    except Interrupted as error:
        print(f"cnnsearch: {error}", file=sys.stderr)
        print(f"Resume it: {args.resume_command}", file=sys.stderr)
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        print("cnnsearch: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except ValidationError as error:  # options checked by the configs they fill
        error = format_validation_error(error, "option")
        print(f"cnnsearch: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except ConfigError as error:
        print(f"cnnsearch: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
