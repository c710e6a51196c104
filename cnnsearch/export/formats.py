"""The files of an export folder: the network that normalizes inside its graph
(:class:`Normalized`), ``weights.pt``, and ``model.pt2`` and ``model.onnx`` (both checked against
PyTorch's logits), the registered model of the ``mlflow`` format, ``meta.json``; and
:func:`load_exported`, which reads a folder back from its architecture and weights alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ConfigError, load_arch
from ..model import build_model
from ..names import ARCH_FILE, META_FILE, WEIGHTS_FILE, Metrics
from ..tracking import StudyRecord, register_model

__all__ = ["FORMATS", "Normalized", "load_exported", "write_formats"]

FORMATS = ("pt2", "onnx", "weights", "mlflow")
_TOLERANCE = 1e-4


class Normalized(nn.Module):
    """A network that takes float images in [0, 1], NCHW, normalizes them and returns logits."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.model((images - self.mean) / self.std)


def write_formats(record: StudyRecord, network: Normalized, sample: Tensor, out: Path, formats: tuple[str, ...],
                  meta: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    """Write ``formats`` of ``network`` into ``out``, each graph format checked on ``sample``, then meta.json; returns meta.json's content.

    Each format is said as it starts: tracing a graph and checking it can take minutes.
    """
    with torch.no_grad():
        expected = network(sample)
    if "weights" in formats:
        say(f"writing {WEIGHTS_FILE}")
        torch.save(network.model.state_dict(), out / WEIGHTS_FILE)
        meta["formats"].append("weights")
    if "pt2" in formats:
        say("writing model.pt2 (torch.export) and checking its logits")
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(network, (sample,), dynamic_shapes=({0: batch},))
        torch.export.save(program, out / "model.pt2")
        _check("model.pt2", expected, torch.export.load(out / "model.pt2").module()(sample))
        meta["formats"].append("pt2")
    if "onnx" in formats:
        say("writing model.onnx and checking its logits under onnxruntime")
        _export_onnx(network, sample, expected, out / "model.onnx")
        meta["formats"].append("onnx")
    if "mlflow" in formats:
        say("registering the model in MLflow")
        meta["registered_model"] = _register(record, network, sample, expected, meta)
        meta["formats"].append("mlflow")
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _check(what: str, expected: Tensor, actual: Tensor) -> None:
    # Relative to the logits' scale (at least 1): float error grows with the values.
    scale = max(1.0, expected.abs().max().item())
    difference = (expected - torch.as_tensor(actual)).abs().max().item() / scale
    if difference > _TOLERANCE:
        raise RuntimeError(f"{what}: logits differ from PyTorch's by {difference:.2e} of their scale {scale:.3g} (tolerance {_TOLERANCE})")


def _export_onnx(network: nn.Module, sample: Tensor, expected: Tensor, path: Path) -> None:
    import onnx
    import onnxruntime

    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(network, (sample,), dynamo=True, input_names=["images"], output_names=["logits"],
                                dynamic_shapes=({0: batch},), verbose=False)
    program.save(str(path), external_data=False)  # one self-contained file
    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in (len(sample), 1):  # the batch dimension is dynamic
        logits = session.run(["logits"], {"images": sample[:size].numpy()})[0]
        _check(f"{path.name} (batch {size})", expected[:size], torch.from_numpy(logits))


def _register(record: StudyRecord, network: nn.Module, sample: Tensor, expected: Tensor, meta: dict[str, Any]) -> dict[str, Any]:
    """Log the model to an export run under the study and register it as the experiment's champion."""
    test = meta["accuracies"]["test"]
    return register_model(
        record, network, sample, expected, run_name=f"export-{meta['study']}", trial_run_id=meta["trial_run_id"],
        params={"trial_run_id": meta["trial_run_id"], "trained_on": "+".join(meta["trained_on"]["splits"]), "test_images": test["images"],
                "test_precision": test["precision"]},
        metrics={Metrics.TEST_ACC: test["accuracy"], Metrics.TEST_ACC_LOW: test["interval"]["low"], Metrics.TEST_ACC_HIGH: test["interval"]["high"],
                 Metrics.PARAMS: meta["params"], Metrics.MACS: meta["macs"]},
    )


def load_exported(folder: str | Path) -> tuple[Normalized, dict[str, Any]]:
    """The exported network (from arch.yaml and weights.pt, weights only) and its meta.json.

    Raises:
        ConfigError: the folder is not an export, or lacks the weights.
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{folder}: not an export (no meta.json); create one with cnnsearch export") from None
    if not (folder / WEIGHTS_FILE).exists():
        raise ConfigError(f"{folder}: no {WEIGHTS_FILE}; export with --formats including weights")
    model = build_model(load_arch(folder / ARCH_FILE))
    model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    norm = meta["normalization"]
    return Normalized(model, tuple(norm["mean"]), tuple(norm["std"])).eval(), meta
