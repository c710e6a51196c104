"""Matching an architecture to its data: the classes, image size and channels it takes from them."""

from __future__ import annotations

from ..config import Arch, ConfigError
from ..data import ImageData

__all__ = ["check_fits", "data_shape", "fit_to_data"]


def data_shape(data: ImageData) -> dict[str, int]:
    """What an architecture takes from its data: the number of classes, the image size and the channels."""
    return {"num_classes": len(data.classes), "input_size": data.image_size, "in_channels": data.images.shape[1]}


def fit_to_data(arch: Arch, data: ImageData | dict[str, int]) -> Arch:
    """The architecture for ``data``, or for a :func:`data_shape`: its classes, image size and channels."""
    shape = data_shape(data) if isinstance(data, ImageData) else data
    return Arch.from_dict(arch.to_dict() | shape, source=arch.name)


def check_fits(arch: Arch, data: ImageData) -> None:
    """Raise a :class:`ConfigError` unless ``arch`` was built for ``data``'s classes, image size and channels."""
    if (arch.num_classes, arch.input_size, arch.in_channels) != (len(data.classes), data.image_size, data.images.shape[1]):
        raise ConfigError(
            f"{arch.name}: built for {arch.num_classes} classes of {arch.in_channels}x{arch.input_size}x{arch.input_size} "
            f"images, but {data.source} has {len(data.classes)} classes of {tuple(data.images.shape[1:])}"
        )
