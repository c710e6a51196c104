"""The ``train`` command: trains one architecture on a data set's split and reports its
validation accuracy, speed and split, as text or one JSON object.
"""

from __future__ import annotations

import argparse
import json

from ..config import Recipe, load_arch
from ..names import DATASETS
from ..space import DatasetSpec
from .flags import add_recipe_flags, positive, recipe_overrides


def add_train(commands: argparse._SubParsersAction) -> None:
    """The ``train`` command and its flags."""
    tr = commands.add_parser("train", help="train one architecture and report its validation accuracy")
    tr.add_argument("arch", help="preset or architecture YAML file; classes and input size follow the data")
    tr.add_argument("--dataset", required=True, help=f"{', '.join(DATASETS[:-1])} or {DATASETS[-1]}")
    tr.add_argument("--epochs", type=positive, default=10)
    tr.add_argument("--subset", type=positive, help="train on this many images of the training split")
    tr.add_argument("--seed", type=int, default=0, help="seeds weights, data order and augmentation")
    tr.add_argument("--device", default="cpu", help="cpu or cuda")
    add_recipe_flags(tr)
    tr.add_argument("--max-seconds", type=float, help="stop training after this many seconds")
    dataset = DatasetSpec.model_fields  # the space's defaults, stated once
    tr.add_argument("--val-fraction", type=float, default=dataset["val_fraction"].default,
                    help="validation share of the images left after the test split (default %(default)s)")
    tr.add_argument("--test-fraction", type=float, default=dataset["test_fraction"].default,
                    help="test share held out first, unless the data set has test images of its own (default %(default)s)")
    tr.add_argument("--split-seed", type=int, default=dataset["split_seed"].default,
                    help="seed of the test/train/validation split (default %(default)s)")
    tr.add_argument("--cache-dir", help="where decoded data sets are cached (default ~/.cache/cnnsearch)")
    tr.add_argument("--data-dir", help="where torchvision's CIFAR files are or are downloaded to")
    tr.add_argument("--json", action="store_true", help="print the result as one JSON object")
    tr.set_defaults(run=_train)


def _train(args: argparse.Namespace) -> None:
    from ..data import held_out_test_fraction, load_dataset, split_dataset
    from ..space import Budget
    from ..train import fit_to_data, resolve_device, train

    device = resolve_device(args.device)  # before minutes of decoding, not after
    arch = load_arch(args.arch)
    data = load_dataset(args.dataset, cache_dir=args.cache_dir, data_dir=args.data_dir)
    arch = fit_to_data(arch, data)
    split = split_dataset(data.labels, val_fraction=args.val_fraction, seed=args.split_seed, subset=args.subset,
                          test_fraction=held_out_test_fraction(args.dataset, args.test_fraction))
    recipe = Recipe(**recipe_overrides(args))
    budget = Budget(epochs=args.epochs, max_seconds=args.max_seconds)
    result = train(arch, data, split, recipe=recipe, budget=budget, seed=args.seed, device=device, progress=True)
    if args.json:
        print(json.dumps({"arch": arch.name, "arch_digest": arch.digest, **result.to_dict()}))
        return
    print(f"{arch.name} on {data.source}: {result.status}" + (f" ({result.message})" if result.message else ""))
    if result.val_acc is not None:
        print(f"  val_acc {result.val_acc:.2%}, val_loss {result.val_loss:.4f}, train_loss {result.train_loss:.4f}")
    print(
        f"  {result.epochs:g} epochs, {result.images:,} images in {result.seconds:.1f} s, "
        f"{result.train_images_per_s:,.0f} training images/s on {result.device}"
        + (f", {result.history[-1].val_images_per_s:,.0f} validation images/s" if result.history else "")
    )
    if recipe.compile:
        print(f"  compiled in {result.compile_seconds:.1f} s of those, not counted in the images/s")
    print(f"  peak lr {result.lr:.4g}{' (range test)' if recipe.lr == 'auto' else ''}, {result.precision}")
    print(f"  split: {split.describe()}")
