"""Measuring and using an exported model: how many images it classifies right, in the precision
it trained in and as fast as the model runs (:func:`measure`, which says so as it goes), an
accuracy as it is recorded (which images, whether seen in training, in what precision, a 95%
interval), :func:`evaluate` on a data set's split, and :func:`predict` on image files.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import torch
from torch import Tensor, nn

from ..config import ConfigError, Recipe
from ..data import ImageData, load_dataset, load_test_split, split_dataset
from ..train import CHANNELS_LAST_DEFAULT, autocast, image_bar, resolve_precision
from .formats import load_exported

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["GRAPH_PRECISION", "PRECISIONS", "SPLITS", "SPLIT_IMAGES", "accuracy", "batch_size", "count_correct", "cpu_precision",
           "evaluate", "measure", "precision_line", "predict"]

SPLITS = ("test", "val", "all")  # what `evaluate` measures on; test first, the default
SPLIT_IMAGES = {"test": "test images", "val": "validation images", "all": "images"}  # each split's, in a line that says them
GRAPH_PRECISION = "fp32"  # what the exported graphs (weights.pt, model.pt2, model.onnx) compute in
PRECISIONS = tuple(p for p in get_args(Recipe.model_fields["precision"].annotation) if p != "auto")  # bf16, fp16, fp32
_CONFIDENCE = 0.95
# Pixels per forward pass: 512 CIFAR-sized images. On the 2-core development CPU a small
# DenseNet (spaces/densenet.yaml) ran 1.3x faster in batches of 512 than of 256, 3x faster
# than of 64, and no faster in batches of 1,024; in pixels, a larger image's batch holds the
# same activations, which stay within a laptop's memory.
_BATCH_PIXELS = 512 * 32 * 32


def count_correct(network: nn.Module, data: ImageData, indices: Tensor, *, precision: str = GRAPH_PRECISION,
                  bar: tqdm | None = None) -> int:
    """How many of the given images a :class:`~.formats.Normalized` network classifies right (top-1; uint8 -> [0, 1] float).

    Run as training runs the model, which is as fast as it runs: in ``precision``'s autocast
    (bf16, fp16 or fp32), in the trainer's memory format (channels_last), in inference mode.
    ``bar``, if given, advances by each batch's images. ``network`` itself is left as it was.
    """
    memory_format = torch.channels_last if CHANNELS_LAST_DEFAULT else torch.contiguous_format
    network = copy.deepcopy(network).eval().to(memory_format=memory_format)  # the caller's may be exported next
    run_in = autocast(precision, torch.device("cpu"))
    correct = torch.zeros((), dtype=torch.int64)  # summed as a tensor: no per-batch .item()
    batch = batch_size(data.images.shape[-2:])
    with torch.inference_mode():
        for start in range(0, len(indices), batch):
            chunk = indices[start : start + batch]
            images = data.images[chunk].contiguous(memory_format=memory_format).float().div_(255)
            with run_in():
                logits = network(images)
            correct += (logits.argmax(1) == data.labels[chunk]).sum()
            if bar is not None:
                bar.update(len(chunk))
    return int(correct)


def cpu_precision(trained_in: str | None) -> str:
    """The precision to measure a model that trained in ``trained_in`` (None: not recorded) in, on this CPU.

    Its own where this CPU computes it natively (bf16 with AVX-512 BF16 or AMX) or it is fp32,
    so that the figure is the one training would have measured; else fp32, the exported graphs'
    own: emulated, bf16 runs many times slower than fp32.
    """
    native = resolve_precision("auto", torch.device("cpu"))
    return trained_in if trained_in in (native, GRAPH_PRECISION) else GRAPH_PRECISION


def precision_line(precision: str, trained_in: str | None, who: str, *, asked: bool = False) -> str:
    """One line: the precision a measurement runs in, and why; ``who`` trained in ``trained_in`` (None: not recorded).

    A figure in another precision than the one training validated in may differ from it by a
    few images: the line says so wherever that is the case.
    """
    if asked:
        return f"measuring in {precision}, as asked; {who} trained in {trained_in or 'a precision not recorded'}"
    if trained_in is None:
        return (f"measuring in {precision}, the exported graphs' precision: {who} recorded no precision of its own, "
                "and its own figures may differ by a few images")
    if precision != trained_in:
        return (f"measuring in {precision}, the exported graphs' precision: {who} trained in {trained_in}, which this CPU "
                "does not compute natively, and its own figures may differ by a few images")
    if precision == GRAPH_PRECISION:
        return f"measuring in {precision}, the precision {who} trained in and the exported graphs compute in"
    return (f"measuring in {precision}, the autocast {who} trained and validated in; the exported graphs compute in "
            f"{GRAPH_PRECISION}, whose figure may differ by a few images")


def batch_size(image_size: tuple[int, int] | torch.Size) -> int:
    """Images per forward pass of evaluation: 512 of 32x32, fewer of larger images."""
    height, width = image_size
    return max(1, _BATCH_PIXELS // (height * width))


def measure(network: nn.Module, parts: list[tuple[ImageData, Tensor]], *, precision: str, what: str,
            say: Callable[[str], None] | None) -> int:
    """:func:`count_correct` over ``parts`` (data sets and their images' indices), said as it goes.

    With ``say``: a line naming the images (``what``: "test images") and the precision, a bar
    of images on stderr while they run, and a line with their rate. None: silent.
    """
    images = sum(len(indices) for _, indices in parts)
    if say is None:
        return sum(count_correct(network, data, indices, precision=precision) for data, indices in parts)
    say(f"evaluating on {images:,} {what} in {precision}")
    bar = image_bar(images)
    started = time.perf_counter()
    correct = sum(count_correct(network, data, indices, precision=precision, bar=bar) for data, indices in parts)
    bar.close()
    seconds = time.perf_counter() - started
    say(f"  {images:,} {what} in {seconds:,.1f} s: {images / seconds:,.0f} img/s")
    return correct


def accuracy(split: str, correct: int, images: int, *, seen: bool, **about: Any) -> dict[str, Any]:
    """A recorded accuracy: the images it comes from, whether the model trained on them, and for unseen ones a 95% interval.

    The interval is Wilson's score interval for a proportion (Wilson 1927), which keeps its
    coverage at a few dozen images and near 0% or 100%, where the normal approximation does not.
    An accuracy on training images estimates nothing about new images: it gets no interval.
    """
    from scipy.stats import binomtest

    if seen:
        interval = None
    else:
        bounds = binomtest(correct, images).proportion_ci(confidence_level=_CONFIDENCE, method="wilson")
        interval = {"low": bounds.low, "high": bounds.high, "confidence": _CONFIDENCE, "method": "wilson"}
    return {"accuracy": correct / images, "interval": interval, "split": split, "images": images, "seen_in_training": seen, **about}


def evaluate(
    folder: str | Path, dataset: str | None = None, *, split: str = "test", precision: str | None = None,
    cache_dir: str | None = None, data_dir: str | None = None, say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Accuracy of an exported model on ``dataset`` (default: the one it was exported with).

    ``split``: ``test`` (the test split, which neither the search nor the export trained on),
    ``val`` (the export's validation split) or ``all`` (every image, the test images among them).
    The result says whether the model trained on those images (``seen_in_training``, true for
    ``all`` and, after retraining, for ``val``); an accuracy on unseen images has a 95% interval.
    ``precision`` (bf16, fp16, fp32): what the model computes in; default the one it trained in,
    as its export recorded it, where this CPU computes it natively (:func:`cpu_precision`), else
    fp32, the exported graphs' own. ``recorded`` is the accuracy its
    export measured on the same split in the same precision, if it did. ``say``: where the
    phases go, each a line (and a bar of images while the model runs); None: silent.

    Raises:
        ConfigError: not an export, an export without a test split, another data set's classes, or an unknown precision.
    """
    if split not in SPLITS:
        raise ConfigError(f"split {split!r}: choose from {', '.join(SPLITS)}")
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    network, meta = load_exported(folder)
    if "accuracies" not in meta:
        raise ConfigError(f"{folder}: exported before test splits were recorded; export the study again")
    tell = say or _silent
    trained_in = meta.get("trained_precision")  # an export that recorded none measured in fp32
    asked, precision = precision is not None, precision or cpu_precision(trained_in)
    line = precision_line(precision, trained_in, "the model", asked=asked)
    name = dataset or meta["dataset"]["name"]
    tell(f"loading {name}")
    data, parts = _parts(meta, name, split, cache_dir, data_dir)
    tell(line + ("" if precision == GRAPH_PRECISION else ": --precision fp32 measures it"))
    correct = measure(network, parts, precision=precision, what=SPLIT_IMAGES[split], say=say)
    seen = split == "all" or split in meta["trained_on"]["splits"]
    result = accuracy(split, correct, sum(len(indices) for _, indices in parts), seen=seen, dataset=data.source, precision=precision)
    return result | {"recorded": _recorded(meta["accuracies"], split, precision)}


def _silent(line: str) -> None:
    """Says nothing: the phases of a caller that asked for none."""


def _parts(meta: dict[str, Any], name: str, split: str, cache_dir: str | None,
           data_dir: str | None) -> tuple[ImageData, list[tuple[ImageData, Tensor]]]:
    """The data set, and the images of ``split`` as the export's split drew them: (data, indices) pairs.

    Raises:
        ConfigError: the data set's classes are not the model's.
    """
    data = load_dataset(name, cache_dir=cache_dir, data_dir=data_dir)
    if list(data.classes) != meta["class_names"]:
        raise ConfigError(f"{data.source}: its classes {list(data.classes)[:5]}... are not the model's {meta['class_names'][:5]}...")
    recorded = meta["split"]
    rebuilt = split_dataset(data.labels, val_fraction=recorded["val_fraction"], test_fraction=recorded["test_fraction"],
                            seed=recorded["seed"], subset=recorded["subset"])
    test_data, test_indices = load_test_split(name, data, rebuilt, cache_dir=cache_dir, data_dir=data_dir)
    if split == "test":
        return data, [(test_data, test_indices)]
    if split == "val":
        return data, [(data, rebuilt.val)]
    # every image once: the held-out test images are among the data's own, or elsewhere
    return data, [(data, torch.arange(len(data.labels)))] + ([] if test_data is data else [(test_data, test_indices)])


def _recorded(accuracies: dict[str, Any], split: str, precision: str) -> float | None:
    """The accuracy an export measured on ``split`` in ``precision``; None where it measured none.

    Not the search's estimate: that was of the trial, not of the exported model. An export
    that recorded no precision measured in fp32.
    """
    for key, measured in accuracies.items():
        if key != "search" and measured["split"] == split and measured.get("precision", GRAPH_PRECISION) == precision:
            return measured["accuracy"]
    return None


def predict(folder: str | Path, images: list[str | Path], top: int = 3) -> list[list[tuple[str, float]]]:
    """The ``top`` classes and probabilities of each image file (resized to the model's input size).

    Raises:
        ConfigError: an image is missing or cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    network, meta = load_exported(folder)
    size, channels = meta["input_size"], meta["input"]["shape"][1]
    batch = []
    for path in images:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB" if channels == 3 else "L")
                if image.size != (size, size):
                    image = image.resize((size, size), Image.BILINEAR)
                pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        except (OSError, UnidentifiedImageError) as error:
            raise ConfigError(f"{path}: cannot read image ({error})") from None
        batch.append(pixels.view(size, size, channels).permute(2, 0, 1).float() / 255)
    with torch.no_grad():
        probabilities = network(torch.stack(batch)).softmax(1)
    best = probabilities.topk(min(top, probabilities.shape[1]), dim=1)
    names = meta["class_names"]
    return [[(names[i], float(p)) for p, i in zip(values, indices)] for values, indices in zip(best.values, best.indices)]
