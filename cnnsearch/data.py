"""Datasets as uint8 tensors: decoded once, cached on disk, split with a seed, augmented in batches.

A data set has a test split that no search, re-evaluation or retraining sees: its own
test images (torchvision's CIFAR test sets, ``PATH/test`` of an image folder with
``train/`` and ``test/``), else a seeded, stratified share of its images held out
before the train/validation split.

A short trial cannot afford a per-image Python pipeline (PIL + DataLoader workers give
a few thousand images/s on two cores and take the cores from training). Here a data
set is decoded once into one ``uint8`` tensor, cached as ``.npy`` keyed by its source
and content, loaded in a fraction of a second, and augmented a few thousand images at a
time on the training device: random crop with padding, horizontal flip, normalization.
On CPU every trial of a node reads one copy: Ray's object store holds the images once,
and the trials index it rather than copy their share.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import ConfigError

_AUGMENT_CHUNK = 4096
_TRAIN, _TEST = "train", "test"  # the sub-folders of an image folder that has its own test images

__all__ = [
    "Batches",
    "ImageData",
    "Split",
    "augment",
    "chance_level",
    "default_cache_dir",
    "held_out_test_fraction",
    "load_dataset",
    "load_test_split",
    "split_dataset",
]

_CIFAR_STATS = {  # per-channel mean and std of the training images
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def default_cache_dir() -> Path:
    """``$CNNSEARCH_CACHE``, else ``$XDG_CACHE_HOME/cnnsearch``, else ``~/.cache/cnnsearch``."""
    if "CNNSEARCH_CACHE" in os.environ:
        return Path(os.environ["CNNSEARCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cnnsearch"


@dataclass(frozen=True)
class ImageData:
    """A whole data set in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    source: str
    key: str  # content key: equal keys, equal data
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "key": self.key, "images": len(self.labels), "classes": list(self.classes)}

    def __reduce__(self) -> tuple[Any, ...]:
        # As numpy arrays, Ray's object store holds the images once per node and every trial
        # there reads them in place (a torch tensor would be copied into each worker).
        arrays = (self.images.numpy(), self.labels.numpy())
        return _from_arrays, (*arrays, self.classes, self.source, self.key, self.mean, self.std)


def _from_arrays(images: np.ndarray, labels: np.ndarray, *fields: Any) -> ImageData:
    with warnings.catch_warnings():
        # Ray hands over read-only views of its shared memory; nothing here writes to them.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return ImageData(torch.from_numpy(images), torch.from_numpy(labels), *fields)


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    sample = images[:: max(1, len(images) // 10000)]  # every k-th image is plenty
    # Exact integer sums, 256K values at a time: the sample in float64 would be 8 times the images' own size.
    total = squares = torch.zeros(images.shape[1], dtype=torch.int64)
    rows = max(1, 2**18 // images[0].numel())
    for start in range(0, len(sample), rows):
        chunk = sample[start : start + rows].to(torch.int32)
        total, squares = total + chunk.sum((0, 2, 3)), squares + chunk.square_().sum((0, 2, 3))
    count = sample.numel() // images.shape[1]
    mean = total.double() / count / 255
    variance = (squares.double() / 255**2 - count * mean.square()) / (count - 1)  # unbiased, as Tensor.std
    return tuple(mean.tolist()), tuple(variance.sqrt().tolist())


def _synthetic(count: int = 2000, classes: int = 10, size: int = 32, seed: int = 0) -> tuple[Tensor, Tensor, list[str]]:
    """Learnable random images: each class has its own smooth colour pattern, under noise."""
    generator = torch.Generator().manual_seed(seed)
    # Smooth patterns survive the random crops and flips of augmentation; pixel noise would not.
    patterns = F.interpolate(torch.rand(classes, 3, 2, 2, generator=generator), size=size, mode="bilinear") * 255
    labels = torch.arange(count) % classes
    noise = torch.randn(count, 3, size, size, generator=generator) * 40
    images = (patterns[labels] * 0.7 + 40 + noise).clamp(0, 255).to(torch.uint8)
    return images, labels, [f"class{i}" for i in range(classes)]


def _torchvision_cifar(name: str, root: Path, train: bool) -> tuple[Tensor, Tensor, list[str]]:
    from torchvision import datasets

    dataset_class = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        dataset = dataset_class(root=str(root), train=train, download=True)
    except (OSError, RuntimeError) as error:
        raise ConfigError(
            f"{name}: cannot download into {root} ({error.__class__.__name__}: {error}); offline, put torchvision's "
            f"copy there with --data-dir DIR, or point --dataset imagefolder:PATH at the images"
        ) from None
    images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(dataset.targets, dtype=torch.int64), list(dataset.classes)


def _split_folders(folder: Path) -> tuple[Path, Path] | None:
    """``folder/train`` and ``folder/test`` when the folder has both, else None (a plain class-folder tree)."""
    train, test = folder / _TRAIN, folder / _TEST
    return (train, test) if train.is_dir() and test.is_dir() else None


def _classes(folder: Path) -> list[str]:
    from torchvision.datasets.folder import find_classes

    if not folder.is_dir():
        raise ConfigError(f"imagefolder:{folder}: no such folder")
    try:
        return find_classes(folder)[0]
    except FileNotFoundError:
        raise ConfigError(f"imagefolder:{folder}: no class sub-folders (expected {folder}/CLASS/IMAGE.jpg)") from None


def _scan_folder(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, label) of every image in ``folder``'s class sub-folders, labelled by their place in ``classes``."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    samples = make_dataset(folder, {name: index for index, name in enumerate(classes)}, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise ConfigError(f"imagefolder:{folder}: no images in its class sub-folders ({', '.join(IMG_EXTENSIONS)})")
    return samples


def _decode(path: str) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            array = np.array(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ConfigError(f"{path}: cannot decode image ({error.__class__.__name__}: {error})") from None
    return torch.from_numpy(array).permute(2, 0, 1)


def _decode_folder(samples: list[tuple[str, int]]) -> tuple[Tensor, Tensor]:
    first = _decode(samples[0][0])
    # Each image is decoded straight into its row: at its peak, decoding holds one copy of the data set.
    images = torch.empty((len(samples), *first.shape), dtype=torch.uint8)

    def fill(index: int) -> None:
        path = samples[index][0]
        image = first if index == 0 else _decode(path)
        if image.shape != first.shape:
            raise ConfigError(f"{path}: image is {tuple(image.shape[1:])}, others are {tuple(first.shape[1:])}; all must be one size")
        images[index] = image

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:  # Pillow releases the GIL while decoding
        for _ in pool.map(fill, range(len(samples)), chunksize=256):
            pass  # raises the first error
    return images, torch.tensor([label for _, label in samples], dtype=torch.int64)


def _folder_key(folder: Path, samples: list[tuple[str, int]]) -> str:
    # Names, sizes and modification times stand for the content: hashing every byte of
    # 50,000 files would cost more than the cache saves.
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for path, label in samples:
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, folder)}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _read_cache(entry: Path) -> ImageData | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
        # Copy-on-write memory map: only the pages a trial indexes are read.
        images = torch.from_numpy(np.load(entry / "images.npy", mmap_mode="c"))
        labels = torch.from_numpy(np.load(entry / "labels.npy"))
    except (OSError, ValueError):
        return None
    return ImageData(images, labels, tuple(meta["classes"]), meta["source"], meta["key"], tuple(meta["mean"]), tuple(meta["std"]))


def _write_cache(entry: Path, data: ImageData) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".staging-"))
    np.save(staging / "images.npy", data.images.numpy())
    np.save(staging / "labels.npy", data.labels.numpy())
    meta = {"source": data.source, "key": data.key, "classes": list(data.classes), "mean": data.mean, "std": data.std}
    (staging / "meta.json").write_text(json.dumps(meta))
    try:
        staging.rename(entry)  # atomic: concurrent trials never see half a cache entry
    except OSError:
        shutil.rmtree(staging)  # another process wrote it first


def _image_folder(name: str, train: bool) -> tuple[Path, list[str]]:
    """The folder of ``imagefolder:PATH``'s training (or test) images, and the classes that label them: the training images'."""
    path = Path(name.removeprefix("imagefolder:")).expanduser()
    folders = _split_folders(path)
    if folders is None:
        if not train:
            raise ConfigError(f"{name}: no test images of its own (a folder with {_TRAIN}/ and {_TEST}/ has them)")
        return path, _classes(path)
    classes = _classes(folders[0])
    if not train:
        unknown = sorted(set(_classes(folders[1])) - set(classes))
        if unknown:
            raise ConfigError(f"imagefolder:{folders[1]}: classes {', '.join(unknown)} are not among those of {folders[0]}")
    return folders[0] if train else folders[1], classes


def load_dataset(
    name: str, *, train: bool = True, cache_dir: str | Path | None = None, data_dir: str | Path | None = None
) -> ImageData:
    """Load a data set's training images (or, with ``train=False``, its own test images), decoding them only the first time.

    Args:
        name: ``cifar10``, ``cifar100`` (torchvision, downloaded into ``data_dir``),
            ``imagefolder:PATH`` (torchvision's ImageFolder layout: ``PATH/CLASS/IMAGE``,
            or ``PATH/train/CLASS/IMAGE`` and ``PATH/test/CLASS/IMAGE``; all images one
            size) or ``synthetic`` (2,000 learnable random 32x32 images).
        train: the training images (of ``PATH/train`` when the folder has ``train/`` and
            ``test/``); False for the test images: torchvision's CIFAR test set, or
            ``PATH/test`` labelled with ``PATH/train``'s classes.
        cache_dir: where decoded tensors are kept; default :func:`default_cache_dir`.
        data_dir: where torchvision's CIFAR files are or go; default ``cache_dir/torchvision``.

    Raises:
        ConfigError: unknown name, missing or empty folder, no class sub-folders, an image
            that does not decode (its path is named), offline a download that fails, test
            images asked of a data set without any, or test classes that training lacks.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    part = _TRAIN if train else _TEST
    if name == "synthetic":
        if not train:
            raise ConfigError(f"{name}: no test images of its own; its test split is held out (dataset.test_fraction)")
        images, labels, classes = _synthetic()
        return ImageData(images, labels, tuple(classes), name, "synthetic-v2", *_channel_stats(images))
    if name in _CIFAR_STATS:
        entry = cache / f"{name}-{part}"
        if (cached := _read_cache(entry)) is not None:
            return cached
        images, labels, classes = _torchvision_cifar(name, Path(data_dir) if data_dir else cache / "torchvision", train)
        data = ImageData(images, labels, tuple(classes), name if train else f"{name} ({part})", f"{name}-{part}", *_CIFAR_STATS[name])
    elif name.startswith("imagefolder:") and len(name) > len("imagefolder:"):
        folder, classes = _image_folder(name, train)
        samples = _scan_folder(folder, classes)
        key = _folder_key(folder, samples)
        entry = cache / f"imagefolder-{key}"
        if (cached := _read_cache(entry)) is not None:
            return cached
        images, labels = _decode_folder(samples)
        data = ImageData(images, labels, tuple(classes), f"imagefolder:{folder.resolve()}", key, *_channel_stats(images))
    else:
        raise ConfigError(f"unknown dataset {name!r}; use cifar10, cifar100, synthetic or imagefolder:PATH")
    _write_cache(entry, data)
    return data


def held_out_test_fraction(name: str, test_fraction: float) -> float:
    """The share of ``name``'s training images to hold out as its test split: none when it has test images of its own."""
    own = name in _CIFAR_STATS or (name.startswith("imagefolder:") and _split_folders(Path(name.removeprefix("imagefolder:")).expanduser()))
    return 0.0 if own else test_fraction


@dataclass(frozen=True)
class Split:
    """Indices of the training, validation and held-out test images, and how they were drawn."""

    train: Tensor
    val: Tensor
    test: Tensor  # held out before train and validation; empty when the data set has test images of its own
    seed: int
    val_fraction: float
    test_fraction: float
    subset: int | None
    val_subset: int | None = None  # validation on this many of the held-out images

    def describe(self) -> dict[str, Any]:
        return {
            "train_images": len(self.train),
            "val_images": len(self.val),
            "test_images": len(self.test),
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "subset": self.subset,
            "val_subset": self.val_subset,
            "val_digest": _digest(self.val),
            "test_digest": _digest(self.test),
        }


def _digest(indices: Tensor) -> str:
    return hashlib.sha256(indices.numpy().tobytes()).hexdigest()[:16]


def split_dataset(
    labels: Tensor,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
    subset: int | None = None,
    val_subset: int | None = None,
) -> Split:
    """A stratified, seeded test/train/validation split; the same arguments give the same split on any run.

    ``test_fraction`` of each class is held out first, as the test split; the default, 0,
    holds out nothing and gives the train/validation split of a data set whose test
    images are elsewhere (:func:`held_out_test_fraction` says which). The test images
    depend on the labels, the seed and ``test_fraction`` only. ``val_fraction`` of each
    class's remaining images are the validation split, the rest are for training.

    ``subset`` keeps that many training images, a seeded random sample (a smaller subset is
    part of a larger one); the validation images stay the same, so short and long trials
    are compared on the same images. ``val_subset`` validates on that many of the held-out
    images, a seeded sample that does not depend on ``subset``: a search's validations cost
    less, and the training images are the same as without it.
    """
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction must be at least 0 and below 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    labels_np = labels.numpy()
    train, val, test = [], [], []
    for label in np.unique(labels_np):
        # One permutation per class: the test images come first, so they do not depend on val_fraction,
        # and without a test hold-out the split is the one of earlier versions.
        members = rng.permutation(np.flatnonzero(labels_np == label))
        tested = int(round(len(members) * test_fraction))
        held_out = tested + int(round((len(members) - tested) * val_fraction))
        test.append(members[:tested])
        val.append(members[tested:held_out])
        train.append(members[held_out:])
    train_idx, val_idx, test_idx = rng.permutation(np.concatenate(train)), np.sort(np.concatenate(val)), np.sort(np.concatenate(test))
    if test_fraction and not len(test_idx):
        raise ConfigError(f"test_fraction {test_fraction} of {len(labels_np):,} images holds out none; raise it")
    if subset is not None:
        if subset > len(train_idx):
            raise ConfigError(f"subset {subset:,} is larger than the {len(train_idx):,} training images")
        train_idx = train_idx[:subset]
    if val_subset is not None:
        if val_subset > len(val_idx):
            raise ConfigError(f"val_subset {val_subset:,} is larger than the {len(val_idx):,} validation images")
        val_idx = np.sort(val_idx[np.random.default_rng(seed).permutation(len(val_idx))[:val_subset]])
    return Split(torch.from_numpy(np.sort(train_idx)), torch.from_numpy(val_idx), torch.from_numpy(test_idx), seed, val_fraction,
                 test_fraction, subset, val_subset)


def load_test_split(name: str, data: ImageData, split: Split, *, cache_dir: str | Path | None = None,
                data_dir: str | Path | None = None) -> tuple[ImageData, Tensor]:
    """The test split of data set ``name``: the images ``split`` held out of ``data``, or the data set's own test images.

    Raises:
        ConfigError: the split held none out, and the data set has no test images of its own.
    """
    if split.test_fraction > 0:
        return data, split.test
    own = load_dataset(name, train=False, cache_dir=cache_dir, data_dir=data_dir)
    return own, torch.arange(len(own.labels))


def chance_level(labels: Tensor) -> float:
    """The accuracy of always answering the most common class among ``labels``."""
    return torch.bincount(labels).max().item() / len(labels)


def augment(images: Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True) -> Tensor:
    """Random crop (as from an image zero-padded by ``padding``) and, with ``flip``, horizontal flip of a uint8 batch.

    A fixed few tensor operations whatever the batch holds, none of which waits for the
    device (no ``.tolist()``, no loop over drawn values): on a GPU the crops and flips are
    queued behind training instead of stalling it. The result keeps a ``channels_last``
    input's memory format, else it is contiguous.
    """
    count, channels, height, width = images.shape
    span, padded_width = 2 * padding + 1, width + 2 * padding
    # One draw per image: translation (dy, dx) and flip, encoded as flip * span^2 + dy * span + dx;
    # the draw of earlier versions, so a seed still gives the same crops and flips.
    draws = torch.randint(0, 2 * span * span, (count,), generator=generator, device=images.device)
    # Without flips the draw stays the same, so a seed gives the same crops either way.
    flipped, shift = draws // (span * span) * flip, draws % (span * span)
    # Output pixel (y, x) is padded pixel (y + dy, x + dx), or (y + dy, dx + width - 1 - x) when
    # flipped (the mirror image of the crop): counted from the start of padded row y, pixel
    # dy * padded_width + dx + x (or + width - 1 - x), one number per image and column.
    columns = torch.arange(width, device=images.device)
    columns = torch.where(flipped[:, None].bool(), columns.flip(0), columns)
    source = (shift // span * padded_width + shift % span)[:, None] + columns
    channels_last = not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    padded = F.pad(images, (padding, padding, padding, padding)).contiguous(memory_format=memory_format)
    # rows[n, c, y, t]: pixel t of image n's padded channel c counted from the start of row y (in
    # both memory formats a row's stride is padded_width columns'). Overlapping rows, a view: one
    # gather crops and flips with that small index, where a per-pixel index (32 MiB of int64 for
    # 4,096 images) would cost more than the gather itself on CPU.
    rows = padded.as_strided((count, channels, height, span * padded_width), padded.stride())
    out = torch.empty_like(images, memory_format=memory_format)
    return torch.gather(rows, 3, source[:, None, None, :].expand(count, channels, height, width), out=out)


class Batches:
    """Batches of a data set resident on the training device, normalized to float.

    Args:
        data: the data set. On CPU its images are read in place, a chunk at a time; on a GPU
            the ``indices``' images are copied there once.
        indices: which images to use (a :class:`Split`'s ``train`` or ``val``).
        batch_size: images per batch; the last, smaller batch is kept unless it has fewer
            than ``min_batch`` images.
        min_batch: the smallest last batch to keep. Batches that run a network in training
            mode (training, BN re-estimation) take 2: batch norm needs two values per channel,
            which a network that reaches 1x1 before a norm lacks in a batch of one image.
        train: shuffle and augment (crop + flip) every epoch.
        crop_padding, flip: the augmentation, as :func:`augment` takes it.
        seed: seed of the shuffling and augmentation.
        dtype: float type of the batches; ``channels_last`` memory format if asked.
    """

    def __init__(
        self,
        data: ImageData,
        indices: Tensor,
        *,
        batch_size: int,
        device: torch.device | str = "cpu",
        train: bool,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        crop_padding: int = 4,
        flip: bool = True,
        min_batch: int = 1,
    ) -> None:
        self.device = torch.device(device)
        self.crop_padding, self.flip = crop_padding, flip
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if self.device.type == "cpu":
            self.images, self.rows = data.images, indices  # shared by every trial of the node
        else:
            self.images, self.rows = data.images[indices].to(self.device).contiguous(memory_format=self.memory_format), None
        self.labels = data.labels[indices].to(self.device)
        self.batch_size = batch_size
        # A remainder too small to keep is left out: in training it is a different few images each epoch.
        remainder = len(self.labels) % batch_size
        self.count = len(self.labels) - (remainder if remainder < min_batch and len(self.labels) > batch_size else 0)
        self.train = train
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.dtype = dtype
        mean = torch.tensor(data.mean, device=self.device) * 255
        inv_std = 1 / (torch.tensor(data.std, device=self.device) * 255)
        if channels_last:  # per row of W pixels x C channels, see _normalize
            mean, inv_std = mean.repeat(data.image_size), inv_std.repeat(data.image_size)
        else:
            mean, inv_std = mean.view(-1, 1, 1), inv_std.view(-1, 1, 1)
        self.mean, self.inv_std = mean.to(dtype), inv_std.to(dtype)

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        count = self.count
        if not self.train:
            for start in range(0, count, self.batch_size):
                batch = slice(start, start + self.batch_size)
                yield self._normalize(self._take(batch)), self.labels[batch]
            return
        order = torch.randperm(len(self.labels), generator=self.generator, device=self.device)[:count]
        # Augment a few thousand images at a time: few, large tensor operations, bounded memory.
        chunk = max(self.batch_size, _AUGMENT_CHUNK // self.batch_size * self.batch_size)
        for chunk_start in range(0, count, chunk):
            chosen = order[chunk_start : chunk_start + chunk]
            images = augment(self._take(chosen).contiguous(memory_format=self.memory_format), self.generator, self.crop_padding, self.flip)
            labels = self.labels[chosen]
            for start in range(0, len(chosen), self.batch_size):
                yield self._normalize(images[start : start + self.batch_size]), labels[start : start + self.batch_size]

    def _take(self, which: Tensor | slice) -> Tensor:
        """uint8 images by position among ``indices``."""
        return self.images[which] if self.rows is None else self.images[self.rows[which]]

    def _normalize(self, images: Tensor) -> Tensor:
        if self.memory_format is torch.contiguous_format:
            return images.to(self.dtype).sub_(self.mean).mul_(self.inv_std)
        # NHWC memory seen as rows of W x C values: the constants broadcast along a long
        # innermost axis (2.4x faster than along an axis of 3 channels).
        count, channels, height, width = images.shape
        rows = images.permute(0, 2, 3, 1).reshape(count * height, width * channels)
        normalized = rows.to(self.dtype).sub_(self.mean).mul_(self.inv_std)
        return normalized.view(count, height, width, channels).permute(0, 3, 1, 2)
