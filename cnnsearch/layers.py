"""Shared bricks of the block families and the model: activations by name (the names are :data:`cnnsearch.names.ACTIVATIONS`)."""

from __future__ import annotations

from torch import nn

__all__ = ["ACTIVATION_MODULES", "activation"]

ACTIVATION_MODULES: dict[str, type[nn.Module]] = {  # keyed by names.ACTIVATIONS, in its order
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "sigmoid": nn.Sigmoid,  # LeNet-5
    "tanh": nn.Tanh,
    "hardswish": nn.Hardswish,  # MobileNetV3 (Howard et al. 2019, arXiv:1905.02244)
}


def activation(name: str) -> nn.Module:
    """A fresh activation module; in place where the function allows it."""
    kind = ACTIVATION_MODULES[name]
    return kind(inplace=True) if kind in (nn.ReLU, nn.ReLU6, nn.Hardswish) else kind()
