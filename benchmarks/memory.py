"""Peak resident memory of one CPU trial, measured against cnnsearch's estimate; and of 1 and 2 concurrent trials.

Each case runs in its own process, as a trial does: the data set loaded (CIFAR-10 JPEGs,
decoded once and cached), then a few training steps, a BN re-estimation and a validation.
Usage: python benchmarks/memory.py PATH/TO/cifar10/train
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

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
    from cnnsearch.profile import training_memory
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", help="CIFAR-10 training images in ImageFolder layout")
    parser.add_argument("--batch-size", type=int, default=128, help="the recipe's default")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        preset, precision = args.case.split(":")
        print(json.dumps(one_case(args.folder, preset, precision, args.batch_size, args.steps)))
        return
    rows = []
    for preset, precision in CASES:
        command = [sys.executable, __file__, args.folder, "--case", f"{preset}:{precision}",
                   "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
        rows.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
        print(rows[-1], file=sys.stderr, flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
