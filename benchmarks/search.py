"""`cnnsearch run` on CIFAR-10: orchestration overhead and search efficiency.

overhead:   an 8-trial CPU search (Ray Tune, 2 trials at a time, 1 thread each, MLflow
            records) against the same 8 architectures trained back to back in one process
            with 2 threads; wall time of each, start-up and data loading included.
efficiency: a small ResNet space (EFFICIENCY_SPACE) with a budget at which its best trials
            pass 50% validation accuracy, TPE + ASHA against random search without early
            stopping, same trial count, 3 seeds each. Cost is counted in trial-epochs
            (epochs actually trained, summed over trials, in completion order).

pareto:     the same space with two objectives (val_acc max, macs min): the hypervolume of
            the front found by NSGA-II, by multi-objective TPE and by random search, each with
            no early stopping and the same trials and epochs, 3 seeds each, over trial-epochs.

bookkeeping: at least 300 trivial trials (a 4-channel network, 48 synthetic images, one
            epoch, random sampler, no early stopping), 2 at a time: the driver's own time per
            trial (cnnsearch's Tune callbacks and its Optuna proposer, Optuna's sampling
            included) and the wall time per trial, for the first and the last hundred.

tabular:    `cnnsearch run spaces/nasbench201.yaml --tabular nasbench201 --trials 200 --sampler random`
            (NAS-Bench-201's accuracies looked up, not trained) on a new sqlite store: its wall time
            as a command, then the same study in this process, timed by part: Optuna's own time
            (ask, tell and each suggest), counting each network's costs, MLflow's writes of each
            trial, opening the study (its table, checks and store) and its end (summary, pictures).

nasbench201: search quality on NAS-Bench-201's table: random, tpe, evolution, gp and nsga2,
            each seed a 200-trial study told the table's accuracies, with the picks, regret,
            tests against random and multi-objective hypervolume (see benchmarks/nasbench201.py).

Needs the CIFAR-10 training images as JPEG folders in ImageFolder layout (one folder per
class; pass the folder that holds them), but for bookkeeping, tabular and nasbench201.

Usage: python benchmarks/search.py bookkeeping [--trials 300]
       python benchmarks/search.py tabular [--trials 200]
       python benchmarks/search.py nasbench201 --seeds 20 [--gp-seeds 20] [--mo-seeds 10] [--gp-mo-seeds 3]
       python benchmarks/search.py overhead PATH/TO/cifar10/train
       python benchmarks/search.py efficiency PATH/TO/cifar10/train [--seeds 3] [--trials 8]
       python benchmarks/search.py pareto PATH/TO/cifar10/train [--seeds 3] [--trials 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import torch

from _report import machine, write
from cnnsearch import load_arch, load_space
from cnnsearch.data import load_dataset, split_dataset
from cnnsearch.study import RunOptions, run_study, with_overrides
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


# Shallow and narrow enough that 2 trials at a time, 1 thread each, see 40,000 images in minutes.
EFFICIENCY_SPACE = """
name: efficiency
family: residual
stem: {style: cifar, channels: [16, 32]}
stages:
  - {stride: 1, residual: {num_blocks: [1, 2, 3], width: [16, 32]}}
  - {stride: 2, residual: {num_blocks: [1, 2, 3], width: [32, 64]}}
  - {stride: 2, residual: {num_blocks: [1, 2, 3], width: [64, 128]}}
dataset: {name: cifar10}
budget: {epochs: 4}
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


BOOKKEEPING_SPACE = """
name: bookkeeping
family: residual
stem: {style: cifar, channels: [4, 8]}
stages:
  - {stride: 1, residual: {num_blocks: 1, width: [4, 8]}}
dataset: {name: synthetic, subset: 48, val_fraction: 0.25}
budget: {epochs: 1}
recipe: {batch_size: 16, precision: fp32, bn_recalibration_images: 0}
"""


def bookkeeping(trials: int) -> None:
    from cnnsearch.study import launch, record

    spent = {"driver": 0.0}
    ends: list[tuple[float, float]] = []  # (wall clock, driver seconds so far) at each trial's end

    def timed(function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent["driver"] += time.perf_counter() - start
        return wrapper

    for cls, names in ((launch._Events, ("on_trial_start", "on_trial_result", "on_checkpoint", "on_trial_complete")),
                       (launch._Proposer, ("suggest", "on_trial_result", "on_trial_complete"))):
        for name in names:
            setattr(cls, name, timed(getattr(cls, name)))
    finish = record.Tracker._finish

    def finished(self, *args, **kwargs):
        finish(self, *args, **kwargs)
        ends.append((time.perf_counter(), spent["driver"]))

    record.Tracker._finish = finished
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "bookkeeping.yaml").write_text(BOOKKEEPING_SPACE)
        space = load_space(work / "bookkeeping.yaml")
        start = time.perf_counter()
        run_study(space, RunOptions(name="bookkeeping", storage=work / "runs", tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                                    trials=trials, sampler="random", scheduler="none", max_concurrent=2, seed=0))
        total = time.perf_counter() - start
    steps = [(ends[i][0] - (ends[i - 1][0] if i else start), ends[i][1] - (ends[i - 1][1] if i else 0.0)) for i in range(len(ends))]
    first, last = steps[:100], steps[-100:]
    mean = lambda rows, k: statistics.mean(row[k] for row in rows)  # noqa: E731
    report = {"machine": machine(), "trials": len(ends), "total_s": total,
              "driver_ms": {"first_100": 1000 * mean(first, 1), "last_100": 1000 * mean(last, 1)},
              "wall_ms": {"first_100": 1000 * mean(first, 0), "last_100": 1000 * mean(last, 0)}}
    ratio = mean(last, 1) / mean(first, 1)
    table = (
        f"{len(ends)} trivial trials (a 4- or 8-channel network, 48 synthetic images, 1 epoch; random sampler, no early "
        f"stopping, 2 at a time) on the sqlite store, CPU ({machine()}); {total:.0f} s in all.\n\n"
        "| per trial | first 100 (ms) | last 100 (ms) | last / first |\n| --- | ---: | ---: | ---: |\n"
        f"| driver: cnnsearch's Tune callbacks and Optuna proposer | {1000 * mean(first, 1):.1f} | {1000 * mean(last, 1):.1f} | {ratio:.2f} |\n"
        f"| wall time between trial ends | {1000 * mean(first, 0):.0f} | {1000 * mean(last, 0):.0f} | {mean(last, 0) / mean(first, 0):.2f} |\n\n"
        f"The driver's last hundred trials cost {ratio:.2f}x its first hundred (target: at most 1.2x)."
    )
    write("search_bookkeeping", report, table, f"python benchmarks/search.py bookkeeping --trials {trials}")


def _timed(owner: object, name: str, spent: dict[str, float], part: str) -> None:
    """Count the time of every call of ``owner.name`` into ``spent[part]``."""
    function = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[part] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def tabular(trials: int) -> None:
    import resource
    import subprocess

    command = ["cnnsearch", "run", "spaces/nasbench201.yaml", "--tabular", "nasbench201", "--trials", str(trials), "--sampler", "random"]
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnnsearch", *command[1:], "--storage", f"{tmp}/runs", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"],
                       cwd=root, check=True, capture_output=True)
        wall = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = children.ru_utime + children.ru_stime  # what the command's wall time would be with a core of its own
    import optuna

    from cnnsearch.cli import main as cli
    from cnnsearch.cli import studies
    from cnnsearch.study import lookup, reject, run
    from cnnsearch.tracking import Recorder

    spent = dict.fromkeys(("optuna", "costs", "lookup", "mlflow", "opening", "end"), 0.0)
    for owner, names, part in ((optuna.Study, ("ask", "tell"), "optuna"),
                               (optuna.Trial, ("suggest_categorical", "suggest_int", "suggest_float"), "optuna"),
                               (reject, ("_tabular_cost",), "costs"), (lookup, ("_result",), "lookup"),
                               (Recorder, ("record_trial",), "mlflow"), (run, ("resolve", "open_study", "recover"), "opening"),
                               (run, ("finish",), "end"), (studies, ("_pictures",), "end")):
        for name in names:
            _timed(owner, name, spent, part)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cli([*command[1:], "--storage", f"{tmp}/runs", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"])
        total = time.perf_counter() - start
    ms = {part: 1000 * seconds / trials for part, seconds in spent.items()}
    report = {"machine": machine(), "load_average": os.getloadavg(), "trials": trials, "command_s": wall, "command_cpu_s": cpu, "in_process_s": total,
              "seconds": spent, "ms_per_trial": ms}
    rows = [("Optuna: ask, tell and each suggest (the random sampler's own time)", "optuna"),
            ("counting each network's params, MACs and FLOPs, its latency from the table", "costs"),
            ("looking each trial's accuracy up", "lookup"), ("MLflow: writing each trial's run", "mlflow")]
    table = (
        f"`{' '.join(command)}`, as a command on a new sqlite store, CPU ({machine()}; load average "
        f"{os.getloadavg()[0]:.1f} after it): **{wall:.1f} s** in all, imports and the store's creation included (target: at most 60 s); "
        f"it used {cpu:.1f} s of CPU time (user and system), and waited the rest: for the cores other work held, and for the disk.\n\n"
        f"The same study in one process, {total:.1f} s, by part:\n\n"
        "| part | seconds | ms per trial |\n| --- | ---: | ---: |\n"
        + "".join(f"| {label} | {spent[part]:.1f} | {ms[part]:.1f} |\n" for label, part in rows)
        + f"| opening the study: its table, the checks of its space, the MLflow store | {spent['opening']:.1f} | |\n"
        f"| its end: the summary, the pictures | {spent['end']:.1f} | |\n"
        f"| the rest: imports, progress lines, the Optuna journal's opening | {total - sum(spent.values()):.1f} | |\n"
    )
    write("search_tabular", report, table, f"python benchmarks/search.py tabular --trials {trials}")


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
                     "status": run.data.tags["cnnsearch.status"], "macs": run.data.metrics.get("macs"),
                     "final_val_acc": run.data.metrics.get("val_acc")})  # what Optuna was told
    return rows


def efficiency(folder: str, seeds: int, trials: int, subset: int, epochs: int, keep: str | None) -> None:
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "efficiency.yaml").write_text(EFFICIENCY_SPACE)
        space = load_space(work / "efficiency.yaml")
        for method, sampler, scheduler in (("tpe+asha", "tpe", "asha"), ("random", "random", "none")):
            for seed in range(seeds):
                named = dataclasses.replace(space, name=f"efficiency-{method}-{seed}")
                seconds, result = _study(named, folder, work, trials=trials, sampler=sampler, scheduler=scheduler,
                                         subset=subset, epochs=epochs, seed=seed, max_concurrent=2,
                                         # 1,000 held out, not 5,000: validation would dominate a short trial on a CPU.
                                         val_fraction=0.02)
                rows = _trials(result.tracking_uri, result.parent_run_id, result.experiment_id)
                runs[(method, seed)] = {"seconds": seconds, "trials": rows, "curve": _curve(rows)}
                print(f"{method} seed {seed}: {seconds:.0f} s, best {runs[(method, seed)]['curve'][-1]}", file=sys.stderr, flush=True)
    lines = [
        f"EFFICIENCY_SPACE (benchmarks/search.py: ResNets of 1-3 blocks per stage), {trials} trials of at most {epochs} epochs on {subset:,} CIFAR-10 images "
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


PARETO_OBJECTIVES = "objectives: [{metric: val_acc, goal: max}, {metric: macs, goal: min}]\n"
# Chance, and the MACs of the space's largest network (stem 32, 3 blocks per stage at the widest): every point dominates it.
PARETO_REFERENCE = {"val_acc": 0.1, "macs": None}


def _hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by (val_acc, macs) points, val_acc up and macs down, within the reference point (val_acc, macs)."""
    area, best = 0.0, reference[0]
    for accuracy, macs in sorted(points, key=lambda point: point[1]):  # cheapest first: each adds what it is above the best cheaper one
        if accuracy > best and macs < reference[1]:
            area += (accuracy - best) * (reference[1] - macs)
            best = accuracy
    return area


def pareto_benchmark(folder: str, seeds: int, trials: int, subset: int, epochs: int, keep: str | None) -> None:
    from optuna.trial import FixedTrial

    from cnnsearch.costs import profile

    runs = {}
    methods = ("nsga2", "tpe", "random")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "pareto.yaml").write_text(EFFICIENCY_SPACE.replace("name: efficiency", "name: pareto") + PARETO_OBJECTIVES)
        space = load_space(work / "pareto.yaml")
        largest = {name: max(knob.choices) if hasattr(knob, "choices") else knob.value for name, knob in space.knobs().items()}
        reference = (PARETO_REFERENCE["val_acc"], float(profile(space.sample(FixedTrial(largest))).macs))
        for method in methods:
            for seed in range(seeds):
                named = dataclasses.replace(space, name=f"pareto-{method}-{seed}")
                seconds, result = _study(named, folder, work, trials=trials, sampler=method, scheduler="none",
                                         subset=subset, epochs=epochs, seed=seed, max_concurrent=2, val_fraction=0.02)
                rows = _trials(result.tracking_uri, result.parent_run_id, result.experiment_id)
                curve, spent, points = [], 0, []
                for row in sorted(rows, key=lambda r: r["end"]):
                    spent += row["epochs"]
                    if row["status"] == "completed":
                        points.append((row["final_val_acc"], row["macs"]))
                    curve.append((spent, _hypervolume(points, reference)))
                runs[(method, seed)] = {"seconds": seconds, "trials": rows, "curve": curve,
                                        "best_val_acc": max((p[0] for p in points), default=None)}
                print(f"{method} seed {seed}: {seconds:.0f} s, hypervolume {curve[-1][1] / 1e6:.2f}, best {runs[(method, seed)]['best_val_acc']}",
                      file=sys.stderr, flush=True)
    scale = 1e6  # hypervolume in accuracy x million MACs
    lines = [
        f"EFFICIENCY_SPACE with objectives val_acc max and macs min, {trials} trials of {epochs} epochs on {subset:,} CIFAR-10 images "
        f"(2% of the rest validates), no early stopping, 2 trials at a time, CPU ({machine()}). Hypervolume of the front of completed trials, "
        f"in accuracy x million MACs, against the fixed reference point val_acc {reference[0]:.0%} (chance) and "
        f"{reference[1] / 1e6:.1f}M MACs (the space's largest network); NSGA-II's generations hold {min(50, max(4, trials // 4))} trials.\n",
        "| seed | " + " | ".join(f"{m}: hypervolume | {m}: best val acc" for m in methods) + " |",
        "| ---: |" + " ---: | ---: |" * len(methods),
    ]
    for seed in range(seeds):
        cells = []
        for method in methods:
            run = runs[(method, seed)]
            cells += [f"{run['curve'][-1][1] / scale:.2f}", "-" if run["best_val_acc"] is None else f"{run['best_val_acc']:.2%}"]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    means = {m: statistics.mean(runs[(m, s)]["curve"][-1][1] for s in range(seeds)) / scale for m in methods}
    lines.append("| mean | " + " | ".join(f"{means[m]:.2f} | " for m in methods) + " |")
    for method in methods:
        lines.append(f"\n{method} curves, (trial-epochs, hypervolume) after each trial:\n")
        for seed in range(seeds):
            lines.append(f"- seed {seed}: " + ", ".join(f"({spent}, {hv / scale:.2f})" for spent, hv in runs[(method, seed)]["curve"]))
    mean_s = {m: statistics.mean(runs[(m, s)]["seconds"] for s in range(seeds)) for m in methods}
    lines.append("\nMean wall time per study: " + ", ".join(f"{m} {mean_s[m]:.0f} s" for m in methods) + ".")
    report = {"machine": machine(), "trials": trials, "subset": subset, "epochs": epochs, "reference": reference,
              "runs": {f"{m}/{s}": v for (m, s), v in runs.items()}}
    write("search_pareto", report, "\n".join(lines),
          f"python benchmarks/search.py pareto PATH/TO/cifar10/train --seeds {seeds} --trials {trials} --subset {subset} --epochs {epochs}")


NB201_SAMPLERS = ["random", "tpe", "evolution", "gp", "nsga2"]


def nasbench201_benchmark(seeds: int, gp_seeds: int, mo_seeds: int, gp_mo_seeds: int, trials: int) -> None:
    """Search quality on the NAS-Bench-201 table (see benchmarks/nasbench201.py); fewer seeds for GP, whose own time is seconds."""
    import nasbench201 as nb

    start = time.perf_counter()
    jobs = [(name, seed, trials, None) for name in NB201_SAMPLERS for seed in range(gp_seeds if name == "gp" else seeds)]
    jobs += [(name, seed, trials, cost) for cost in nb.COSTS for name in NB201_SAMPLERS
             for seed in range(gp_mo_seeds if name == "gp" else mo_seeds)]
    studies = nb.run_studies(jobs)
    single = nb.quality([s for s in studies if s["cost"] is None], NB201_SAMPLERS)
    multi = {cost: nb.fractions(studies, NB201_SAMPLERS, cost) for cost in nb.COSTS}
    png = Path(__file__).parent / "results" / "nasbench201_regret.png"
    nb.plot(studies, NB201_SAMPLERS, png)
    optimum = single["optimum"]
    lines = [f"Each sampler as `cnnsearch run spaces/nasbench201.yaml --tabular nasbench201 --trials {trials}` configures it, "
             f"told one seed's 200-epoch accuracy per trial; the pick is the study's best by that accuracy, reported as the "
             f"table's mean accuracy of the picked cell (the optimum is {optimum:.2f}%). Median [IQR] over seeds; "
             f"p: one-sided Mann-Whitney against random at 100 trials. CPU ({machine()}), one thread per study. "
             f"Regret curves: `benchmarks/results/nasbench201_regret.png`.", "",
             "| sampler | seeds | " + " | ".join(f"after {at}" for at in nb.CHECKPOINTS) + " | regret at 100 | p vs random | own ms/trial |",
             "| --- | ---: | " + " | ".join("---" for _ in nb.CHECKPOINTS) + " | ---: | ---: | ---: |"]
    for name, row in single["samplers"].items():
        cellsat = [f"{row[at]['median']:.2f}% [{row[at]['q1']:.2f}, {row[at]['q3']:.2f}]" if at in row else "-" for at in nb.CHECKPOINTS]
        p = f"{row['p_vs_random_100']:.1g}" if "p_vs_random_100" in row else "-"
        lines.append(f"| {name} | {row['seeds']} | " + " | ".join(cellsat) + f" | {row[100]['regret']:.2f} | {p} | {row['sampler_ms_per_trial']:.1f} |")
    lines += ["", f"Multi-objective, {trials} trials: hypervolume of the cells each study evaluated (by mean accuracy) as a "
              "fraction of the table's true front, from the true front's nadir. Median [IQR] over seeds.", "",
              "| sampler | seeds | (val_acc, params) | (val_acc, latency_ms) | own ms/trial |", "| --- | ---: | --- | --- | ---: |"]
    for name in NB201_SAMPLERS:
        rows = [multi[cost]["samplers"].get(name) for cost in nb.COSTS]
        if all(rows):
            fracs = " | ".join(f"{r['median']:.3f} [{r['q1']:.3f}, {r['q3']:.3f}]" for r in rows)
            lines.append(f"| {name} | {rows[0]['seeds']} | {fracs} | {statistics.mean(r['sampler_ms_per_trial'] for r in rows):.1f} |")
    lines += ["", f"Wall time of the whole benchmark: {(time.perf_counter() - start) / 60:.1f} min."]
    for study in studies:  # the report keeps the picks, not every trial
        study.pop("cells"), study.pop("told")
    report = {"machine": machine(), "trials": trials, "single": single, "multi": multi, "studies": studies}
    write("search_nasbench201", report, "\n".join(lines),
          f"python benchmarks/search.py nasbench201 --seeds {seeds} --gp-seeds {gp_seeds} --mo-seeds {mo_seeds} "
          f"--gp-mo-seeds {gp_mo_seeds} --trials {trials}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["overhead", "efficiency", "pareto", "bookkeeping", "tabular", "nasbench201"])
    parser.add_argument("folder", nargs="?", help="CIFAR-10 training images in ImageFolder layout (not for bookkeeping, tabular or nasbench201)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=None, help="default: 8, or 300 for bookkeeping, 200 for tabular")
    parser.add_argument("--subset", type=int, default=None, help="training images per trial")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--gp-seeds", type=int, default=20, help="nasbench201: seeds for GP, whose own time is seconds a trial")
    parser.add_argument("--mo-seeds", type=int, default=10, help="nasbench201: seeds of each multi-objective study")
    parser.add_argument("--gp-mo-seeds", type=int, default=3, help="nasbench201: seeds of GP's multi-objective studies")
    parser.add_argument("--keep", help="keep the studies' MLflow store and state in this folder")
    args = parser.parse_args()
    if args.what == "nasbench201":
        nasbench201_benchmark(args.seeds, args.gp_seeds, args.mo_seeds, args.gp_mo_seeds, args.trials or 200)
    elif args.what == "bookkeeping":
        bookkeeping(args.trials or 300)
    elif args.what == "tabular":
        tabular(args.trials or 200)
    elif args.what == "overhead":
        overhead(args.folder, args.subset or 5000)
    elif args.what == "pareto":
        pareto_benchmark(args.folder, args.seeds, args.trials or 8, args.subset or 10000, args.epochs, args.keep)
    else:
        efficiency(args.folder, args.seeds, args.trials or 8, args.subset or 10000, args.epochs, args.keep)


if __name__ == "__main__":
    main()
