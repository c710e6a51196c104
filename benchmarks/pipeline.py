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
from cnnsearch.train.step import autocast, resolve_precision

BATCH = 256
SUBSET = 10_000
SEEDS = (1, 2)  # the 3-epoch resnet20 run in bf16 again with these seeds: its spread from seed to seed
PRESETS = ("resnet20", "mobilenet_v2_cifar", "densenet_bc_100_k12")
# speed_*: training images of the one epoch, validation images, and steps of the model's own step (a few seconds each)
SPEED = {"resnet20": (10_000, 2_000, 40), "mobilenet_v2_cifar": (3_000, 1_000, 20), "densenet_bc_100_k12": (1_024, 512, 8)}


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


def _phases(folder: str, name: str, precision: str) -> dict:
    """Where one epoch and one validation of train() spend their time: the trainer's own parts (set-up, step, schedule,
    validation) timed apart, in the order that its epoch and its validation run them, at the default recipe."""
    from torch.optim.swa_utils import update_bn

    from cnnsearch.train.loop import _set_up

    data = load_dataset(f"imagefolder:{folder}")
    images, val_images, _ = SPEED[name]
    split = split_dataset(data.labels, subset=images, val_subset=val_images)
    recipe = Recipe(precision=precision)
    trial = _set_up(fit_to_data(load_arch(name), data), data, split, recipe, Budget(epochs=1), 0, torch.device("cpu"), True, None)
    stepper, seconds = trial.stepper, dict.fromkeys(("batch", "forward and loss", "backward", "clip", "optimizer", "schedule and loss sum",
                                                    "BN re-estimation", "validation batch", "validation forward", "validation loss and count"), 0.0)

    def timed(phase: str, start: float) -> float:
        now = time.perf_counter()
        seconds[phase] += now - start
        return now

    trial.model.train()
    loss_sum, batches = torch.zeros(()), iter(trial.train_batches)
    epoch_start = now = time.perf_counter()
    for images_batch, labels in batches:
        now = timed("batch", now)
        with stepper.autocast():
            loss = stepper.loss(stepper.forward(images_batch), labels)
        now = timed("forward and loss", now)
        stepper.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        now = timed("backward", now)
        if stepper.clip:
            nn.utils.clip_grad_norm_(stepper.parameters, stepper.clip, foreach=True)
        now = timed("clip", now)
        stepper.optimizer.step()
        now = timed("optimizer", now)
        trial.scheduler.step()
        loss_sum += loss.detach() * len(labels)
        now = timed("schedule and loss sum", now)
    epoch = time.perf_counter() - epoch_start
    now = time.perf_counter()
    with stepper.autocast():
        update_bn(trial.calibration, trial.model)
    now = timed("BN re-estimation", now)
    trial.model.eval()
    with torch.inference_mode():
        for images_batch, labels in trial.val_batches:
            now = timed("validation batch", now)
            with stepper.autocast():
                logits = trial.model(images_batch)
            now = timed("validation forward", now)
            nn.functional.cross_entropy(logits.float(), labels, reduction="sum").item()
            (logits.argmax(1) == labels).sum().item()
            now = timed("validation loss and count", now)
    return {"seconds": seconds, "epoch_seconds": epoch, "steps": len(trial.train_batches), "images": images, "val_images": val_images,
            "calibration_images": recipe.bn_recalibration_images, "batch": recipe.batch_size, "precision": trial.precision}


def _speed(folder: str, name: str, precision: str) -> dict:
    """``train()`` on one epoch at the default recipe's batch, against the model's own step on one resident batch
    (forward, loss, backward, SGD; built as train() builds it), and its validation against batched inference alone."""
    data = load_dataset(f"imagefolder:{folder}")
    images, val_images, steps = SPEED[name]
    split = split_dataset(data.labels, subset=images, val_subset=val_images)
    recipe, arch = Recipe(precision=precision), fit_to_data(load_arch(name), data)
    start = time.perf_counter()
    out = train(arch, data, split, recipe=recipe, budget=Budget(epochs=1))
    seconds = time.perf_counter() - start
    from cnnsearch import build_model

    torch.manual_seed(0)
    model = build_model(arch, zero_init_residual=recipe.zero_init_residual).to(memory_format=torch.channels_last)
    optimizer = _optimizer(model, recipe, 0.01)
    cast = autocast(resolve_precision(precision, torch.device("cpu")), torch.device("cpu"))
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    batch, labels = next(iter(Batches(data, split.train, batch_size=recipe.batch_size, train=True, channels_last=True)))
    model.train()
    for step in range(3 + steps):  # 3 to warm up
        if step == 3:
            step_start = time.perf_counter()
        with cast():
            loss = criterion(model(batch), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    own_step = steps * len(labels) / (time.perf_counter() - step_start)
    model.eval()
    val_batch, _ = next(iter(Batches(data, split.val, batch_size=recipe.batch_size, train=False, channels_last=True)))
    with torch.inference_mode():
        for index in range(2 + 2 * steps):
            if index == 2:
                inference_start = time.perf_counter()
            with cast():
                model(val_batch)
    inference = 2 * steps * len(val_batch) / (time.perf_counter() - inference_start)
    return {"train_images_per_s": out.train_images_per_s, "own_step_images_per_s": own_step,
            "val_images_per_s": out.history[-1].val_images_per_s, "inference_images_per_s": inference,
            "seconds": seconds, "images": out.images, "val_images": val_images, "batch": recipe.batch_size, "precision": out.precision}


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
    elif case.startswith("phases_"):
        _, precision, name = case.split("_", 2)
        result = _phases(folder, name, precision)
    elif case.startswith("speed_"):
        _, precision, name = case.split("_", 2)
        result = _speed(folder, name, precision)
    elif case.startswith("accuracy_"):
        precision, _, seed = case.removeprefix("accuracy_").partition("_seed")
        recipe = Recipe(precision=precision)
        start = time.perf_counter()
        loaded = load_dataset(f"imagefolder:{folder}")  # end to end, as `cnnsearch train` does
        out = train(fit_to_data(load_arch("resnet20"), loaded), loaded, full, recipe=recipe, budget=Budget(epochs=3), seed=int(seed or 0))
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
    *(f"speed_{p}_{name}" for name in PRESETS for p in ("fp32", "bf16")),
    *(f"phases_{p}_{name}" for name in PRESETS for p in ("fp32", "bf16")),
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
    cases = CASES + ([] if args.skip_accuracy else ["accuracy_fp32", "accuracy_bf16", *(f"accuracy_bf16_seed{seed}" for seed in SEEDS)])
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
        **{f"accuracy_{p}": f"resnet20, default recipe (batch {Recipe().batch_size}), 3 epochs of 45,000, {p}: cnnsearch train"
           for p in ("fp32", "bf16")},
        **{f"precision_{p}_{name}": f"{name}, batch {64 if 'densenet' in name else 128}, {p}: cnnsearch train (training images/s)"
           for name in ("resnet20", "densenet_bc_100_k12", "mobilenet_v2_cifar") for p in ("fp32", "bf16")},
    }
    for case in [case for case in cases if not case.startswith(("speed_", "phases_")) and "_seed" not in case]:
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
    if all(f"accuracy_bf16_seed{seed}" in r for seed in SEEDS):
        finals = [r["accuracy_bf16"]["val_acc"], *(r[f"accuracy_bf16_seed{seed}"]["val_acc"] for seed in SEEDS)]
        lines.append(f"- Accuracy, bf16, seeds 0, {', '.join(map(str, SEEDS))}: " + ", ".join(f"{value:.2%}" for value in finals)
                     + f" after 3 epochs (mean {sum(finals) / len(finals):.2%}).")
    if "accuracy_bf16" in r:
        lines.append(
            f"- resnet20, 3 epochs end to end: bf16 {ratio('accuracy_fp32', 'accuracy_bf16', 'seconds'):.2f}x faster than fp32 "
            f"(target 1.6x), accuracy {(r['accuracy_bf16']['val_acc'] - r['accuracy_fp32']['val_acc']) * 100:+.2f} points (target: within 1)."
        )
    lines += ["", f"`cnnsearch train` against the model alone, at the default recipe's batch ({Recipe().batch_size}), each preset and "
              "precision in one process: one epoch's training images/s against the model's own step (forward, loss, backward, SGD) "
              "on one resident batch; the validation pass's images/s (BN's re-estimation before it not counted) against batched "
              "inference alone on one resident batch.", "",
              "| preset | precision | train() images/s | own step | ratio | validation images/s | inference alone | ratio |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in PRESETS:
        for precision in ("fp32", "bf16"):
            row = r[f"speed_{precision}_{name}"]
            lines.append(f"| {name} ({SPEED[name][0]:,} images) | {precision} | {row['train_images_per_s']:,.0f} | {row['own_step_images_per_s']:,.0f} | "
                         f"{row['train_images_per_s'] / row['own_step_images_per_s']:.2f} | {row['val_images_per_s']:,.0f} | "
                         f"{row['inference_images_per_s']:,.0f} | {row['val_images_per_s'] / row['inference_images_per_s']:.2f} |")
    lines.append(f"- resnet20, one epoch of {SPEED['resnet20'][0]:,}: bf16's training images/s are "
                 f"{ratio('speed_bf16_resnet20', 'speed_fp32_resnet20', 'train_images_per_s'):.2f}x fp32's; end to end (set-up, the epoch, "
                 f"BN's re-estimation and validation) {ratio('speed_fp32_resnet20', 'speed_bf16_resnet20', 'seconds'):.2f}x as fast.")
    phases = list(r[f"phases_bf16_{PRESETS[0]}"]["seconds"])
    lines += ["", "Where the time goes: one epoch and one validation of train() (the images above, BN re-estimated on "
              f"{Recipe().bn_recalibration_images:,} training images), each part timed apart; milliseconds per training step for the "
              "epoch's parts, per validation for the others, and each part's share of the whole.", "",
              "| preset | precision | " + " | ".join(phases) + " |", "| --- | --- | " + " | ".join("---:" for _ in phases) + " |"]
    for name in PRESETS:
        for precision in ("fp32", "bf16"):
            row = r[f"phases_{precision}_{name}"]
            total = sum(row["seconds"].values())
            cells = [f"{1000 * row['seconds'][phase] / (row['steps'] if index < 6 else 1):,.1f} ({row['seconds'][phase] / total:.0%})"
                     for index, phase in enumerate(phases)]
            lines.append(f"| {name} | {precision} | " + " | ".join(cells) + " |")
    write("pipeline", {"machine": machine(), "runs": runs}, "\n".join(lines), "python benchmarks/pipeline.py PATH/TO/cifar10/train")


if __name__ == "__main__":
    main()
