"""The training recipe at a search's budget: each part of the default measured against its absence.

Short trials are the premise of a search: 3 epochs of 5,000 CIFAR-10 images is 117 steps
at batch 128. Every case trains the same architectures on the same split with one part of
the default recipe changed, in one run on one machine, and reports the validation accuracy
and loss after each epoch. "Before" is the recipe this project shipped first (lr 0.2 at
batch 128 whatever the batch, warm-up as a fraction of the steps only, no clipping, BN
statistics as the exponential average left them).

Usage: python benchmarks/recipe.py PATH/TO/cifar10/train
"""

from __future__ import annotations

import argparse
import sys
import time

import optuna

from cnnsearch import load_arch, load_space
from cnnsearch.config import Recipe
from cnnsearch.data import load_dataset, split_dataset
from cnnsearch.space import Budget
from cnnsearch.train import fit_to_data, train

SUBSET, EPOCHS = 5000, 3
BEFORE = dict(lr=0.2, warmup_min_steps=0, grad_clip_norm=None, bn_recalibration_images=0, zero_init_residual=())
BEFORE_NAME = "before (lr 0.2, fraction-only warm-up, no clipping, no BN re-estimation, no zero-init)"
ZERO_INIT = "default + zero-init of residual blocks too"
VARIANTS = {
    BEFORE_NAME: BEFORE,
    "default": {},
    "default, lr linearly scaled, 0.1 per 256 (Goyal et al.)": dict(lr=0.05),
    "default, lr 0.2 at batch 128": dict(lr=0.2),
    "default, lr auto (range test)": dict(lr="auto"),
    ZERO_INIT: dict(zero_init_residual=("residual", "inverted_residual")),
    "default without warm-up floor": dict(warmup_min_steps=0),
    "default without gradient clipping": dict(grad_clip_norm=None),
    "default without BN re-estimation": dict(bn_recalibration_images=0),
}
# Bottleneck ResNets of spaces/resnet.yaml, the kind of sample that sat at chance: 10 blocks, and 24.
BOTTLENECK = {"stem.channels": 32, "residual.block": "bottleneck", "residual.shortcut": "projection",
              "stages.0.residual.num_blocks": 5, "stages.0.residual.width": 16, "stages.1.residual.num_blocks": 2,
              "stages.1.residual.width": 32, "stages.2.residual.num_blocks": 3, "stages.2.residual.width": 64}
DEEP = BOTTLENECK | {"stages.0.residual.num_blocks": 9, "stages.1.residual.num_blocks": 6, "stages.2.residual.num_blocks": 9}
SHORT = (BEFORE_NAME, "default", ZERO_INIT, "default without BN re-estimation")  # the variants of the slower networks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="CIFAR-10 training images in ImageFolder layout")
    args = parser.parse_args()
    from _report import machine, write

    data = load_dataset(f"imagefolder:{args.folder}")
    split = split_dataset(data.labels, subset=SUBSET)
    space = load_space("spaces/resnet.yaml")
    archs = {
        "resnet20": (load_arch("resnet20"), tuple(VARIANTS)),
        "bottleneck ResNet, 10 blocks (a spaces/resnet.yaml sample)": (space.sample(optuna.trial.FixedTrial(BOTTLENECK)), SHORT),
        "bottleneck ResNet, 24 blocks (a spaces/resnet.yaml sample)": (space.sample(optuna.trial.FixedTrial(DEEP)), SHORT[:3]),
    }
    runs = []
    for arch_name, (arch, variants) in archs.items():
        for variant, changes in VARIANTS.items():
            if variant not in variants:
                continue
            start = time.perf_counter()
            result = train(fit_to_data(arch, data), data, split, recipe=Recipe(**changes), budget=Budget(epochs=EPOCHS))
            runs.append({"arch": arch_name, "variant": variant, "recipe": changes, "status": result.status,
                         "peak_lr": result.lr, "seconds": time.perf_counter() - start,
                         "history": [(r.epoch, r.val_acc, r.val_loss, r.train_loss) for r in result.history]})
            print(runs[-1], file=sys.stderr, flush=True)
    lines = [
        f"CIFAR-10 JPEGs, {SUBSET:,} training images, the 5,000 validation images of the 45,000/5,000 split, "
        f"{EPOCHS} epochs at batch 128 ({EPOCHS * -(-SUBSET // 128)} steps), seed 0, CPU ({machine()}), default precision.",
        "",
        "| architecture | recipe | peak lr | val acc, epoch 1 / 2 / 3 | val loss, epoch 1 / 2 / 3 |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for run in runs:
        accs = " / ".join(f"{acc:.1%}" for _, acc, _, _ in run["history"])
        losses = " / ".join(f"{loss:.3g}" for _, _, loss, _ in run["history"])
        lines.append(f"| {run['arch']} | {run['variant']} | {run['peak_lr']:.3g} | {accs} | {losses} |")
    write("recipe", {"machine": machine(), "subset": SUBSET, "epochs": EPOCHS, "runs": runs}, "\n".join(lines),
          "python benchmarks/recipe.py PATH/TO/cifar10/train")


if __name__ == "__main__":
    main()
