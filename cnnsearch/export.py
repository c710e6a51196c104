"""Export a study's best architecture as a trained model that runs without cnnsearch: the most
accurate trial, the most accurate one whose costs meet conditions, or every point of the
study's Pareto front.

An export folder holds ``arch.yaml`` (rebuilds with cnnsearch), ``weights.pt`` (a
state_dict: ``torch.load(..., weights_only=True)``), ``model.pt2`` (torch.export: loads
with torch alone), ``model.onnx`` (one file, dynamic batch) and ``meta.json``. The
exported graphs take float images in [0, 1], NCHW, and return logits: normalization is
inside them. Loading here never unpickles code.

The test split is read once, after the model is final: neither the search, nor the
re-evaluation of the top trials, nor the retraining sees it. Every accuracy recorded
says which images it comes from and whether the model trained on them.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Callable

import torch
from torch import Tensor, nn

from . import __version__
from .analysis import completed, meeting, pareto, study_trials
from .config import Arch, ConfigError, Recipe, load_arch, save_arch
from .data import ImageData, Split, chance_level, held_out_test_fraction, load_dataset, load_test_split, split_dataset
from .model import build_model
from .costs import profile
from .space import Budget, load_space
from .names import CHECKPOINT_FOLDER, DEFAULT_TRACKING_URI, RECIPE_FILE, WEIGHTS_FILE, Params, Status, Tags
from .tracking import StudyRecord, find_study
from .train import CHANCE_MARGIN, fit_to_data, train

__all__ = ["FORMATS", "SPLITS", "Normalized", "evaluate", "export_front", "export_study", "load_exported", "predict"]

FORMATS = ("pt2", "onnx", "weights", "mlflow")
SPLITS = ("test", "val", "all")  # what `evaluate` measures on; test first, the default
_TOLERANCE = 1e-4
_CONFIDENCE = 0.95


class Normalized(nn.Module):
    """A network that takes float images in [0, 1], NCHW, normalizes them and returns logits."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.model((images - self.mean) / self.std)


@dataclass(frozen=True)
class _Candidate:
    run_id: str
    run_name: str
    val_acc: float
    arch: Arch
    recipe: Recipe | None  # the trial's own, where it recorded one; else the study's


def _study_setup(record: StudyRecord, dataset: str | None, cache_dir: str | None, data_dir: str | None) -> tuple[ImageData, Split, Recipe, Budget]:
    """The study's data, split, recipe and budget, as its parent run recorded them."""
    params = record.parent.data.params
    name = dataset or params["dataset"]
    if "split.test_fraction" not in params and held_out_test_fraction(name, 1.0):
        raise ConfigError(
            f"study {record.parent.data.tags[Tags.STUDY]!r} was run before a test split was held out, and {name} has no test "
            "images of its own: no image is left that its search did not see; run the study again"
        )
    data = load_dataset(name, cache_dir=cache_dir, data_dir=data_dir)
    subset, val_subset = (None if params.get(f"split.{key}") in (None, "None") else int(params[f"split.{key}"]) for key in ("subset", "val_subset"))
    # A study recorded before test splits held none out of its images.
    fractions = {"val_fraction": float(params["split.val_fraction"]), "test_fraction": float(params.get("split.test_fraction", 0.0))}
    split = split_dataset(data.labels, **fractions, seed=int(params["split.seed"]), subset=subset)
    # The trials validated on val_subset of these images (if set): check that sample, evaluate on all.
    searched = split if val_subset is None else split_dataset(data.labels, **fractions, seed=split.seed, subset=subset, val_subset=val_subset)
    recorded = searched.describe()
    if any(recorded[key] != params.get(f"split.{key}", recorded[key]) for key in ("val_digest", "test_digest")):
        raise ConfigError(
            f"{data.source}: not the data of study {params.get('dataset')!r} (its validation or test split differs); "
            "pass the study's data set with --dataset"
        )
    if Params.RECIPE in params:
        return data, split, Recipe.model_validate(json.loads(params[Params.RECIPE])), Budget.model_validate(json.loads(params["budget"]))
    with tempfile.TemporaryDirectory() as folder:  # a study recorded before recipes were logged: its space file
        path = record.space_file(folder)
        if path is None:
            raise ConfigError(f"study {params.get('dataset')!r}: neither its recipe nor its space file is recorded")
        space = load_space(path)
    return data, split, space.recipe, space.budget.model_copy(update={"epochs": int(params["epochs"])})


def _candidates(record: StudyRecord, folder: Path, say: Callable[[str], None], where: Sequence[str] = (),
                run_id: str | None = None) -> list[_Candidate]:
    """Completed trials with their architecture files, best first: those whose metrics meet ``where``, or the one run ``run_id``."""
    runs = record.runs
    if runs.empty:
        raise ConfigError(f"study {record.parent.data.tags[Tags.STUDY]!r}: no trials")
    done = meeting(completed(record), where).sort_values("metrics.val_acc", ascending=False)
    if run_id is not None:
        done = done[done["run_id"] == run_id]
    for _, run in runs[runs[f"tags.{Tags.STATUS}"] != Status.COMPLETED].iterrows():
        if run.get("metrics.val_acc", -1) >= (done["metrics.val_acc"].max() if len(done) else -1):
            say(f"trial {run['tags.mlflow.runName']} has val_acc {run['metrics.val_acc']:.2%} but is "
                f"{run[f'tags.{Tags.STATUS}']}: not a candidate")
    out = []
    for _, run in done.iterrows():
        try:
            path = record.client.download_artifacts(run["run_id"], "arch.yaml", str(folder / run["run_id"]))
        except Exception:  # MLflow raises several types for a missing artifact
            say(f"trial {run['tags.mlflow.runName']}: no architecture file recorded; skipped")
            continue
        try:
            recipe = Recipe.model_validate_json(Path(record.client.download_artifacts(run["run_id"], RECIPE_FILE, str(folder / run["run_id"]))).read_text())
        except Exception:  # a trial recorded before trials logged their recipes: the study's
            recipe = None
        out.append(_Candidate(run["run_id"], run["tags.mlflow.runName"], float(run["metrics.val_acc"]), load_arch(path), recipe))
    if not out:
        raise ConfigError(f"study {record.parent.data.tags[Tags.STUDY]!r}: no completed trial with an architecture to export")
    return out


def _checkpoint(record: StudyRecord, candidate: _Candidate, folder: Path) -> dict[str, Tensor] | None:
    try:
        path = record.client.download_artifacts(candidate.run_id, f"{CHECKPOINT_FOLDER}/{WEIGHTS_FILE}", str(folder / "ckpt" / candidate.run_id))
    except Exception:  # no checkpoint recorded
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def _correct(model: nn.Module, data: ImageData, indices: Tensor, batch_size: int = 500) -> int:
    """How many of the given images a Normalized model classifies right (top-1; uint8 -> [0, 1] float)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            logits = model(data.images[chunk].float() / 255)
            correct += int((logits.argmax(1) == data.labels[chunk]).sum())
    return correct


def _accuracy(split: str, correct: int, images: int, *, seen: bool, **about: Any) -> dict[str, Any]:
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


def export_study(
    name: str,
    out: str | Path,
    *,
    top: int = 1,
    seeds: int = 1,
    retrain_epochs: int | None = None,
    formats: tuple[str, ...] = FORMATS,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    experiment: str | None = None,
    dataset: str | None = None,
    cache_dir: str | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    force: bool = False,
    where: Sequence[str] = (),
    run_id: str | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Pick, retrain and export the best architecture of study ``name``; returns meta.json's content.

    Candidates are the completed trials, or those whose metrics meet every condition of
    ``where`` (``macs<=50M``, ``latency_ms<=2``: see :func:`cnnsearch.analysis.meeting`), or
    the one trial whose MLflow run is ``run_id``.

    With ``top`` > 1 or ``seeds`` > 1 the top trials are each retrained with ``seeds``
    seeds on the study's split and budget, and the best mean validation accuracy wins,
    so that one lucky short trial does not. The winner is then retrained on training
    plus validation images for ``retrain_epochs`` (default: the study's epochs), or with
    0 its trial's own checkpoint is exported. A winner whose validation accuracy is within
    CHANCE_MARGIN of chance learned nothing, and is refused unless ``force``. Then, once,
    the exported model is measured on the test split (:func:`cnnsearch.data.load_test_split`).

    Raises:
        ConfigError: no such study, no usable trial, a condition that names no metric or that
            no trial meets, no checkpoint where one is needed, or data that is not the study's.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ConfigError(f"--formats: unknown {', '.join(sorted(unknown))}; choose from {', '.join(FORMATS)}")
    record = find_study(name, tracking_uri, experiment)
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        candidates = _candidates(record, Path(tmp), say, where, run_id)
        data, split, recipe, budget = _study_setup(record, dataset, cache_dir, data_dir)
        searched_images = int(record.parent.data.params["split.val_images"])  # val_subset's, if the trials had one
        estimate = {"val_acc": candidates[0].val_acc, "source": f"trial {candidates[0].run_name}", "seeds": [], "images": searched_images}
        if top > 1 or seeds > 1:
            scored = []
            for candidate in candidates[:top]:
                accs = []
                for seed in range(seeds):
                    result = train(fit_to_data(candidate.arch, data), data, split, recipe=candidate.recipe or recipe, budget=budget,
                                   seed=seed, device=device)
                    accs.append(result.val_acc if result.val_acc is not None else math.nan)
                mean = sum(accs) / len(accs)
                say(f"{candidate.run_name}: trial {candidate.val_acc:.2%}, {seeds} seeds: mean {mean:.2%} ({', '.join(f'{a:.2%}' for a in accs)})")
                scored.append((mean, candidate, accs))
            mean, best, accs = max(scored, key=lambda item: item[0])
            # The re-evaluated ones by their mean, then the rest by their trial: the order to fall back in.
            candidates = [c for _, c, _ in sorted(scored, key=lambda item: -item[0])] + candidates[top:]
            estimate = {"val_acc": mean, "source": f"mean of {seeds} seeds of trial {best.run_name}", "seeds": accs, "images": len(split.val)}
        chance = chance_level(data.labels[split.val])
        if estimate["val_acc"] <= chance + CHANCE_MARGIN and not force:
            raise ConfigError(
                f"study {name!r}: the best, {estimate['source']}, reached {estimate['val_acc']:.2%} against a chance level of "
                f"{chance:.2%}: it learned nothing worth exporting; pass --force to export it all the same"
            )

        epochs = budget.epochs if retrain_epochs is None else retrain_epochs
        if epochs == 0:
            for candidate in candidates:
                weights = _checkpoint(record, candidate, Path(tmp))
                if weights is not None:
                    break
                say(f"trial {candidate.run_name}: no checkpoint recorded; trying the next best")
            else:
                raise ConfigError(f"study {name!r}: no candidate trial has a checkpoint; use --retrain-epochs N to retrain instead")
            if candidate is not candidates[0]:
                estimate = {"val_acc": candidate.val_acc, "source": f"trial {candidate.run_name}", "seeds": [], "images": searched_images}
            arch = fit_to_data(candidate.arch, data)
            model = build_model(arch)
            model.load_state_dict(weights)
            trained_on = {"splits": ["train"], "images": len(split.train), "epochs": budget.epochs, "how": "the trial's own checkpoint"}
            seed = int(record.parent.data.params.get("seed", 0))
        else:
            candidate = candidates[0]
            arch = fit_to_data(candidate.arch, data)
            both = replace(split, train=torch.cat([split.train, split.val]))
            say(f"retraining {candidate.run_name} on {len(both.train):,} training and validation images for {epochs} epochs")
            seed = 0
            result = train(arch, data, both, recipe=candidate.recipe or recipe, budget=budget.model_copy(update={"epochs": epochs}),
                           seed=seed, device=device, progress=True)
            if result.status == Status.DIVERGED:
                raise RuntimeError(f"retraining {candidate.run_name} diverged: {result.message}")
            model = result.model
            trained_on = {"splits": ["train", "val"], "images": len(both.train), "epochs": epochs, "how": "retrained",
                          "recipe": (candidate.recipe or recipe).model_dump(mode="json")}

    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    network = Normalized(model, data.mean, data.std).eval()
    cost = profile(arch)
    out.mkdir(parents=True, exist_ok=True)
    save_arch(arch, out / "arch.yaml")
    # The model is final: now, and only now, the test images are read.
    test_data, test_indices = load_test_split(dataset or record.parent.data.params["dataset"], data, split, cache_dir=cache_dir,
                                              data_dir=data_dir)
    accuracies = {
        "test": _accuracy("test", _correct(network, test_data, test_indices), len(test_indices), seen=False,
                          of="the exported model", images_from=test_data.source),
        "val": _accuracy("val", _correct(network, data, split.val), len(split.val), seen="val" in trained_on["splits"],
                         of="the exported model"),
        # The estimate that picked the model: optimistic, as the best of several always is.
        "search": {"accuracy": estimate["val_acc"], "interval": None, "split": "val", "images": estimate["images"],
                   "seen_in_training": False, "of": estimate["source"], "seeds": estimate["seeds"]},
    }
    meta = {
        "name": arch.name,
        "study": name,
        "trial": candidate.run_name,
        "trial_run_id": candidate.run_id,
        "class_names": list(data.classes),
        "input": {"shape": ["batch", arch.in_channels, arch.input_size, arch.input_size], "dtype": "float32", "range": [0.0, 1.0],
                  "layout": "NCHW"},
        "input_size": arch.input_size,
        "normalization": {"mean": list(data.mean), "std": list(data.std), "inside_graph": True},
        "accuracies": accuracies,
        "trained_on": trained_on,
        "params": cost.params,
        "macs": cost.macs,
        "dataset": data.describe() | {"name": dataset or record.parent.data.params["dataset"]},
        "split": split.describe(),
        "seed": seed,
        "cnnsearch_version": __version__,
        "torch_version": torch.__version__,
        "formats": [],
    }
    sample = data.images[split.val[:16]].float() / 255
    with torch.no_grad():
        expected = network(sample)
    if "weights" in formats:
        torch.save(model.state_dict(), out / WEIGHTS_FILE)
        meta["formats"].append("weights")
    if "pt2" in formats:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(network, (sample,), dynamic_shapes=({0: batch},))
        torch.export.save(program, out / "model.pt2")
        _check("model.pt2", expected, torch.export.load(out / "model.pt2").module()(sample))
        meta["formats"].append("pt2")
    if "onnx" in formats:
        _export_onnx(network, sample, expected, out / "model.onnx")
        meta["formats"].append("onnx")
    if "mlflow" in formats:
        meta["registered_model"] = _register(record, network, sample, expected, meta)
        meta["formats"].append("mlflow")
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def export_front(name: str, out: str | Path, *, tracking_uri: str = DEFAULT_TRACKING_URI, experiment: str | None = None,
                 formats: tuple[str, ...] = FORMATS, say: Callable[[str], None] = print, **options: Any) -> list[dict[str, Any]]:
    """Export every point of study ``name``'s Pareto front (over its objectives) into ``out``/TRIAL/; returns their meta.json contents.

    ``options`` are :func:`export_study`'s. A point that export_study refuses (at chance,
    no checkpoint) is said and skipped. No point is registered in MLflow: one registered
    model has one champion, and a front has several answers.

    Raises:
        ConfigError: no such study, no completed trial, or no point could be exported.
    """
    record = find_study(name, tracking_uri, experiment)
    front = pareto(study_trials(record), record.objectives)
    exported = []
    for _, point in front.iterrows():
        try:
            exported.append(export_study(name, Path(out) / point["trial"], run_id=point["run_id"], tracking_uri=tracking_uri,
                                         experiment=experiment, formats=tuple(f for f in formats if f != "mlflow"), say=say, **options))
        except ConfigError as error:
            say(f"{point['trial']}: not exported: {error}")
    if not exported:
        raise ConfigError(f"study {name!r}: none of the {len(front)} points of its Pareto front could be exported")
    return exported


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
    import mlflow
    from mlflow.models import infer_signature

    experiment = record.client.get_experiment(record.experiment_id).name
    with mlflow.start_run(experiment_id=record.experiment_id, run_name=f"export-{meta['study']}",
                          tags={Tags.PARENT: record.parent.info.run_id, "cnnsearch.export": meta["trial_run_id"]}) as run:
        test = meta["accuracies"]["test"]
        mlflow.log_params({"trial_run_id": meta["trial_run_id"], "trained_on": "+".join(meta["trained_on"]["splits"]),
                           "test_images": test["images"]})
        mlflow.log_metrics({"test_acc": test["accuracy"], "test_acc_low": test["interval"]["low"], "test_acc_high": test["interval"]["high"],
                            "params": meta["params"], "macs": meta["macs"]})
        info = mlflow.pytorch.log_model(
            network, name="model", registered_model_name=experiment,
            signature=infer_signature(sample.numpy(), expected.numpy()), input_example=sample[:2].numpy(),
            serialization_format="pt2",
        )
    version = info.registered_model_version
    record.client.set_registered_model_alias(experiment, "champion", version)
    return {"name": experiment, "version": int(version), "alias": "champion", "run_id": run.info.run_id,
            "uri": f"models:/{experiment}@champion"}


def load_exported(folder: str | Path) -> tuple[Normalized, dict[str, Any]]:
    """The exported network (from arch.yaml and weights.pt, weights only) and its meta.json.

    Raises:
        ConfigError: the folder is not an export, or lacks the weights.
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        raise ConfigError(f"{folder}: not an export (no meta.json); create one with cnnsearch export") from None
    if not (folder / WEIGHTS_FILE).exists():
        raise ConfigError(f"{folder}: no {WEIGHTS_FILE}; export with --formats including weights")
    model = build_model(load_arch(folder / "arch.yaml"))
    model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    norm = meta["normalization"]
    return Normalized(model, tuple(norm["mean"]), tuple(norm["std"])).eval(), meta


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
    correct = sum(_correct(network, images, indices) for images, indices in parts)
    seen = split == "all" or split in meta["trained_on"]["splits"]
    result = _accuracy(split, correct, sum(len(indices) for _, indices in parts), seen=seen, dataset=data.source)
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
