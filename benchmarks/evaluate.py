"""`evaluate` of an exported DenseNet against the model's own batched inference, side by side in one process.

The export folder holds a sample of spaces/densenet.yaml (random weights: the speed does not
depend on them). Its test split is 5,000 images of the folder given (the CIFAR-10 training images
as a JPEG folder: a tenth of each class held out). The reference is the same network on the same
images, already decoded, normalized and in memory, in the same batches, channels_last, in
torch.inference_mode, in the same precision. The two alternate, so that a machine shared with
other work slows both alike; so does the former evaluate loop (fp32, NCHW, torch.no_grad, batches
of 500), for comparison.

Usage: python benchmarks/evaluate.py /tmp/cifar/train [--sample 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _report import machine, write

from cnnsearch.config import Arch, save_arch
from cnnsearch.costs import profile
from cnnsearch.data import ImageData, load_dataset, split_dataset
from cnnsearch.export import Normalized, evaluate, load_exported
from cnnsearch.export.evaluation import batch_size, cpu_precision
from cnnsearch.export.formats import write_formats
from cnnsearch.model import build_model
from cnnsearch.names import ARCH_FILE
from cnnsearch.space import load_space
from cnnsearch.train import autocast, fit_to_data

SPACE = Path(__file__).resolve().parents[1] / "spaces" / "densenet.yaml"
FORMER_BATCH = 500


def _export(out: Path, dataset: str, data: ImageData, arch: Arch) -> Path:
    """An export folder of ``arch``, as export writes it, its test split a tenth of ``data``."""
    torch.manual_seed(0)
    network = Normalized(build_model(arch), data.mean, data.std).eval()
    split = split_dataset(data.labels, val_fraction=0.1, test_fraction=0.1, seed=0)
    save_arch(arch, out / ARCH_FILE)
    meta = {"name": arch.name, "class_names": list(data.classes), "dataset": data.describe() | {"name": dataset},
            "split": split.describe(), "trained_on": {"splits": ["train"]}, "accuracies": {}, "trained_precision": "bf16",
            "normalization": {"mean": list(data.mean), "std": list(data.std), "inside_graph": True}, "formats": []}
    write_formats(None, network, data.images[:4].float() / 255, out, ("weights",), meta, say=lambda line: None)
    return out


def _inputs(data: ImageData, indices: torch.Tensor) -> torch.Tensor:
    """The images as the model takes them: decoded, normalized, channels_last, in memory."""
    mean, std = (torch.tensor(values).view(1, -1, 1, 1) for values in (data.mean, data.std))
    return ((data.images[indices].float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)


def _model_alone(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, precision: str) -> int:
    """The model's own batched inference over ``inputs``: how many it gets right."""
    run_in, batch = autocast(precision, torch.device("cpu")), batch_size(inputs.shape[-2:])
    correct = torch.zeros((), dtype=torch.int64)
    with torch.inference_mode():
        for start in range(0, len(inputs), batch):
            with run_in():
                correct += (model(inputs[start : start + batch]).argmax(1) == labels[start : start + batch]).sum()
    return int(correct)


def _former(network: torch.nn.Module, data: ImageData, indices: torch.Tensor) -> int:
    """The loop evaluate ran before it measured in the model's precision (fp32, NCHW, no_grad, batches of 500): how many it gets right."""
    correct = 0
    with torch.no_grad():
        for start in range(0, len(indices), FORMER_BATCH):
            chunk = indices[start : start + FORMER_BATCH]
            correct += int((network(data.images[chunk].float() / 255).argmax(1) == data.labels[chunk]).sum())
    return correct


def _evaluate(folder: Path, dataset: str, precision: str) -> int:
    """A whole evaluate() call on the export's test split, loading included: how many it gets right."""
    result = evaluate(folder, dataset, precision=precision)
    return round(result["accuracy"] * result["images"])


def measure(folder: str, sample: int, repeats: int) -> dict:
    dataset = f"imagefolder:{folder}"
    data = load_dataset(dataset)  # decoded once into the cache that training reads too
    arch = fit_to_data(load_space(SPACE).sample_random(sample), data)
    out = _export(Path(tempfile.mkdtemp()), dataset, data, arch)
    network, meta = load_exported(out)
    split = split_dataset(data.labels, val_fraction=0.1, test_fraction=0.1, seed=0)
    inputs, labels = _inputs(data, split.test), data.labels[split.test]
    model = network.model.to(memory_format=torch.channels_last)
    precisions = sorted({cpu_precision(meta["trained_precision"]), "fp32"})  # the trial's where this CPU has it, and the graphs'
    arms = {}
    for p in precisions:
        arms[f"evaluate {p}"] = lambda p=p: _evaluate(out, dataset, p)
        arms[f"model {p}"] = lambda p=p: _model_alone(model, inputs, labels, p)
        _model_alone(model, inputs[:1024], labels[:1024], p)  # oneDNN builds its kernels once per precision and shape: not timed
    arms["former evaluate fp32"] = lambda: _former(network, data, split.test)
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in arms}
    correct = {}
    for repeat in range(repeats):
        for name in arms if repeat % 2 == 0 else reversed(arms):  # the order alternates too
            started, cpu_started = time.perf_counter(), time.process_time()
            correct[name] = arms[name]()
            seconds[name].append(time.perf_counter() - started)
            cpu_seconds[name].append(time.process_time() - cpu_started)
            print(f"repeat {repeat + 1}: {name}: {seconds[name][-1]:.1f} s ({cpu_seconds[name][-1]:.1f} s of CPU), "
                  f"{len(labels) / seconds[name][-1]:,.0f} img/s", flush=True)
    cost = profile(arch)

    def ratios(times: dict[str, list[float]]) -> dict[str, list[float]]:  # each evaluate over the model run next to it
        return {p: [e / m for e, m in zip(times[f"evaluate {p}"], times[f"model {p}"])] for p in precisions}

    return {"machine": machine(), "images": len(labels), "sample": sample, "arch": arch.model_dump(mode="json"), "params": cost.params,
            "macs": cost.macs, "batch": batch_size(inputs.shape[-2:]), "repeats": repeats, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "correct": correct, "ratios": ratios(seconds), "cpu_ratios": ratios(cpu_seconds)}


def table(report: dict) -> str:
    images, stages = report["images"], report["arch"]["stages"]
    layers = "/".join(str(stage["num_layers"]) for stage in stages)
    lines = [
        (f"`evaluate` of {images:,} CIFAR-10 test images (a tenth of each class of the training images, as a JPEG folder) with "
         f"sample {report['sample']} of spaces/densenet.yaml (growth {stages[0]['growth_rate']}, {layers} layers, "
         f"{report['params'] / 1e3:,.0f}K params, {report['macs'] / 1e6:,.0f}M MACs), against the same network's own batched inference "
         f"on the same images already in memory (normalized, channels_last, torch.inference_mode, batches of {report['batch']}, the "
         f"same precision). evaluate's time includes loading the model and the cached images. CPU: {report['machine']}, shared with "
         f"other work: the arms alternate, {report['repeats']} times each, and each evaluate is paired with the model run next to it. "
         "Wall time is what a user waits; CPU time (both threads) is less sensitive to the other work on the machine."),
        "",
        ("| arm | precision | median wall s | images/s | evaluate / model, wall: median of pairs (worst) | median CPU s | "
         "evaluate / model, CPU: median (worst) | correct |"),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def ratio(pairs: list[float] | None) -> str:
        return f"{statistics.median(pairs):.3f} ({max(pairs):.3f})" if pairs else ""

    for name, seconds in report["seconds"].items():
        arm, precision = name.rsplit(" ", 1)
        wall, cpu = statistics.median(seconds), statistics.median(report["cpu_seconds"][name])
        evaluated = arm == "evaluate"
        lines.append(f"| {arm} | {precision} | {wall:.1f} | {images / wall:,.0f} | {ratio(report['ratios'][precision] if evaluated else None)} "
                     f"| {cpu:.1f} | {ratio(report['cpu_ratios'][precision] if evaluated else None)} | {report['correct'][name]:,} |")
    lines.append("")
    for p, pairs in report["ratios"].items():
        lines.append(f"- {p}: evaluate takes {statistics.median(pairs):.2f}x the model's own wall time, "
                     f"{statistics.median(report['cpu_ratios'][p]):.2f}x its CPU time (target: at most 1.20x).")
    former = statistics.median(report["seconds"]["former evaluate fp32"])
    best = min(statistics.median(report["seconds"][f"evaluate {p}"]) for p in report["ratios"])
    lines.append(f"- evaluate runs {former / best:.2f}x as fast as the former loop (fp32, NCHW, no_grad, batches of {FORMER_BATCH}).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="an ImageFolder of CIFAR-sized images, e.g. the CIFAR-10 training JPEGs")
    parser.add_argument("--sample", type=int, default=2, help="which seeded sample of spaces/densenet.yaml (default 2)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    report = measure(args.folder, args.sample, args.repeats)
    write("evaluate", report, table(report), f"python benchmarks/evaluate.py PATH/TO/cifar10/train --sample {args.sample} --repeats {args.repeats}")


if __name__ == "__main__":
    main()
