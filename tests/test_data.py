"""Data sets: decoded once and cached, split with a seed, augmented in batches."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import numpy as np
import torch
from PIL import Image

from cnnsearch import ConfigError
from cnnsearch.data import Batches, augment, held_out_test_fraction, load_dataset, load_test_split, split_dataset

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def write_png(image: torch.Tensor, path: str) -> None:
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)


def make_folder(root, classes=("cat", "dog", "frog"), per_class=6, size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator)
            if i % 2:
                write_png(image, str(root / name / f"{i}.png"))
            else:
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / name / f"{i}.jpg", quality=95)
    return root


def test_synthetic_is_learnable_shape():
    data = load_dataset("synthetic")
    assert data.images.shape == (2000, 3, 32, 32) and data.images.dtype == torch.uint8
    assert len(data.classes) == 10 and set(data.labels.tolist()) == set(range(10))


def test_imagefolder_decodes_once_then_reads_the_cache(tmp_path):
    folder = make_folder(tmp_path / "images")
    cache = tmp_path / "cache"
    first = load_dataset(f"imagefolder:{folder}", cache_dir=cache)
    assert first.images.shape == (18, 3, 8, 8) and first.classes == ("cat", "dog", "frog")
    assert first.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    # Overwrite an image with garbage of the same size and time: only a cache hit can still load.
    victim = folder / "cat" / "1.png"
    stat = victim.stat()
    victim.write_bytes(b"\0" * stat.st_size)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = load_dataset(f"imagefolder:{folder}", cache_dir=cache)
    assert torch.equal(second.images, first.images) and second.key == first.key


def test_changed_folder_gets_a_new_cache_entry(tmp_path):
    folder = make_folder(tmp_path / "images")
    cache = tmp_path / "cache"
    first = load_dataset(f"imagefolder:{folder}", cache_dir=cache)
    write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(folder / "dog" / "extra.png"))
    second = load_dataset(f"imagefolder:{folder}", cache_dir=cache)
    assert second.key != first.key and len(second.labels) == 19


def test_png_is_lossless_through_the_pipeline(tmp_path):
    folder = tmp_path / "images"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    image = torch.randint(0, 256, (3, 5, 5), dtype=torch.uint8)
    write_png(image, str(folder / "a" / "x.png"))
    write_png(image.flip(2), str(folder / "b" / "y.png"))
    data = load_dataset(f"imagefolder:{folder}", cache_dir=tmp_path / "cache")
    assert torch.equal(data.images[0], image) and torch.equal(data.images[1], image.flip(2))


@pytest.mark.parametrize(
    "setup, expected",
    [
        (lambda root: None, "no such folder"),
        (lambda root: root.mkdir(), "no class sub-folders"),
        (lambda root: (root / "cat").mkdir(parents=True), "no images in its class sub-folders"),
        (lambda root: (root.mkdir(), (root / "loose.png").write_bytes(b"x")), "no class sub-folders"),
    ],
    ids=["missing", "empty", "classes without images", "images without classes"],
)
def test_bad_folders(tmp_path, setup, expected):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(ConfigError, match=expected):
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")


def test_corrupt_image_is_named(tmp_path):
    folder = make_folder(tmp_path / "images")
    (folder / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ConfigError, match=r"dog/broken.jpg: cannot decode image"):
        load_dataset(f"imagefolder:{folder}", cache_dir=tmp_path / "cache")


def test_images_of_different_sizes_are_refused(tmp_path):
    folder = make_folder(tmp_path / "images")
    write_png(torch.zeros(3, 9, 9, dtype=torch.uint8), str(folder / "frog" / "big.png"))
    with pytest.raises(ConfigError, match=r"frog/big.png: image is \(9, 9\), others are \(8, 8\)"):
        load_dataset(f"imagefolder:{folder}", cache_dir=tmp_path / "cache")


def test_split_is_stratified_seeded_and_stable():
    labels = torch.arange(1000) % 10
    split = split_dataset(labels, val_fraction=0.1, seed=0)
    assert len(split.val) == 100 and len(split.train) == 900
    assert set(split.val.tolist()).isdisjoint(split.train.tolist())
    assert torch.bincount(labels[split.val]).tolist() == [10] * 10
    again = split_dataset(labels, val_fraction=0.1, seed=0)
    assert torch.equal(again.val, split.val) and torch.equal(again.train, split.train)
    assert not torch.equal(split_dataset(labels, seed=1).val, split.val)
    small = split_dataset(labels, seed=0, subset=200)
    assert len(small.train) == 200 and torch.equal(small.val, split.val)
    assert set(small.train.tolist()) <= set(split.train.tolist())
    assert split.describe()["val_digest"] == again.describe()["val_digest"]
    with pytest.raises(ConfigError, match="subset 5,000 is larger than the 900 training images"):
        split_dataset(labels, subset=5000)
    sampled = split_dataset(labels, seed=0, subset=200, val_subset=30)
    assert torch.equal(sampled.train, small.train) and len(sampled.val) == 30 and set(sampled.val.tolist()) <= set(split.val.tolist())
    assert torch.equal(split_dataset(labels, seed=0, val_subset=30).val, sampled.val)  # whatever the training subset
    with pytest.raises(ConfigError, match="val_subset 101 is larger than the 100 validation images"):
        split_dataset(labels, val_subset=101)


def test_test_split_is_held_out_first_stratified_seeded_and_stable():
    labels = torch.arange(1000) % 10
    split = split_dataset(labels, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert (len(split.test), len(split.val), len(split.train)) == (200, 80, 720)  # validation: a share of what the test left
    assert torch.bincount(labels[split.test]).tolist() == [20] * 10 and torch.bincount(labels[split.val]).tolist() == [8] * 10
    test = set(split.test.tolist())
    assert test.isdisjoint(split.train.tolist()) and test.isdisjoint(split.val.tolist())
    assert len(test | set(split.train.tolist()) | set(split.val.tolist())) == 1000
    assert torch.equal(split_dataset(labels, val_fraction=0.1, test_fraction=0.2, seed=0).test, split.test)
    assert not torch.equal(split_dataset(labels, test_fraction=0.2, seed=1).test, split.test)
    # The test images depend on the labels, seed and test_fraction only: never on what a search trains or validates on.
    for other in (dict(subset=100), dict(val_subset=30), dict(val_fraction=0.3), dict(subset=50, val_subset=10)):
        again = split_dataset(labels, test_fraction=0.2, seed=0, **other)
        assert torch.equal(again.test, split.test) and test.isdisjoint(again.train.tolist()) and test.isdisjoint(again.val.tolist())
    small = split_dataset(labels, test_fraction=0.2, seed=0, subset=100)
    assert set(small.train.tolist()) <= set(split.train.tolist()) and torch.equal(small.val, split.val)
    assert split.describe()["test_images"] == 200 and split.describe()["test_digest"] != small.describe()["val_digest"]


def test_without_a_test_fraction_the_split_is_the_one_of_earlier_versions():
    # Benchmarks and studies of a data set with its own test images hold nothing out: their splits must not move.
    split = split_dataset(torch.arange(1000) % 10, seed=0)
    assert len(split.test) == 0 and split.test_fraction == 0
    assert split.describe()["val_digest"] == "209fdaed08ad27e3"  # measured before test splits existed


@pytest.mark.parametrize(
    "kwargs, expected",
    [(dict(test_fraction=1.0), "test_fraction must be at least 0 and below 1"), (dict(test_fraction=-0.1), "at least 0"),
     (dict(test_fraction=0.01), "test_fraction 0.01 of 30 images holds out none")],
)
def test_bad_test_fractions(kwargs, expected):
    with pytest.raises(ConfigError, match=expected):
        split_dataset(torch.arange(30) % 3, **kwargs)


def test_a_folder_with_train_and_test_has_its_own_test_images_both_cached(tmp_path):
    root = tmp_path / "images"
    make_folder(root / "train", per_class=6)
    make_folder(root / "test", classes=("cat", "frog"), per_class=3, seed=1)  # test need not have every class
    cache = tmp_path / "cache"
    name = f"imagefolder:{root}"
    train = load_dataset(name, cache_dir=cache)
    test = load_dataset(name, train=False, cache_dir=cache)
    assert train.images.shape == (18, 3, 8, 8) and train.classes == test.classes == ("cat", "dog", "frog")
    assert train.source == f"imagefolder:{(root / 'train').resolve()}" and test.source == f"imagefolder:{(root / 'test').resolve()}"
    assert test.labels.tolist() == [0] * 3 + [2] * 3  # labelled by the training classes
    assert held_out_test_fraction(name, 0.1) == 0 and held_out_test_fraction("cifar10", 0.1) == 0
    assert held_out_test_fraction(f"imagefolder:{root / 'train'}", 0.1) == 0.1 and held_out_test_fraction("synthetic", 0.1) == 0.1
    # Garbage of the same size and time in both folders: only cache hits can still load them.
    for victim in (root / "train" / "cat" / "1.png", root / "test" / "frog" / "1.png"):
        stat = victim.stat()
        victim.write_bytes(b"\0" * stat.st_size)
        os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert torch.equal(load_dataset(name, cache_dir=cache).images, train.images)
    assert torch.equal(load_dataset(name, train=False, cache_dir=cache).images, test.images)
    split = split_dataset(train.labels, seed=0)
    own, indices = load_test_split(name, train, split, cache_dir=cache)
    assert torch.equal(own.images, test.images) and indices.tolist() == list(range(6))


def test_held_out_test_images_are_the_splits_own():
    data = load_dataset("synthetic")
    split = split_dataset(data.labels, test_fraction=0.1, seed=0)
    images, indices = load_test_split("synthetic", data, split)
    assert images is data and torch.equal(indices, split.test) and len(indices) == 200


@pytest.mark.parametrize(
    "setup, name, expected",
    [
        (lambda root: make_folder(root / "test", classes=("cat", "dog", "emu")), "imagefolder:{root}", "classes emu are not among"),
        (lambda root: (root / "test").mkdir(), "imagefolder:{root}", "test: no class sub-folders"),
        (lambda root: None, "imagefolder:{root}/train", "no test images of its own"),
        (lambda root: None, "synthetic", "synthetic: no test images of its own"),
    ],
    ids=["test classes that training lacks", "test without classes", "plain folder", "synthetic"],
)
def test_test_images_that_cannot_be_are_refused(tmp_path, setup, name, expected):
    root = tmp_path / "images"
    make_folder(root / "train")
    setup(root)
    with pytest.raises(ConfigError, match=expected):
        load_dataset(name.format(root=root), train=False, cache_dir=tmp_path / "cache")


def test_augment_crops_and_flips_whole_batches():
    images = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = augment(images, torch.Generator().manual_seed(0), padding=2)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    flips = shifts = 0
    for original, crop in zip(padded, out):
        windows = [
            (dy, dx, flip)
            for dy in range(5)
            for dx in range(5)
            for flip in (False, True)
            if torch.equal((original.flip(2) if flip else original)[:, dy : dy + 8, dx : dx + 8], crop)
        ]
        assert windows, "every output is a window of the padded image, maybe mirrored"
        flips += windows[0][2]
        shifts += windows[0][:2] != (2, 2)
    assert 16 < flips < 48 and shifts > 32


def test_augment_without_flips_only_crops_and_without_padding_keeps_the_images():
    images = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(augment(images, torch.Generator().manual_seed(0), padding=0, flip=False), images)
    mirrored = augment(images, torch.Generator().manual_seed(0), padding=0)
    assert 16 < sum(torch.equal(m, i.flip(2)) and not torch.equal(m, i) for m, i in zip(mirrored, images)) < 48
    # The same draw either way: without flips, each image is the crop that a flip would have mirrored.
    crops = augment(images, torch.Generator().manual_seed(1), padding=2, flip=False)
    both = augment(images, torch.Generator().manual_seed(1), padding=2)
    assert all(torch.equal(c, b) or torch.equal(c.flip(2), b) for c, b in zip(crops, both))
    assert not torch.equal(crops, both)


def reference_augment(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """augment as it was before it lost its host syncs: one slice assignment per drawn shift and flip."""

    def window(offset: int, length: int) -> tuple[slice, slice]:
        return slice(max(0, offset), length + min(0, offset)), slice(max(0, -offset), length - max(0, offset))

    count, _, height, width = images.shape
    span = 2 * padding + 1
    draws = torch.randint(0, 2 * span * span, (count,), generator=generator, device=images.device)
    order = torch.argsort(draws)
    out = torch.zeros_like(images)
    start = 0
    for draw, size in enumerate(torch.bincount(draws, minlength=2 * span * span).tolist()):
        if not size:
            continue
        chosen = order[start : start + size]
        start += size
        flip, shift = divmod(draw, span * span)
        rows_from, rows_to = window(shift // span - padding, height)
        columns_from, columns_to = window(shift % span - padding, width)
        crop = images[chosen, :, rows_from, columns_from]
        if flip:
            crop, columns_to = crop.flip(3), slice(width - columns_to.stop, width - columns_to.start)
        out[chosen, :, rows_to, columns_to] = crop
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("padding", [4, 2, 0])
@pytest.mark.parametrize("count", [1, 2, 37, 300])
def test_augment_reproduces_the_earlier_implementation(device, channels_last, padding, count):
    # Seeds of earlier runs must give the same crops and flips, bit for bit.
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    source = torch.Generator().manual_seed(count)
    images = torch.randint(1, 256, (count, 3, 12, 12), dtype=torch.uint8, generator=source).to(device)
    images = images.contiguous(memory_format=memory_format)
    for seed in range(4):
        out = augment(images, torch.Generator(device).manual_seed(seed), padding=padding)
        expected = reference_augment(images, torch.Generator(device).manual_seed(seed), padding=padding)
        assert out.dtype == torch.uint8 and out.device == images.device and out.shape == images.shape
        assert torch.equal(out, expected), f"seed {seed}"
        assert out.is_contiguous(memory_format=memory_format)
    # The generator moves on as before: later batches of an epoch match too.
    generator, reference_generator = torch.Generator(device).manual_seed(9), torch.Generator(device).manual_seed(9)
    for _ in range(3):
        out = augment(images, generator, padding=padding)
        assert torch.equal(out, reference_augment(images, reference_generator, padding=padding))


@pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype")
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_augment_has_no_host_syncs(channels_last):
    # Meta tensors have no data: .item(), .tolist(), bool(tensor) and data-dependent shapes
    # raise on them (the reference, with its bincount + tolist, does), so passing means no host sync.
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = torch.empty(64, 3, 32, 32, dtype=torch.uint8, device="meta").contiguous(memory_format=memory_format)
    out = augment(images, torch.Generator(), padding=4)
    assert out.device.type == "meta" and out.shape == images.shape and out.dtype == torch.uint8
    with pytest.raises((NotImplementedError, RuntimeError)):
        reference_augment(images, torch.Generator(), padding=4)
    if torch.cuda.is_available():  # and on a GPU, CUDA itself reports any synchronizing call
        images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, device="cuda")
        images, generator = images.contiguous(memory_format=memory_format), torch.Generator("cuda").manual_seed(0)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            augment(images, generator)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_batches_cover_every_image_once_per_epoch():
    data = load_dataset("synthetic")
    split = split_dataset(data.labels, subset=300)
    batches = Batches(data, split.train, batch_size=64, train=True, seed=0, channels_last=True)
    assert len(batches) == 5
    seen = torch.cat([labels for _, labels in batches])
    assert sorted(seen.tolist()) == sorted(data.labels[split.train].tolist())
    images, _ = next(iter(batches))
    assert images.dtype == torch.float32 and images.is_contiguous(memory_format=torch.channels_last)
    val = Batches(data, split.val, batch_size=1000, train=False)
    (first, _), = list(val)
    (second, _), = list(val)
    assert torch.equal(first, second)
    assert abs(first.mean().item()) < 0.1 and abs(first.std().item() - 1) < 0.1


def test_a_last_batch_smaller_than_min_batch_is_left_out_of_training_not_of_validation():
    data = load_dataset("synthetic")
    split = split_dataset(data.labels, subset=65)
    assert len(split.train) == 65
    training = Batches(data, split.train, batch_size=64, train=True, seed=0, min_batch=2)
    sizes = [len(labels) for _, labels in training]
    assert sizes == [64] and len(training) == 1
    validation = Batches(data, split.train, batch_size=64, train=False)
    assert [len(labels) for _, labels in validation] == [64, 1]
    two = Batches(data, split_dataset(data.labels, subset=66).train, batch_size=64, train=True, seed=0, min_batch=2)
    assert [len(labels) for _, labels in two] == [64, 2]  # two images make a batch that batch norm can normalize


def test_images_travel_out_of_band_so_trials_share_one_copy():
    """Pickled as Ray pickles (protocol 5, out-of-band buffers), the images are a buffer read in place, not a copy."""
    import pickle

    data = load_dataset("synthetic")
    buffers = []
    payload = pickle.dumps(data, protocol=5, buffer_callback=buffers.append)
    assert len(payload) < 10_000 and sum(buffer.raw().nbytes for buffer in buffers) >= data.images.numel()
    loaded = pickle.loads(payload, buffers=buffers)
    assert torch.equal(loaded.images, data.images) and loaded.classes == data.classes and loaded.mean == data.mean
    addresses = {np.frombuffer(buffer.raw(), dtype=np.uint8).ctypes.data for buffer in buffers}
    assert loaded.images.data_ptr() in addresses  # read in place


def test_decoding_a_folder_holds_one_copy_of_the_images_at_its_peak(tmp_path):
    """The decoded images are the only full copy: no list beside a stacked tensor, no float copy for the statistics."""
    for name, count, size in (("warm", 4, 16), ("images", 400, 192)):
        ramp = np.arange(size)
        for index in range(count):
            (tmp_path / name / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
            pixels = np.repeat(((np.add.outer(ramp, ramp) + index) % 256).astype(np.uint8)[..., None], 3, axis=-1)
            Image.fromarray(pixels).save(tmp_path / name / f"class{index % 2}" / f"{index}.jpg")
    script = f"""
from cnnsearch.data import load_dataset
def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) * 1024
load_dataset("imagefolder:{tmp_path / 'warm'}", cache_dir="{tmp_path / 'cache'}")  # imports, threads, Pillow
open("/proc/self/clear_refs", "w").write("5")  # the peak starts again from here
before = status("VmRSS:")
data = load_dataset("imagefolder:{tmp_path / 'images'}", cache_dir="{tmp_path / 'cache'}")
print(status("VmHWM:") - before, data.images.numel())
"""
    peak, size = map(int, subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout.split())
    assert size == 400 * 3 * 192 * 192
    assert peak < 1.6 * size, f"decoding peaked {peak / size:.2f}x the images' size"
