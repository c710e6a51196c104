"""What an architecture costs: parameters, multiply-accumulates and FLOPs (:func:`profile`),
latency, the memory a trial of it needs, the one check of costs against a space's limits
(:func:`over_limits`), and the cheapest architecture of a space that meets them.

MACs and FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on a forward pass of one
image: convolutions (grouped and depthwise included) and matrix products (linear
layers, squeeze-and-excitation). It counts FLOPs = 2 x MACs for these operations; batch
norm, activations, pooling, element-wise additions and bias additions are not counted,
as in torchvision's published GFLOPS (which are MACs). The pass is in eval mode, so
auxiliary classifiers (GoogLeNet's), which run in training only, add parameters and no
MACs. Architectures are profiled on the meta device: no weights are allocated and
nothing is computed.

Latency is measured, not counted: the median time of one eval-mode forward pass of one
image on a real device (:func:`latency`), with a fixed thread count, warm-up and repeats.

A trial's memory is dominated by the activations that autograd saves for the backward
pass; a meta-device forward at the batch size counts them (BENCHMARKS.md, memory section,
compares the estimate with measured peaks).
"""

from __future__ import annotations

import copy
import io
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import Arch, ConfigError
from .model import build_model
from .space import Limits, Space

__all__ = [
    "LATENCY_DEVICES",
    "WORKER_BASE",
    "Cost",
    "Memory",
    "cheapest",
    "latency",
    "latency_machine",
    "over_limits",
    "profile",
    "training_memory",
]


@dataclass(frozen=True)
class Cost:
    """Cost of one forward pass of one image."""

    params: int
    macs: int
    flops: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def profile(arch_or_model: Arch | nn.Module, *, input_size: int | None = None, in_channels: int | None = None) -> Cost:
    """Count parameters, MACs and FLOPs.

    Args:
        arch_or_model: an architecture (built on the meta device) or any model taking NCHW images.
        input_size: image height and width; defaults to the architecture's own (required for a model).
        in_channels: image channels; defaults to the architecture's own, else 3.

    Returns:
        The :class:`Cost` of one image.
    """
    if isinstance(arch_or_model, Arch):
        with torch.device("meta"):
            model = build_model(arch_or_model)
        input_size = input_size or arch_or_model.input_size
        in_channels = in_channels or arch_or_model.in_channels
    else:
        if input_size is None:
            raise TypeError("profile(model) needs input_size")
        model = arch_or_model
        if any(not p.is_meta for p in model.parameters()):
            # Counting needs no values: a meta copy leaves the caller's model as it was.
            model = copy.deepcopy(model).to("meta")
    params = sum(p.numel() for p in model.parameters())
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.empty(1, in_channels or 3, input_size, input_size, device="meta"))
    model.train(was_training)
    flops = counter.get_total_flops()
    return Cost(params=params, macs=flops // 2, flops=flops)


def over_limits(limits: Limits, cost: Cost) -> str | None:
    """Why a network of this cost is over the limits (params first, then MACs), or None when it meets them."""
    if limits.max_params is not None and cost.params > limits.max_params:
        return f"{cost.params:,} params > max_params {limits.max_params:,}"
    if limits.max_macs is not None and cost.macs > limits.max_macs:
        return f"{cost.macs:,} MACs > max_macs {limits.max_macs:,}"
    return None


LATENCY_DEVICES = ("cpu", "cuda", "onnxruntime")
# One thread: the batch-1 deployment case, and a number that does not change with the
# machine's cores or with how many trials share them. Warm-up runs leave the allocator's
# and the kernels' first-call costs out; the median of the repeats ignores a preemption.
LATENCY_THREADS = 1
LATENCY_WARMUP = 3
LATENCY_REPEATS = 10


def latency(arch: Arch, device: str = "cpu", *, warmup: int = LATENCY_WARMUP, repeats: int = LATENCY_REPEATS) -> float:
    """Median milliseconds of one eval-mode forward pass of one image through ``arch`` (randomly initialized).

    Args:
        arch: the architecture, at its own input size and channels.
        device: ``cpu`` (PyTorch, LATENCY_THREADS threads), ``cuda`` (PyTorch, synchronized),
            or ``onnxruntime`` (its CPU provider, LATENCY_THREADS threads, on the model exported to ONNX).

    Raises:
        ConfigError: an unknown device, or cuda where there is none.
    """
    if device not in LATENCY_DEVICES:
        raise ConfigError(f"--latency-device {device!r}: choose from {', '.join(LATENCY_DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--latency-device cuda: no CUDA device here; use cpu or onnxruntime")
    threads = torch.get_num_threads()
    torch.set_num_threads(LATENCY_THREADS)
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
            model = build_model(arch).eval()
            image = torch.rand(1, arch.in_channels, arch.input_size, arch.input_size)
        if device == "onnxruntime":
            run = _onnx_runner(model, image)
        else:
            model, image = model.to(device), image.to(device)

            def run() -> None:
                with torch.inference_mode():
                    model(image)
                if device == "cuda":
                    torch.cuda.synchronize()

        for _ in range(warmup):
            run()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times) * 1000


def _onnx_runner(model: nn.Module, image: torch.Tensor) -> Any:
    import onnxruntime

    buffer = io.BytesIO()
    # TorchScript's exporter: a second or less, where the dynamo exporter takes several; its deprecation warnings say nothing here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (image,), buffer, input_names=["images"], dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = LATENCY_THREADS
    session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"images": image.numpy()}
    return lambda: session.run(None, feed)


def latency_machine(device: str = "cpu") -> str:
    """What measured a latency: the device, the processor, the threads and the runtime's version."""
    processor = _processor_name()
    if device == "cuda":
        return f"cuda: {torch.cuda.get_device_name()}, torch {torch.__version__}, host {processor}"
    if device == "onnxruntime":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider: {processor}, {LATENCY_THREADS} thread(s)"
    return f"cpu: {processor}, {LATENCY_THREADS} thread(s), torch {torch.__version__}"


def _processor_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Memory:
    """Expected peak resident memory of one training process on CPU, in bytes, and its parts."""

    activations: int  # saved for the backward pass at the batch size, at fp32
    parameters: int  # weights, gradients and momentum
    total: int  # the process's expected peak: a worker's base, the parameters, the activations at their peak


# Fitted to trials on CPU at batch 128 (benchmarks/memory.py), resnet20 and
# densenet_bc_100_k12 in their own processes and DenseNets sampled from spaces/densenet.yaml
# in Ray workers: at the peak of a step the activations take this many times what a fp32
# forward saves for backward (bf16 autocast stores most at half size). A Ray worker with
# torch loaded, its buffers and its checkpoint writes hold WORKER_BASE. Rounded up: Ray
# schedules by this number.
WORKER_BASE = 1200 * 2**20
ACTIVATION_FACTOR = {"fp32": 1.2, "bf16": 0.7, "fp16": 0.7}


def training_memory(arch: Arch, batch_size: int, precision: str = "fp32") -> Memory:
    """The peak memory of training ``arch`` on CPU at ``batch_size`` and ``precision`` (bf16, fp16, fp32).

    On a GPU the activations and parameters live in device memory and a worker needs about
    WORKER_BASE of host memory.

    Raises:
        ConfigError: a training forward at ``batch_size`` fails, as batch norm does on a
            1x1 feature map of one image.
    """
    with torch.device("meta"):
        model = build_model(arch).train()
    saved: dict[int, torch.Tensor] = {}  # by identity: a tensor saved by several operations is stored once

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[id(tensor)] = tensor  # held here too, so that no id is reused while counting
        return tensor

    images = torch.empty(batch_size, arch.in_channels, arch.input_size, arch.input_size, device="meta")
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(images)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"cannot train at batch {batch_size}: {str(error).strip().splitlines()[0]}") from None
    activations = sum(tensor.numel() * tensor.element_size() for tensor in saved.values())
    parameters = 3 * 4 * sum(p.numel() for p in model.parameters())
    total = WORKER_BASE + parameters + int(ACTIVATION_FACTOR[precision] * activations)
    return Memory(activations=activations, parameters=parameters, total=total)


def cheapest(space: Space, count: Callable[[Arch], Cost] = profile) -> tuple[Arch, Cost] | None:
    """The cheapest architecture of a space that meets its cost limits.

    Returns None when the space is too large to be sure (see :meth:`Space.smallest`)
    and none of the candidates tried meets the limits. ``count`` gives a candidate's
    cost: :func:`profile`, or what counts the same faster for the networks of a space.

    Raises:
        ConfigError: no point of the space is a valid network, or none meets the limits.
    """
    candidates, complete = space.smallest()
    costed: list[tuple[Arch, Cost]] = []
    errors: list[ConfigError] = []
    for candidate in candidates:
        try:
            if isinstance(candidate, ConfigError):
                raise candidate
            costed.append((candidate, count(candidate)))
        except ConfigError as error:
            errors.append(error)
    for arch, cost in sorted(costed, key=lambda item: (item[1].params, item[1].macs)):
        if over_limits(space.limits, cost) is None:
            return arch, cost
    if not complete:
        return None
    if not costed:
        raise ConfigError(f"{space.source}: no point of the space is a valid network, for example: {errors[0]}")
    fewest_params = min(cost.params for _, cost in costed)
    fewest_macs = min(cost.macs for _, cost in costed)
    limits = space.limits
    if limits.max_params is not None and fewest_params > limits.max_params:
        raise ConfigError(
            f"{space.source}: limits.max_params: {limits.max_params:,} cannot be met: "
            f"the smallest architecture of the space has {fewest_params:,} params"
        )
    if limits.max_macs is not None and fewest_macs > limits.max_macs:
        raise ConfigError(
            f"{space.source}: limits.max_macs: {limits.max_macs:,} cannot be met: "
            f"the cheapest architecture of the space has {fewest_macs:,} MACs"
        )
    raise ConfigError(f"{space.source}: limits: no architecture of the space meets max_params and max_macs together")
