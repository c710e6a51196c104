"""Batch size, peak learning rate and zero-initialised residual branches, at a search's budget and at the full one.

resnet20 (basic blocks) and a 24-block bottleneck ResNet (9, 6, 9 blocks of widths 16, 32,
64: the deepest of spaces/resnet.yaml's first search, which sat at 13%), each under the
recipes named on the command line, seed 0, on this CPU's default precision. A case is
ARCH:RECIPE (3 epochs of 5,000 images, validated on the 5,000 held out) or
ARCH:RECIPE:full (3 epochs of the 45,000 training images of the 45,000/5,000 split).
Usage: python benchmarks/short_budget.py PATH/TO/cifar10/train [case ...]
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
NOT_SILENT = ("inverted_residual",)
SILENT_RESIDUAL = ("residual", "inverted_residual")  # every residual stage
BOTTLENECK_SILENT = ("bottleneck", "inverted_residual")  # residual stages of bottleneck blocks only
# The earlier default scaled 0.2 per 256 images with the square root of the batch, whatever the steps: 0.141 at 128, 0.1 at 64.
RECIPES = {
    "default": Recipe(),  # 0.1 at batch 64 up to 250 steps, growing to 0.2 at 2,000
    "batch128_lr0.141": Recipe(batch_size=128, lr_at_256=0.2, lr_at_256_long=0.2, zero_init_residual=NOT_SILENT),
    "batch64_lr0.1": Recipe(batch_size=64, lr_at_256=0.2, lr_at_256_long=0.2, zero_init_residual=NOT_SILENT),
    "batch32_lr0.071": Recipe(batch_size=32, lr_at_256=0.2, lr_at_256_long=0.2, zero_init_residual=NOT_SILENT),
    "batch64_lr0.2": Recipe(batch_size=64, lr=0.2, zero_init_residual=NOT_SILENT),
    "batch64_lr0.1_zero_init": Recipe(batch_size=64, lr_at_256=0.2, lr_at_256_long=0.2, zero_init_residual=SILENT_RESIDUAL),
    "batch64_lr0.1_bottleneck_zero_init": Recipe(batch_size=64, lr_at_256=0.2, lr_at_256_long=0.2, zero_init_residual=BOTTLENECK_SILENT),
    "batch64_lr0.2_zero_init": Recipe(batch_size=64, lr=0.2, zero_init_residual=SILENT_RESIDUAL),
    "batch64_lr0.2_bottleneck_zero_init": Recipe(batch_size=64, lr=0.2, zero_init_residual=BOTTLENECK_SILENT),
}
CASES = ["resnet20:batch128_lr0.141", "resnet20:batch64_lr0.1", "resnet20:batch32_lr0.071", "resnet20:batch64_lr0.1_zero_init",
         "resnet20:batch64_lr0.2", "resnet20:batch64_lr0.2_zero_init",
         "deep_bottleneck:batch64_lr0.1", "deep_bottleneck:batch64_lr0.2", "deep_bottleneck:batch64_lr0.1_bottleneck_zero_init",
         "deep_bottleneck:batch64_lr0.2_bottleneck_zero_init",
         "resnet20:batch64_lr0.1:full", "resnet20:batch64_lr0.2:full"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder")
    parser.add_argument("cases", nargs="*", default=CASES)
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = load_dataset(f"imagefolder:{args.folder}")
    splits = {"short": split_dataset(data.labels, subset=5000), "full": split_dataset(data.labels)}
    archs = {"resnet20": load_arch("resnet20"), "deep_bottleneck": Arch.from_dict(DEEP_BOTTLENECK)}
    print("| architecture | recipe | peak lr | training images | val acc, epoch 1 / 2 / 3 | train loss, epoch 1 / 2 / 3 | seconds |")
    print("| --- | --- | ---: | ---: | --- | --- | ---: |")
    for case in args.cases:
        arch, recipe, budget = (case.split(":") + ["short"])[:3]
        split = splits[budget]
        start = time.perf_counter()
        result = train(fit_to_data(archs[arch], data), data, split, recipe=RECIPES[recipe], budget=Budget(epochs=3))
        print(f"| {arch} | {recipe} | {result.lr:.3g} | {len(split.train):,} | {' / '.join(f'{h.val_acc:.1%}' for h in result.history)} | "
              f"{' / '.join(f'{h.train_loss:.2f}' for h in result.history)} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
