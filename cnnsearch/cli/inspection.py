"""The commands that look without training: ``show`` validates a search space and summarizes it
(its knobs, size, limits, the cost of random samples, its data, budget, recipe and search), and
``profile`` counts one architecture's params, MACs and FLOPs.
"""

from __future__ import annotations

import argparse
import json

from ..config import LONG_STEPS, SHORT_STEPS, ConfigError, list_presets, load_arch
from ..costs import cheapest, over_limits, profile, training_memory
from ..space import Choice, Fixed, Space, load_space
from .flags import positive
from .render import cost_line, human


def add_show(commands: argparse._SubParsersAction) -> None:
    """The ``show`` command and its flags."""
    show = commands.add_parser("show", help="validate a search space and summarize it")
    show.add_argument("space", help="search space YAML file")
    show.add_argument("--samples", type=positive, default=8, help="random architectures to profile (default 8)")
    show.add_argument("--seed", type=int, default=0)
    show.set_defaults(run=_show)


def add_profile(commands: argparse._SubParsersAction) -> None:
    """The ``profile`` command and its flags."""
    prof = commands.add_parser("profile", help="params, MACs and FLOPs of an architecture")
    prof.add_argument("arch", help=f"preset ({', '.join(list_presets())}) or architecture YAML file")
    prof.add_argument("--input-size", type=positive, help="image height and width (default: the architecture's)")
    prof.add_argument("--num-classes", type=positive, help="classifier outputs (default: the architecture's)")
    prof.add_argument("--json", action="store_true", help="print one JSON object with params, macs, flops")
    prof.set_defaults(run=_profile)


def _show(args: argparse.Namespace) -> None:
    space = load_space(args.space)
    _describe_knobs(space)
    _profile_samples(space, args.samples, args.seed)
    _describe_settings(space)


def _describe_knobs(space: Space) -> None:
    """The space's name, its knobs, how many points it has, its limits and its cheapest point."""
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
    shown = [f"{key} {value:,}" for key, value in space.limits.model_dump().items() if value is not None]
    print(f"limits: {', '.join(shown) if shown else 'none'}")
    if found is None:
        print("cheapest: not determined (too many categorical combinations to enumerate)")
    else:
        _, cost = found
        print(f"cheapest within limits: {human(cost.params)} params, {human(cost.macs)} MACs")


def _profile_samples(space: Space, samples: int, seed: int) -> None:
    """The cost and CPU training memory of ``samples`` random points, each against the limits, then their range."""
    import torch

    from ..train import resolve_precision

    limits = space.limits
    costs, memories = [], []
    precision = resolve_precision(space.recipe.precision, torch.device("cpu"))
    batch_knob = space.recipe_knobs.get("batch_size")
    batch = max(batch_knob.choices) if isinstance(batch_knob, Choice) else batch_knob.high if batch_knob else space.recipe.batch_size
    print(f"\n{samples} random samples (seed {seed}); memory: a CPU trial's expected peak at batch "
          f"{batch}{' (the largest searched)' if batch_knob else ''}, {precision}:")
    for index in range(samples):
        try:
            arch = space.sample_random(seed + index)
            cost = profile(arch)
            memory = training_memory(arch, batch, precision).total
        except ConfigError as error:
            print(f"  #{index}: rejected: {error}")
            continue
        costs.append(cost)
        memories.append(memory)
        over = over_limits(limits, cost)
        print(f"  #{index}: {cost_line(cost)}, memory {memories[-1] / 2**30:.1f} GiB  {'over limits: ' + over if over else 'ok'}")
    if costs:
        params = sorted(cost.params for cost in costs)
        macs = sorted(cost.macs for cost in costs)
        within = sum(over_limits(limits, cost) is None for cost in costs)
        print(
            f"range: params {human(params[0])} to {human(params[-1])}, "
            f"MACs {human(macs[0])} to {human(macs[-1])}, memory {min(memories) / 2**30:.1f} to {max(memories) / 2**30:.1f} GiB; "
            f"{within} of {samples} within limits"
        )


def _describe_settings(space: Space) -> None:
    """The space's data set and split, budget, recipe, search and objectives, on one line."""
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
    from ..data import held_out_test_fraction

    fraction = held_out_test_fraction(dataset, test_fraction)
    return f"{fraction:.0%} held out for testing" if fraction else "its own test images for testing"


def _recipe_line(space: Space) -> str:
    """The recipe's batch, lr and precision, and each searched key as its knob."""
    r, searched = space.recipe, space.recipe_knobs
    lr = r.lr or f"{r.scaled_lr(SHORT_STEPS):g} to {r.scaled_lr(LONG_STEPS):g} by steps"
    shown = [f"batch {searched.get('batch_size', r.batch_size)}", f"lr {searched.get('lr', lr)}"]
    shown += [f"{key} {knob}" for key, knob in searched.items() if key not in ("batch_size", "lr")]
    return ", ".join([*shown, f"{r.precision} precision"])


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
    print(f"  params {cost.params:,} ({human(cost.params)})")
    print(f"  MACs   {cost.macs:,} ({human(cost.macs)})")
    print(f"  FLOPs  {cost.flops:,} (2 x MACs of convolutions and linear layers)")
