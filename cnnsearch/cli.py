"""The ``cnnsearch`` command line. Nothing imports this module."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .config import ConfigError, list_presets, load_arch
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
    d, b, s = space.dataset, space.budget, space.search
    print(
        f"\ndataset: {d.name}, {d.val_fraction:.0%} validation" + (f", subset {d.subset:,}" if d.subset else "")
        + f"; budget: {b.epochs} epochs, batch {b.batch_size}; search: {s.sampler}, {s.trials} trials"
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
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except ConfigError as error:
        print(f"cnnsearch: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
