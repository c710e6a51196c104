"""Measuring and using an exported model: how many images it classifies right, an accuracy as it
is recorded (which images, whether seen in training, a 95% interval), :func:`evaluate` on a data
set's split, and :func:`predict` on image files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ConfigError
from ..data import ImageData, load_dataset, load_test_split, split_dataset
from .formats import load_exported

__all__ = ["SPLITS", "accuracy", "count_correct", "evaluate", "predict"]

SPLITS = ("test", "val", "all")  # what `evaluate` measures on; test first, the default
_CONFIDENCE = 0.95


def count_correct(model: nn.Module, data: ImageData, indices: Tensor, batch_size: int = 500) -> int:
    """How many of the given images a Normalized model classifies right (top-1; uint8 -> [0, 1] float)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            logits = model(data.images[chunk].float() / 255)
            correct += int((logits.argmax(1) == data.labels[chunk]).sum())
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
    folder: str | Path, dataset: str | None = None, *, split: str = "test", cache_dir: str | None = None, data_dir: str | None = None
) -> dict[str, Any]:
    """Accuracy of an exported model on ``dataset`` (default: the one it was exported with).

    ``split``: ``test`` (the test split, which neither the search nor the export trained on),
    ``val`` (the export's validation split) or ``all`` (every image, the test images among them).
    The result says whether the model trained on those images (``seen_in_training``, true for
    ``all`` and, after retraining, for ``val``); an accuracy on unseen images has a 95% interval.

    Raises:
        ConfigError: not an export, an export without a test split, or another data set's classes.
    """
    if split not in SPLITS:
        raise ConfigError(f"split {split!r}: choose from {', '.join(SPLITS)}")
    network, meta = load_exported(folder)
    if "accuracies" not in meta:
        raise ConfigError(f"{folder}: exported before test splits were recorded; export the study again")
    name = dataset or meta["dataset"]["name"]
    data = load_dataset(name, cache_dir=cache_dir, data_dir=data_dir)
    if list(data.classes) != meta["class_names"]:
        raise ConfigError(f"{data.source}: its classes {list(data.classes)[:5]}... are not the model's {meta['class_names'][:5]}...")
    recorded = meta["split"]
    rebuilt = split_dataset(data.labels, val_fraction=recorded["val_fraction"], test_fraction=recorded["test_fraction"],
                            seed=recorded["seed"], subset=recorded["subset"])
    test_data, test_indices = load_test_split(name, data, rebuilt, cache_dir=cache_dir, data_dir=data_dir)
    if split == "test":
        parts = [(test_data, test_indices)]
    elif split == "val":
        parts = [(data, rebuilt.val)]
    else:  # every image once: the held-out test images are among the data's own, or elsewhere
        parts = [(data, torch.arange(len(data.labels)))] + ([] if test_data is data else [(test_data, test_indices)])
    correct = sum(count_correct(network, images, indices) for images, indices in parts)
    seen = split == "all" or split in meta["trained_on"]["splits"]
    result = accuracy(split, correct, sum(len(indices) for _, indices in parts), seen=seen, dataset=data.source)
    return result | {"recorded": meta["accuracies"][split]["accuracy"] if split in meta["accuracies"] else None}


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
