"""The ``cnnsearch`` command line. Nothing imports this module."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from .config import ConfigError, format_validation_error, list_presets, load_arch
from .profile import Cost, cheapest, profile
from .space import Fixed, load_space


def _human(count: int) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.3g}{suffix}"
    return str(count)


def _cost_line(cost: Cost) -> str:
    return f"{cost.params:>12,} params  {cost.macs:>15,} MACs  {cost.flops:>15,} FLOPs"


def _show(args: argparse.Namespace) -> None:
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
    costs = []
    print(f"\n{args.samples} random samples (seed {args.seed}):")
    for index in range(args.samples):
        try:
            arch = space.sample_random(args.seed + index)
            cost = profile(arch)
        except ConfigError as error:
            print(f"  #{index}: rejected: {error}")
            continue
        costs.append(cost)
        over = limits.violation(cost.params, cost.macs)
        print(f"  #{index}: {_cost_line(cost)}  {'over limits: ' + over if over else 'ok'}")
    if costs:
        params = sorted(cost.params for cost in costs)
        macs = sorted(cost.macs for cost in costs)
        within = sum(limits.violation(cost.params, cost.macs) is None for cost in costs)
        print(
            f"range: params {_human(params[0])} to {_human(params[-1])}, "
            f"MACs {_human(macs[0])} to {_human(macs[-1])}; {within} of {args.samples} within limits"
        )
    d, b, r, s = space.dataset, space.budget, space.recipe, space.search
    print(
        f"\ndataset: {d.name}, {d.val_fraction:.0%} validation" + (f", subset {d.subset:,}" if d.subset else "")
        + f"; budget: {b.epochs} epochs; recipe: batch {r.batch_size}, lr {r.lr}; search: {s.sampler}, {s.trials} trials"
    )


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
    from .data import load_dataset, split_dataset
    from .space import Budget
    from .train import fit_to_data, resolve_device, train

    device = resolve_device(args.device)  # before minutes of decoding, not after
    arch = load_arch(args.arch)
    data = load_dataset(args.dataset, cache_dir=args.cache_dir, data_dir=args.data_dir)
    arch = fit_to_data(arch, data)
    split = split_dataset(data.labels, val_fraction=args.val_fraction, seed=args.split_seed, subset=args.subset)
    recipe = Recipe(**{key: value for key, value in (("batch_size", args.batch_size), ("lr", args.lr)) if value})
    budget = Budget(epochs=args.epochs, max_seconds=args.max_seconds)
    result = train(
        arch, data, split, recipe=recipe, budget=budget, seed=args.seed, device=device, compile=args.compile, progress=True
    )
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
    print(f"  split: {split.describe()}")


def _run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .search import RunOptions, run_study, searched_knobs

    space = load_space(args.space)
    name = args.name or space.name
    options = RunOptions(
        name=name,
        storage=Path(args.storage or Path("cnnsearch_runs") / name),
        resume=args.resume,
        trials=args.trials,
        sampler=args.sampler,
        scheduler=args.scheduler,
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
        verbose=args.verbose,
        cache_dir=args.cache_dir,
        data_dir=args.data_dir,
    )
    result = run_study(space, options)
    scored = [t for t in result.trials if t["val_acc"] is not None]
    print(f"\n{name}: {len(result.trials)} trials; top {min(5, len(scored))} by validation accuracy:")
    print(f"  {'val_acc':>8}  {'params':>8}  {'MACs':>8}  {'status':<13}  {'MLflow run id':<32}  architecture")
    for t in scored[:5]:
        print(
            f"  {t['val_acc']:>8.2%}  {_human(int(t['params'])):>8}  {_human(int(t['macs'])):>8}  {t['status']:<13}  "
            f"{t['run_id']:<32}  {searched_knobs(space, t['knobs'])}"
        )
    print(f"\nBrowse them: mlflow ui --backend-store-uri {result.tracking_uri}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnsearch", description=__doc__)
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
    tr.add_argument("--batch-size", type=_positive)
    tr.add_argument("--lr", type=float, help="peak learning rate")
    tr.add_argument("--max-seconds", type=float, help="stop training after this many seconds")
    tr.add_argument("--val-fraction", type=float, default=0.1, help="held-out share of the images (default 0.1)")
    tr.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    tr.add_argument("--compile", action="store_true", help="torch.compile the model")
    tr.add_argument("--cache-dir", help="where decoded data sets are cached (default ~/.cache/cnnsearch)")
    tr.add_argument("--data-dir", help="where torchvision's CIFAR files are or are downloaded to")
    tr.add_argument("--json", action="store_true", help="print the result as one JSON object")
    tr.set_defaults(run=_train)

    run = commands.add_parser("run", help="search a space: Optuna proposes, Ray Tune schedules, MLflow records")
    run.add_argument("space", help="search space YAML file")
    run.add_argument("--trials", type=_positive, help="number of trials (default: the space's search.trials)")
    run.add_argument("--sampler", choices=["tpe", "random", "grid", "nsga2"], help="default: the space's, else tpe")
    run.add_argument("--scheduler", choices=["asha", "none"], help="early stopping (default asha)")
    run.add_argument("--max-concurrent", type=_positive, help="trials at once (default: as many as CPUs allow)")
    run.add_argument("--cpus-per-trial", type=float, default=1.0)
    run.add_argument("--gpus-per-trial", type=float, default=0.0, help="0.5 packs two trials per GPU; 0 without GPUs")
    run.add_argument("--ray-address", help="join a Ray cluster (default: $RAY_ADDRESS, else start Ray here)")
    run.add_argument("--experiment", help="MLflow experiment (default: the space's name)")
    run.add_argument("--tracking-uri", help="MLflow store (default sqlite:///mlflow.db)")
    run.add_argument("--storage", help="study state folder (default ./cnnsearch_runs/NAME)")
    run.add_argument("--name", help="study name (default: the space's name)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted study with the settings it began with")
    run.add_argument("--seed", type=int, help="seeds the sampler and every trial (default 0)")
    run.add_argument("--dataset", help="override the space's dataset (cifar10, cifar100, synthetic, imagefolder:PATH)")
    run.add_argument("--epochs", type=_positive, help="override the space's budget.epochs")
    run.add_argument("--subset", type=_positive, help="override the space's dataset.subset")
    run.add_argument("--cache-dir", help="where decoded data sets are cached")
    run.add_argument("--data-dir", help="where torchvision's CIFAR files are or are downloaded to")
    run.add_argument("--verbose", action="store_true", help="show Ray's own logs")
    run.set_defaults(run=_run)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except ValidationError as error:  # options checked by the configs they fill
        error = format_validation_error(error, "option")
        print(f"cnnsearch: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except ConfigError as error:
        print(f"cnnsearch: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
