"""`cnnsearch run` on CIFAR-10: orchestration overhead and search efficiency.

overhead:   an 8-trial CPU search (Ray Tune, 2 trials at a time, 1 thread each, MLflow
            records) against the same 8 architectures trained back to back in one process
            with 2 threads; wall time of each, start-up and data loading included.
efficiency: spaces/densenet.yaml with a small budget, TPE + ASHA against random search
            without early stopping, same trial count, 3 seeds each. Cost is counted in
            trial-epochs (epochs actually trained, summed over trials, in completion order).

Needs the CIFAR-10 training images in ImageFolder layout (../shared/data/cifar10/train.tar.gz
extracted; pass its train/ folder).

Usage: python benchmarks/search.py overhead /tmp/cifar/train
       python benchmarks/search.py efficiency /tmp/cifar/train [--seeds 3] [--trials 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import torch
import yaml

from _report import ROOT, machine, write
from cnnsearch import load_arch, load_space
from cnnsearch.data import load_dataset, split_dataset
from cnnsearch.search import RunOptions, run_study, with_overrides
from cnnsearch.train import fit_to_data, train

OVERHEAD_SPACE = """
name: overhead
family: residual
stem: {style: cifar, channels: 16}
stages:
  - {stride: 1, residual: {num_blocks: [1, 2, 3], width: [16, 32]}}
  - {stride: 2, residual: {num_blocks: [1, 2, 3], width: [32, 64]}}
  - {stride: 2, residual: {num_blocks: [1, 2, 3], width: [64, 128]}}
dataset: {name: cifar10, val_fraction: 0.04}
budget: {epochs: 2}
"""


def _study(space, folder: str, work: Path, **options) -> tuple[float, object]:
    start = time.perf_counter()
    result = run_study(
        space,
        RunOptions(name=space.name, storage=work / "runs" / space.name, tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                   dataset=f"imagefolder:{folder}", **options),
    )
    return time.perf_counter() - start, result


def overhead(folder: str, subset: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "overhead.yaml").write_text(OVERHEAD_SPACE)
        space = load_space(work / "overhead.yaml")
        search_s, result = _study(space, folder, work, trials=8, sampler="random", scheduler="none", subset=subset,
                                  max_concurrent=2, cpus_per_trial=1.0, seed=0)
        client = mlflow.MlflowClient(result.tracking_uri)
        archs = [load_arch(client.download_artifacts(t["run_id"], "arch.yaml", tempfile.mkdtemp(dir=tmp))) for t in result.trials]
        import ray

        ray.shutdown()
        torch.set_num_threads(2)
        space = with_overrides(space, dataset=f"imagefolder:{folder}", subset=subset)
        start = time.perf_counter()
        data = load_dataset(space.dataset.name)
        split = split_dataset(data.labels, val_fraction=space.dataset.val_fraction, seed=space.dataset.split_seed, subset=subset)
        accs = [train(fit_to_data(a, data), data, split, recipe=space.recipe, budget=space.budget, seed=0).val_acc for a in archs]
        serial_s = time.perf_counter() - start
    ratio = search_s / serial_s
    report = {"machine": machine(), "trials": 8, "subset": subset, "epochs": 2, "search_s": search_s, "serial_s": serial_s,
              "ratio": ratio, "search_val_acc": sorted(t["val_acc"] for t in result.trials), "serial_val_acc": sorted(accs)}
    table = (
        f"8 ResNet trials of 2 epochs on {subset:,} CIFAR-10 images, CPU ({machine()}):\n\n"
        "| how | wall time (s) |\n| --- | ---: |\n"
        f"| cnnsearch run: Ray Tune (2 trials at a time, 1 thread each) + Optuna + MLflow | {search_s:.1f} |\n"
        f"| the same 8 architectures trained back to back in one process (2 threads) | {serial_s:.1f} |\n\n"
        f"Search / back to back: {ratio:.2f} ({(ratio - 1):+.0%}; target at most +15%)."
    )
    write("search_overhead", report, table, "python benchmarks/search.py overhead PATH/TO/cifar10/train")


def _curve(trials: list[dict]) -> list[tuple[int, float]]:
    """(cumulative trial-epochs, best val_acc so far) after each trial, in completion order."""
    points, spent, best = [], 0, 0.0
    for trial in sorted(trials, key=lambda t: t["end"]):
        spent += trial["epochs"]
        best = max(best, trial["val_acc"])
        points.append((spent, best))
    return points


def _trials(tracking_uri: str, parent_run_id: str, experiment_id: str) -> list[dict]:
    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    rows = []
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "val_acc")
        rows.append({"end": run.info.end_time, "epochs": len(history), "val_acc": max((m.value for m in history), default=0.0),
                     "status": run.data.tags["cnnsearch.status"]})
    return rows


def efficiency(folder: str, seeds: int, trials: int, subset: int, epochs: int, keep: str | None) -> None:
    space = load_space(ROOT / "spaces" / "densenet.yaml")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(keep or tmp)
        for method, sampler, scheduler in (("tpe+asha", "tpe", "asha"), ("random", "random", "none")):
            for seed in range(seeds):
                named = dataclasses.replace(space, name=f"densenet-{method}-{seed}")
                seconds, result = _study(named, folder, work, trials=trials, sampler=sampler, scheduler=scheduler,
                                         subset=subset, epochs=epochs, seed=seed, max_concurrent=2,
                                         # 1,000 held out, not 5,000: validating DenseNets on a CPU dominates a short trial.
                                         val_fraction=0.02)
                rows = _trials(result.tracking_uri, result.parent_run_id, result.experiment_id)
                runs[(method, seed)] = {"seconds": seconds, "trials": rows, "curve": _curve(rows)}
                print(f"{method} seed {seed}: {seconds:.0f} s, best {runs[(method, seed)]['curve'][-1]}", file=sys.stderr, flush=True)
    lines = [
        f"spaces/densenet.yaml, {trials} trials of at most {epochs} epochs on {subset:,} CIFAR-10 images "
        f"(1,000 held out), 2 trials at a time, CPU ({machine()}):\n",
        "| seed | random: best val acc | random: trial-epochs | TPE+ASHA: best val acc | TPE+ASHA: trial-epochs "
        "| TPE+ASHA: trial-epochs to reach random's best | fraction of random's |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    fractions = []
    for seed in range(seeds):
        random_curve, tpe_curve = runs[("random", seed)]["curve"], runs[("tpe+asha", seed)]["curve"]
        target, random_cost = random_curve[-1][1], random_curve[-1][0]
        reached = next((spent for spent, best in tpe_curve if best >= target), None)
        fraction = None if reached is None else reached / random_cost
        fractions.append(fraction)
        lines.append(
            f"| {seed} | {target:.2%} | {random_cost} | {tpe_curve[-1][1]:.2%} | {tpe_curve[-1][0]} | "
            f"{'not reached' if reached is None else reached} | {'-' if fraction is None else f'{fraction:.2f}'} |"
        )
    met = [f for f in fractions if f is not None and f <= 0.5]
    lines.append(f"\nTPE+ASHA reached random search's best within half its trial-epochs in {len(met)} of {seeds} seeds.")
    for method in ("random", "tpe+asha"):
        lines.append(f"\n{method} curves, (trial-epochs, best val acc so far) after each trial:\n")
        for seed in range(seeds):
            lines.append(f"- seed {seed}: " + ", ".join(f"({spent}, {best:.1%})" for spent, best in runs[(method, seed)]["curve"]))
    mean_s = {m: statistics.mean(runs[(m, s)]["seconds"] for s in range(seeds)) for m in ("random", "tpe+asha")}
    lines.append(f"\nMean wall time per study: random {mean_s['random']:.0f} s, TPE+ASHA {mean_s['tpe+asha']:.0f} s.")
    report = {"machine": machine(), "trials": trials, "subset": subset, "epochs": epochs,
              "runs": {f"{m}/{s}": v for (m, s), v in runs.items()}, "fractions": fractions}
    write("search_efficiency", report, "\n".join(lines),
          f"python benchmarks/search.py efficiency PATH/TO/cifar10/train --seeds {seeds} --trials {trials} --subset {subset} --epochs {epochs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["overhead", "efficiency"])
    parser.add_argument("folder", help="CIFAR-10 training images in ImageFolder layout")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--subset", type=int, default=None, help="training images per trial")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--keep", help="keep the studies' MLflow store and state in this folder")
    args = parser.parse_args()
    if args.what == "overhead":
        overhead(args.folder, args.subset or 5000)
    else:
        efficiency(args.folder, args.seeds, args.trials, args.subset or 2000, args.epochs, args.keep)


if __name__ == "__main__":
    main()
