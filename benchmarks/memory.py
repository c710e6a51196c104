"""Peak resident memory of one CPU trial against cnnsearch's estimate; and of 1, 2 and 4 concurrent trials, before and after.

Single trials: each case runs in its own process, as a trial does: the data set loaded
(CIFAR-10 JPEGs, decoded once and cached), a few training steps, a BN re-estimation and a
validation. Concurrent trials: `cnnsearch run` of a fixed ResNet-20-shaped space on the
whole 45,000-image training split, with this checkout and with the code of --before, while
every Ray worker's resident (RSS) and unique (USS) memory and the machine's used memory are
sampled from /proc. 1, 2 and 4 trials at once: 4 share the 2 cores at half a CPU each.
Usage: python benchmarks/memory.py PATH/TO/cifar10/train [--before COMMIT]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = [("resnet20", "fp32"), ("resnet20", "bf16"), ("mobilenet_v2_cifar", "bf16"),
         ("densenet_bc_100_k12", "fp32"), ("densenet_bc_100_k12", "bf16")]


def _rss() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def one_case(folder: str, preset: str, precision: str, batch_size: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(2)
    import ray  # noqa: F401  (a trial's worker has it loaded)

    from cnnsearch import load_arch
    from cnnsearch.config import Recipe
    from cnnsearch.data import load_dataset, split_dataset
    from cnnsearch.costs import training_memory
    from cnnsearch.space import Budget
    from cnnsearch.train import fit_to_data, train

    after_imports = _rss()
    data = load_dataset(f"imagefolder:{folder}")
    split = split_dataset(data.labels, subset=batch_size * steps, val_subset=1024)
    arch = fit_to_data(load_arch(preset), data)
    estimate = training_memory(arch, batch_size, precision)
    start = time.perf_counter()
    result = train(arch, data, split, recipe=Recipe(batch_size=batch_size, precision=precision), budget=Budget(epochs=1))
    return {
        "preset": preset, "precision": result.precision, "batch_size": batch_size, "steps": steps,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_imports_mib": after_imports,
        "estimate_mib": estimate.total / 2**20, "activations_mib": estimate.activations / 2**20,
        "parameters_mib": estimate.parameters / 2**20, "seconds": time.perf_counter() - start,
    }


SPACE = """
name: memory
family: residual
stem: {style: cifar, channels: 16}
stages:
  - {stride: 1, residual: {num_blocks: 3, width: 16}}
  - {stride: 2, residual: {num_blocks: 3, width: 32}}
  - {stride: 2, residual: {num_blocks: 3, width: 64}}
residual: {block: basic, shortcut: pad}
dataset: {name: "imagefolder:FOLDER"}
budget: {epochs: 1, max_images: 3840}
recipe: {batch_size: 128}
"""


def _meminfo_used() -> int:
    fields = dict(line.split(":") for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(fields["MemTotal"].split()[0]) - int(fields["MemAvailable"].split()[0])) * 1024


def _workers() -> dict[int, tuple[int, int]]:
    """RSS and USS of every process running a trial, in bytes."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().startswith(b"ray::"):
                continue
            rollup = dict(line.split(":", 1) for line in (entry / "smaps_rollup").read_text().splitlines()[1:])
        except OSError:
            continue
        kib = {key: int(value.split()[0]) * 1024 for key, value in rollup.items()}
        found[int(entry.name)] = (kib["Rss"], kib["Private_Clean"] + kib["Private_Dirty"])
    return found


def concurrent_case(folder: str, concurrent: int, code: str | None) -> dict:
    """`cnnsearch run` of max(2, concurrent) trials, `concurrent` at a time, sampling memory every 0.2 s."""
    with tempfile.TemporaryDirectory() as scratch:
        space = Path(scratch) / "memory.yaml"
        space.write_text(SPACE.replace("FOLDER", folder))
        env = dict(os.environ, **({"PYTHONPATH": code} if code else {}))
        baseline = _meminfo_used()
        process = subprocess.Popen(
            [sys.executable, "-m", "cnnsearch", "run", str(space), "--trials", str(max(2, concurrent)), "--scheduler", "none",
             "--max-concurrent", str(concurrent), "--cpus-per-trial", str(min(1.0, (os.cpu_count() or 1) / concurrent)),
             "--sampler", "random"],
            cwd=scratch, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        peak_rss = peak_uss = peak_used = 0
        while process.poll() is None:
            workers = _workers()
            peak_rss = max([peak_rss, *(rss for rss, _ in workers.values())])
            peak_uss = max([peak_uss, *(uss for _, uss in workers.values())])
            peak_used = max(peak_used, _meminfo_used() - baseline)
            time.sleep(0.2)
        if process.returncode:
            raise RuntimeError(process.stderr.read()[-2000:])
    return {"concurrent": concurrent, "code": "before" if code else "after", "worker_peak_rss_mib": peak_rss / 2**20,
            "worker_peak_uss_mib": peak_uss / 2**20, "machine_used_peak_mib": peak_used / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", help="CIFAR-10 training images in ImageFolder layout")
    parser.add_argument("--batch-size", type=int, default=128, help="the recipe's default")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--before", default="5aba0f5", help="commit whose code the concurrent trials are compared with")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        preset, precision = args.case.split(":")
        print(json.dumps(one_case(args.folder, preset, precision, args.batch_size, args.steps)))
        return
    from _report import ROOT, machine, write

    singles = []
    for preset, precision in CASES:
        command = [sys.executable, __file__, args.folder, "--case", f"{preset}:{precision}",
                   "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
        singles.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
        print(singles[-1], file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as before:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "cnnsearch"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", before], input=archive, check=True)
        concurrent = [concurrent_case(args.folder, count, code) for count in (1, 2, 4) for code in (before, None)]
    for row in concurrent:
        print(row, file=sys.stderr, flush=True)
    lines = [
        f"One trial in its own process, CIFAR-10 JPEGs, batch {args.batch_size}, {args.steps} steps + BN re-estimation + "
        f"validation of 1,024 images ({machine()}). The estimate is `cnnsearch.costs.training_memory`, from a meta-device "
        "forward; it includes a Ray worker's base, 150-250 MiB more than this bare process holds.",
        "",
        "| preset | precision | activations saved (MiB, fp32) | estimate (MiB) | measured peak RSS (MiB) | estimate / measured |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *(f"| {r['preset']} | {r['precision']} | {r['activations_mib']:.0f} | {r['estimate_mib']:.0f} | {r['peak_rss_mib']:.0f} | "
          f"{r['estimate_mib'] / r['peak_rss_mib']:.2f} |" for r in singles),
        "",
        f"`cnnsearch run` of ResNet-20-shaped trials (batch 128, 3,840 images each) on the whole 45,000-image training split, "
        f"1, 2 or 4 at a time (2, 2 and 4 trials; 4 at once share the {os.cpu_count()} cores); before = commit {args.before} (each worker deserialized its own copy of the data set and copied its "
        "training images), after = this checkout (one copy in Ray's object store, read in place). USS is a worker's own memory, "
        "RSS adds the shared pages it touched; the machine's used memory is MemTotal - MemAvailable above the level before the run.",
        "",
        "| trials at once | code | worker peak RSS (MiB) | worker peak USS (MiB) | machine's used memory, peak increase (MiB) |",
        "| ---: | --- | ---: | ---: | ---: |",
        *(f"| {r['concurrent']} | {r['code']} | {r['worker_peak_rss_mib']:.0f} | {r['worker_peak_uss_mib']:.0f} | "
          f"{r['machine_used_peak_mib']:.0f} |" for r in concurrent),
    ]
    write("memory", {"single": singles, "concurrent": concurrent}, "\n".join(lines),
          "python benchmarks/memory.py PATH/TO/cifar10/train")


if __name__ == "__main__":
    main()
