"""Batch size and zero-initialised residual branches at a search's budget: 5,000 CIFAR-10 JPEGs, 3 epochs.

resnet20 (basic blocks) and a 24-block bottleneck ResNet (9, 6, 9 blocks of widths 16, 32,
64: the deepest of spaces/resnet.yaml's first search, which sat at 13%), each under the
recipes named on the command line (default: all), seed 0, on this CPU's default precision.
Usage: python benchmarks/short_budget.py PATH/TO/cifar10/train [arch:recipe ...]
"""

from __future__ import annotations

import argparse
import time

import torch

from cnnsearch import Arch, load_arch
from cnnsearch.config import Recipe
from cnnsearch.data import load_dataset, split_dataset
from cnnsearch.space import Budget
from cnnsearch.train import fit_to_data, train

DEEP_BOTTLENECK = {"stem": {"channels": 16}, "stages": [
    {"family": "residual", "block": "bottleneck", "num_blocks": 9, "width": 16},
    {"family": "residual", "block": "bottleneck", "num_blocks": 6, "width": 32, "stride": 2},
    {"family": "residual", "block": "bottleneck", "num_blocks": 9, "width": 64, "stride": 2}]}
SILENT_RESIDUAL = ("residual", "inverted_residual")
RECIPES = {
    "batch128": Recipe(batch_size=128, zero_init_residual=("inverted_residual",)),
    "batch64": Recipe(batch_size=64, zero_init_residual=("inverted_residual",)),
    "batch32": Recipe(batch_size=32, zero_init_residual=("inverted_residual",)),
    "batch128_zero_init": Recipe(batch_size=128, zero_init_residual=SILENT_RESIDUAL),
    "batch64_zero_init": Recipe(batch_size=64, zero_init_residual=SILENT_RESIDUAL),
    "default": Recipe(),
}
CASES = ["resnet20:batch128", "resnet20:batch64", "resnet20:batch32", "resnet20:batch128_zero_init", "resnet20:batch64_zero_init",
         "deep_bottleneck:batch128", "deep_bottleneck:batch64", "deep_bottleneck:batch64_zero_init", "deep_bottleneck:default"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder")
    parser.add_argument("cases", nargs="*", default=CASES)
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = load_dataset(f"imagefolder:{args.folder}")
    split = split_dataset(data.labels, subset=5000)
    archs = {"resnet20": load_arch("resnet20"), "deep_bottleneck": Arch.from_dict(DEEP_BOTTLENECK)}
    print("| architecture | recipe | val acc, epoch 1 / 2 / 3 | train loss, epoch 1 / 2 / 3 | seconds |")
    print("| --- | --- | --- | --- | ---: |")
    for case in args.cases:
        arch, recipe = case.split(":")
        start = time.perf_counter()
        result = train(fit_to_data(archs[arch], data), data, split, recipe=RECIPES[recipe], budget=Budget(epochs=3))
        print(f"| {arch} | {recipe} | {' / '.join(f'{h.val_acc:.1%}' for h in result.history)} | "
              f"{' / '.join(f'{h.train_loss:.2f}' for h in result.history)} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
