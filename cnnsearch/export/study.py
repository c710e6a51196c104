"""Exporting a study: :func:`export_study` walks select -> retrain -> measure on the test split ->
write the formats; :func:`export_front` does so for every point of a study's Pareto front.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .. import __version__
from ..analysis import pareto, study_trials
from ..blocks.cell import is_nasbench201, nasbench201_arch
from ..config import ConfigError, save_arch
from ..data import ImageData, load_test_split
from ..names import ARCH_FILE, DEFAULT_TRACKING_URI, Tags
from ..costs import Cost, profile
from ..tracking import find_study, source_commit
from .evaluation import GRAPH_PRECISION, SPLIT_IMAGES, accuracy, cpu_precision, measure, precision_line
from .formats import FORMATS, Normalized, write_formats
from .retrain import Trained, from_checkpoint, retrained
from .select import Estimate, Setup, find_candidates, reevaluate, refuse_at_chance, study_setup

__all__ = ["export_front", "export_study"]


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

    A re-evaluated trial with a seed that diverged has failed and ranks last. Only a file that
    a trial did not record is passed over (an architecture, or a checkpoint: the next best is
    used, with a line saying so); a failed read from MLflow raises.

    Raises:
        ConfigError: no such study, no usable trial, a condition that names no metric or that
            no trial meets, no checkpoint where one is needed, a recorded recipe that does not
            validate, every re-evaluated trial diverged, or data that is not the study's.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ConfigError(f"--formats: unknown {', '.join(sorted(unknown))}; choose from {', '.join(FORMATS)}")
    say(f"reading study {name!r}")
    record = find_study(name, tracking_uri, experiment)
    setup, trained, estimate = _chosen_and_trained(name, record, top=top, seeds=seeds, retrain_epochs=retrain_epochs, dataset=dataset,
                                                   cache_dir=cache_dir, data_dir=data_dir, device=device, force=force, where=where,
                                                   run_id=run_id, say=say)
    return _save(name, setup, trained, estimate, Path(out), formats, cache_dir=cache_dir, data_dir=data_dir, say=say)


def _chosen_and_trained(name: str, record: Any, *, top: int, seeds: int, retrain_epochs: int | None, dataset: str | None,
                        cache_dir: str | None, data_dir: str | None, device: str, force: bool, where: Sequence[str],
                        run_id: str | None, say: Callable[[str], None]) -> tuple[Setup, Trained, Estimate]:
    """The study's set-up, the winner trained (or loaded from its checkpoint) and its validation estimate."""
    with tempfile.TemporaryDirectory() as tmp:
        candidates = find_candidates(record, Path(tmp), say, where, run_id)
        best = candidates[0]
        say(f"{len(candidates)} candidate trial{'s' * (len(candidates) > 1)}, the best {best.run_name} at {best.val_acc:.2%}; "
            f"loading {dataset or record.params['dataset']}")
        setup = study_setup(record, dataset, cache_dir, data_dir)
        candidates, estimate = reevaluate(setup, candidates, top=top, seeds=seeds, device=device, say=say)
        refuse_at_chance(name, setup, estimate, force=force)
        epochs = setup.budget.epochs if retrain_epochs is None else retrain_epochs
        if epochs == 0:
            say(f"no retraining (--retrain-epochs 0): loading the checkpoint of {candidates[0].run_name}")
            trained, estimate = from_checkpoint(name, setup, candidates, estimate, Path(tmp), say)
        else:
            trained = retrained(setup, candidates[0], epochs, device=device, say=say)
    return setup, trained, estimate


def _save(name: str, setup: Setup, trained: Trained, estimate: Estimate, out: Path, formats: tuple[str, ...], *,
          cache_dir: str | None, data_dir: str | None, say: Callable[[str], None]) -> dict[str, Any]:
    """Write the trained model's architecture, measure it once on the test split, and write its formats and meta.json."""
    model = trained.model.to("cpu", memory_format=torch.contiguous_format).eval()
    network = Normalized(model, setup.data.mean, setup.data.std).eval()
    cost = profile(trained.arch)
    out.mkdir(parents=True, exist_ok=True)
    save_arch(trained.arch, out / ARCH_FILE)
    # The model is final: now, and only now, the test images are read.
    say("reading the test images")
    test = load_test_split(setup.dataset, setup.data, setup.split, cache_dir=cache_dir, data_dir=data_dir)
    precision = cpu_precision(trained.precision)
    who = "the retrained model" if "val" in trained.trained_on["splits"] else trained.candidate.run_name
    also = "" if precision == GRAPH_PRECISION else ": the test split is measured in it too"
    say(precision_line(precision, trained.precision, who) + also)
    accuracies = _accuracies(network, setup, test, trained, estimate, precision, say)
    meta = _meta(name, setup, trained, cost, accuracies)
    sample = setup.data.images[setup.split.val[:16]].float() / 255
    return write_formats(setup.record, network, sample, out, formats, meta, say)


def _accuracies(network: Normalized, setup: Setup, test: tuple[ImageData, Tensor], trained: Trained, estimate: Estimate,
                precision: str, say: Callable[[str], None]) -> dict[str, Any]:
    """The exported model's accuracy on the test and validation splits in ``precision``, on the test split in fp32 too
    (the exported graphs' precision) where that is another, and the estimate that picked it."""
    test_data, test_indices = test
    split = setup.split

    def measured(name: str, data: ImageData, indices: Tensor, precision: str, **about: Any) -> dict[str, Any]:
        correct = measure(network, [(data, indices)], precision=precision, what=SPLIT_IMAGES[name], say=say)
        return accuracy(name, correct, len(indices), precision=precision, **about)

    accuracies = {
        "test": measured("test", test_data, test_indices, precision, seen=False, of="the exported model", images_from=test_data.source),
        "val": measured("val", setup.data, split.val, precision, seen="val" in trained.trained_on["splits"], of="the exported model"),
    }
    if precision != GRAPH_PRECISION:
        accuracies[f"test_{GRAPH_PRECISION}"] = measured("test", test_data, test_indices, GRAPH_PRECISION, seen=False,
                                                         of="the exported graphs", images_from=test_data.source)
    # The estimate that picked the model: optimistic, as the best of several always is.
    accuracies["search"] = {"accuracy": estimate.val_acc, "interval": None, "split": "val", "images": estimate.images,
                            "seen_in_training": False, "of": estimate.source, "seeds": estimate.seeds, "precision": estimate.precision}
    return accuracies


def _meta(name: str, setup: Setup, trained: Trained, cost: Cost, accuracies: dict[str, Any]) -> dict[str, Any]:
    """meta.json's content, its formats still to be written; a NAS-Bench-201 network's holds its cell's string."""
    arch, data = trained.arch, setup.data
    return {
        "name": arch.name,
        **({Tags.NASBENCH201: nasbench201_arch(arch)} if is_nasbench201(arch) else {}),
        "study": name,
        "trial": trained.candidate.run_name,
        "trial_run_id": trained.candidate.run_id,
        "class_names": list(data.classes),
        "input": {"shape": ["batch", arch.in_channels, arch.input_size, arch.input_size], "dtype": "float32", "range": [0.0, 1.0],
                  "layout": "NCHW"},
        "input_size": arch.input_size,
        "normalization": {"mean": list(data.mean), "std": list(data.std), "inside_graph": True},
        "accuracies": accuracies,
        "trained_on": trained.trained_on,
        "params": cost.params,
        "macs": cost.macs,
        "dataset": data.describe() | {"name": setup.dataset},
        "split": setup.split.describe(),
        "seed": trained.seed,
        "trained_precision": trained.precision,  # each accuracy says the precision it was measured in
        "cnnsearch_version": __version__,
        "cnnsearch_commit": source_commit(),
        "torch_version": torch.__version__,
        "formats": [],
    }


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
