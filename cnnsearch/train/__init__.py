"""One trial: train an architecture on resident data, validate after every epoch, report through a callback.

The trainer knows nothing of Ray or MLflow. Its modules:

- ``loop``: :func:`train`, made of set-up, restore (resume from a saved state), one epoch, validate (with BN
  re-estimation) and snapshot (the state a checkpoint saves); the divergence thresholds;
- ``step``: the training step, the device and precision a recipe resolves to (and the autocast that runs it), the optimizer and the schedule;
- ``lr_range``: the learning-rate range test behind ``lr: auto`` (:func:`find_lr`);
- ``results``: :class:`EpochReport` and :class:`TrainResult`;
- ``fit``: matching an architecture to its data's classes, image size and channels;
- ``progress``: the bar of images that training and evaluation show (:func:`image_bar`).
"""

from .fit import data_shape, fit_to_data
from .loop import CHANCE_MARGIN, CHANNELS_LAST_DEFAULT, DIVERGED_LOSS_FACTOR, train
from .lr_range import find_lr
from .progress import image_bar
from .results import EpochReport, TrainResult
from .step import AUX_LOSS_WEIGHT, _lr_factor, _optimizer, autocast, resolve_device, resolve_precision

__all__ = [
    "AUX_LOSS_WEIGHT",
    "CHANCE_MARGIN",
    "CHANNELS_LAST_DEFAULT",
    "DIVERGED_LOSS_FACTOR",
    "EpochReport",
    "TrainResult",
    "autocast",
    "data_shape",
    "find_lr",
    "fit_to_data",
    "image_bar",
    "resolve_device",
    "resolve_precision",
    "train",
    # benchmarks/pipeline.py times the bare step loop with the trainer's own optimizer and schedule
    "_lr_factor",
    "_optimizer",
]
