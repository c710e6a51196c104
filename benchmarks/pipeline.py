"""Data pipeline and trainer vs torchvision's DataLoader, side by side on one machine.

Needs the CIFAR-10 training images as JPEG folders in ImageFolder layout (one folder per
class; pass the folder that holds them). Every case runs in its own process, so its peak
resident memory (ru_maxrss, DataLoader workers counted separately) is its own.

Usage: python benchmarks/pipeline.py PATH/TO/cifar10/train [--skip-accuracy]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from cnnsearch import load_arch
from cnnsearch.config import SHORT_STEPS, Recipe
from cnnsearch.data import Batches, load_dataset, split_dataset
from cnnsearch.space import Budget
from cnnsearch.train import _lr_factor, _optimizer, fit_to_data, train

BATCH = 256
SUBSET = 10_000


def _torchvision_loader(folder: str, indices: torch.Tensor, augment: bool, workers: int = 2):
    from torchvision import datasets, transforms

    data = load_dataset(f"imagefolder:{folder}")
    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment else []
    steps += [transforms.ToTensor(), transforms.Normalize(data.mean, data.std)]
    dataset = torch.utils.data.Subset(datasets.ImageFolder(folder, transforms.Compose(steps)), indices.tolist())
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=augment, num_workers=workers, persistent_workers=False)


def _plain_loop(folder: str, name: str, split, max_images: int | None, channels_last: bool) -> dict:
    """What people write by hand: ImageFolder + PIL transforms + DataLoader(2 workers) + SGD."""
    data = load_dataset(f"imagefolder:{folder}")
    arch = fit_to_data(load_arch(name), data)
    from cnnsearch import build_model

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(arch).to(memory_format=fmt)
    recipe = Recipe(batch_size=BATCH)
    optimizer = _optimizer(model, recipe, recipe.scaled_lr(steps=SHORT_STEPS))  # the rate does not change the speed
    steps = (max_images or len(split.train)) // BATCH + 1
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(recipe, steps))
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    start = time.perf_counter()
    seen = 0
    model.train()
    for images, labels in _torchvision_loader(folder, split.train, augment=True):
        loss = criterion(model(images.to(memory_format=fmt)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        seen += len(labels)
        if max_images and seen >= max_images:
            break
    train_seconds = time.perf_counter() - start
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in _torchvision_loader(folder, split.val, augment=False):
            correct += (model(images.to(memory_format=fmt)).argmax(1) == labels).sum().item()
    return {
        "seconds": time.perf_counter() - start,
        "train_images_per_s": seen / train_seconds,
        "images": seen,
        "val_acc": correct / len(split.val),
    }


def run_case(case: str, folder: str) -> dict:
    data = load_dataset(f"imagefolder:{folder}")
    full = split_dataset(data.labels)
    subset = split_dataset(data.labels, subset=SUBSET)
    small_val = split_dataset(data.labels, val_fraction=0.01, subset=SUBSET)  # densenet: fewer images to validate
    if case == "loader_ours":
        batches = Batches(data, full.train, batch_size=BATCH, train=True, channels_last=True)
        start = time.perf_counter()
        count = sum(len(labels) for _, labels in batches)
        result = {"images_per_s": count / (time.perf_counter() - start), "images": count}
    elif case == "loader_torchvision":
        start = time.perf_counter()
        count = sum(len(labels) for _, labels in _torchvision_loader(folder, full.train, augment=True))
        result = {"images_per_s": count / (time.perf_counter() - start), "images": count}
    elif case.startswith("train_ours"):
        name = "densenet_bc_100_k12" if "densenet" in case else "resnet20"
        split, budget = (small_val, Budget(epochs=1, max_images=4 * BATCH)) if "densenet" in case else (subset, Budget(epochs=1))
        start = time.perf_counter()
        loaded = load_dataset(f"imagefolder:{folder}")  # end to end: from the cache, as a trial does
        # fp32, as the plain loop: the comparison is of the pipelines, not of the precisions
        out = train(fit_to_data(load_arch(name), loaded), loaded, split, recipe=Recipe(batch_size=BATCH, precision="fp32"),
                    budget=budget, channels_last="contiguous" not in case)
        result = {"seconds": time.perf_counter() - start, "train_images_per_s": out.train_images_per_s, "images": out.images,
                  "val_acc": out.val_acc}
    elif case.startswith("train_plain"):
        name = "densenet_bc_100_k12" if "densenet" in case else "resnet20"
        split, max_images = (small_val, 4 * BATCH) if "densenet" in case else (subset, None)
        result = _plain_loop(folder, name, split, max_images, channels_last="channels_last" in case)
    elif case.startswith("precision_"):
        _, precision, name = case.split("_", 2)
        batch = 64 if "densenet" in name else 128
        images = {"resnet20": 4096, "densenet_bc_100_k12": 512, "mobilenet_v2_cifar": 1024}[name]
        out = train(fit_to_data(load_arch(name), data), data, small_val, recipe=Recipe(batch_size=batch, precision=precision),
                    budget=Budget(epochs=1, max_images=images))
        result = {"train_images_per_s": out.train_images_per_s, "images": out.images, "precision": out.precision, "batch": batch}
    elif case.startswith("accuracy_"):
        precision = case.removeprefix("accuracy_")
        recipe = Recipe(precision=precision)
        start = time.perf_counter()
        loaded = load_dataset(f"imagefolder:{folder}")  # end to end, as `cnnsearch train` does
        out = train(fit_to_data(load_arch("resnet20"), loaded), loaded, full, recipe=recipe, budget=Budget(epochs=3))
        result = {"val_acc": out.val_acc, "seconds": time.perf_counter() - start, "train_images_per_s": out.train_images_per_s,
                  "history": [(r.epoch, r.val_acc) for r in out.history], "recipe": recipe.model_dump(), "lr": out.lr}
    else:
        raise ValueError(case)
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return result | {"case": case, "peak_rss_mib": usage, "peak_worker_rss_mib": children}


CASES = [
    "loader_ours",
    "loader_torchvision",
    "train_ours_resnet20",
    "train_ours_resnet20_contiguous",
    "train_plain_resnet20",
    "train_plain_resnet20_channels_last",
    "train_ours_densenet",
    "train_plain_densenet",
    *(f"precision_{p}_{name}" for name in ("resnet20", "densenet_bc_100_k12", "mobilenet_v2_cifar") for p in ("fp32", "bf16")),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="CIFAR-10 training images in ImageFolder layout")
    parser.add_argument("--skip-accuracy", action="store_true", help="skip the 3-epoch accuracy runs (about 5 minutes)")
    parser.add_argument("--only", help="comma-separated prefixes of the cases to run (e.g. precision,accuracy); the rest keep their last report")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.folder)))
        return
    from _report import machine, write

    load_dataset(f"imagefolder:{args.folder}")  # decode once, outside every timing
    cases = CASES + ([] if args.skip_accuracy else ["accuracy_fp32", "accuracy_bf16"])
    previous = Path(__file__).parent / "results" / "pipeline.json"
    runs = json.loads(previous.read_text())["runs"] if args.only and previous.exists() else {}
    for case in cases:
        if args.only and not case.startswith(tuple(args.only.split(","))):
            if case not in runs:
                raise SystemExit(f"no earlier report of case {case}: run without --only")
            continue
        command = [sys.executable, __file__, args.folder, "--case", case]
        runs[case] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        print(case, runs[case], file=sys.stderr)
    r = runs
    ratio = lambda a, b, key: r[a][key] / r[b][key]  # noqa: E731
    lines = [
        f"CIFAR-10's training images as JPEG folders, 45,000/5,000 split, batch {BATCH}, CPU ({machine()}).",
        "Each row ran in its own process; peak RSS is that process's (DataLoader workers: their own column).",
        "",
        "| case | images/s | end to end (s) | val acc | peak RSS (MiB) | workers' peak RSS (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    labels = {
        "loader_ours": "pipeline alone: cnnsearch Batches (crop+flip+normalize, 1 epoch of 45,000)",
        "loader_torchvision": "pipeline alone: ImageFolder + PIL transforms + DataLoader, 2 workers",
        "train_ours_resnet20": f"resnet20, 1 epoch of {SUBSET:,} + validation: cnnsearch train (channels_last)",
        "train_ours_resnet20_contiguous": f"resnet20, 1 epoch of {SUBSET:,} + validation: cnnsearch train, NCHW",
        "train_plain_resnet20": f"resnet20, 1 epoch of {SUBSET:,} + validation: plain DataLoader loop, 2 workers, NCHW",
        "train_plain_resnet20_channels_last": f"resnet20, 1 epoch of {SUBSET:,} + validation: plain DataLoader loop, channels_last",
        "train_ours_densenet": f"densenet_bc_100_k12, {4 * BATCH:,} images: cnnsearch train",
        "train_plain_densenet": f"densenet_bc_100_k12, {4 * BATCH:,} images: plain DataLoader loop, 2 workers",
        "accuracy_fp32": "resnet20, default recipe (batch 128), 3 epochs of 45,000, fp32: cnnsearch train",
        "accuracy_bf16": "resnet20, default recipe (batch 128), 3 epochs of 45,000, bf16: cnnsearch train",
        **{f"precision_{p}_{name}": f"{name}, batch {64 if 'densenet' in name else 128}, {p}: cnnsearch train (training images/s)"
           for name in ("resnet20", "densenet_bc_100_k12", "mobilenet_v2_cifar") for p in ("fp32", "bf16")},
    }
    for case in cases:
        row = r[case]
        speed = row.get("images_per_s", row.get("train_images_per_s"))
        acc = f"{row['val_acc']:.2%}" if row.get("val_acc") is not None else ""
        seconds = f"{row['seconds']:.1f}" if "seconds" in row else ""
        workers = f"{row['peak_worker_rss_mib']:.0f}" if "torchvision" in case or "plain" in case else ""
        lines.append(f"| {labels[case]} | {speed:,.0f} | {seconds} | {acc} | {row['peak_rss_mib']:.0f} | {workers} |")
    lines += [
        "",
        f"- Pipeline alone: {ratio('loader_ours', 'loader_torchvision', 'images_per_s'):.0f}x the images/s of the DataLoader (target: 20x).",
        f"- resnet20, one epoch of {SUBSET:,} end to end: {ratio('train_plain_resnet20', 'train_ours_resnet20', 'seconds'):.2f}x faster than the "
        f"plain loop (target: 1.3x); {ratio('train_plain_resnet20_channels_last', 'train_ours_resnet20', 'seconds'):.2f}x faster than the plain loop with channels_last.",
        f"- channels_last in cnnsearch train: {ratio('train_ours_resnet20_contiguous', 'train_ours_resnet20', 'seconds'):.2f}x faster end to end than NCHW, so it is the default.",
        f"- densenet_bc_100_k12 training images/s: {ratio('train_ours_densenet', 'train_plain_densenet', 'train_images_per_s'):.2f}x the plain loop.",
    ]
    for name in ("resnet20", "densenet_bc_100_k12", "mobilenet_v2_cifar"):
        lines.append(f"- {name}: bf16 autocast trains at {ratio(f'precision_bf16_{name}', f'precision_fp32_{name}', 'train_images_per_s'):.2f}x the images/s of fp32.")
    for precision in ("fp32", "bf16"):
        if f"accuracy_{precision}" in r:
            history = ", ".join(f"epoch {e}: {a:.2%}" for e, a in r[f"accuracy_{precision}"]["history"])
            lines.append(f"- Accuracy, {precision} (target: 73% in 3 epochs): {history}.")
    if "accuracy_bf16" in r:
        lines.append(
            f"- resnet20, 3 epochs end to end: bf16 {ratio('accuracy_fp32', 'accuracy_bf16', 'seconds'):.2f}x faster than fp32 "
            f"(target 1.6x), accuracy {(r['accuracy_bf16']['val_acc'] - r['accuracy_fp32']['val_acc']) * 100:+.2f} points (target: within 1)."
        )
    write("pipeline", {"machine": machine(), "runs": runs}, "\n".join(lines), "python benchmarks/pipeline.py PATH/TO/cifar10/train")


if __name__ == "__main__":
    main()
