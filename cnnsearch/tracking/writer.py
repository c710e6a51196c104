"""Writing a study to MLflow: the :class:`Recorder` of its parent run and a child run per trial
(and the UI's view of its trials, :mod:`.views`), the environment a result depends on, and an
exported model's run and registered version.

A study's runs are written with explicit experiment and run ids through
:class:`mlflow.MlflowClient` (no global active run), all from the driver process, so many
concurrent trials never contend for the sqlite store. An export's run is the one active run:
``mlflow.pytorch.log_model`` logs to the active run.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..blocks.cell import is_nasbench201, nasbench201_arch
from ..config import Arch
from ..names import ARCH_FILE, CHECKPOINT_FOLDER, PARETO, PASSED_OVER, RECIPE_FILE, REJECTED, RESULTS, SCORED, Metrics, Params, Status, Tags
from ..space import ACCURACY, Objective
from .reader import StudyRecord, record_of
from .store import TRIALS_OF, trial_name
from .views import save_trials_view

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = ["Recorder", "environment", "register_model", "source_commit"]

INTERRUPTED = "interrupted by Ctrl-C; resuming the study goes on with it"
_RUN_STATE = {Status.COMPLETED: "FINISHED", Status.STOPPED_EARLY: "FINISHED", Status.FAILED: "FAILED", Status.DIVERGED: "FAILED"}
_MAX_PARAMS = 100  # MLflow takes at most 100 params per batch


def _arch_tags(arch: Arch) -> dict[str, str]:
    """What a trial's run is tagged with of its architecture: its families, digest and, of a NAS-Bench-201 network, its cell's string."""
    tags = {Tags.FAMILY: ",".join(sorted({stage.family for stage in arch.stages})), Tags.ARCH_HASH: arch.digest}
    if is_nasbench201(arch):
        tags[Tags.NASBENCH201] = nasbench201_arch(arch)
    return tags


def _arch_file(arch: Arch) -> str:
    """A trial's :data:`~cnnsearch.names.ARCH_FILE`."""
    return yaml.safe_dump(arch.to_dict(), sort_keys=False)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, str]:
    """Versions of the packages a result depends on, and the commit of cnnsearch's own source."""
    packages = ("cnnsearch", "torch", "torchvision", "optuna", "ray")
    versions = {f"version.{package}": _version(package) or "not installed" for package in packages}
    # MLflow's client alone (what benchmarks/gpu_bundle.sh carries) is the distribution mlflow-skinny, of the same version.
    versions["version.mlflow"] = _version("mlflow") or _version("mlflow-skinny") or "not installed"
    versions["git_commit"] = source_commit()
    return versions


def source_commit() -> str:
    """The git commit of the checkout this cnnsearch runs from (``+dirty`` with uncommitted changes to it), or ``none``.

    Asked of the package's own folder, not of the working directory: a user's own repository
    says nothing of the code that trained. An installed copy, in no checkout, has none.
    """
    package = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=5, check=True).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", "__init__.py")  # tracked here: the package is this checkout's source
        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--", ".") else "")
    except (OSError, subprocess.SubprocessError):
        return "none"


@dataclass
class Recorder:
    """Writes one study to MLflow: its parent run and a child run per trial."""

    client: Any
    experiment_id: str
    parent_run_id: str

    def __getstate__(self) -> dict[str, str]:
        # Ray Tune pickles its callbacks with the experiment: keep the ids, reconnect on load.
        return {"uri": self.client.tracking_uri, "experiment_id": self.experiment_id, "parent_run_id": self.parent_run_id}

    def __setstate__(self, state: dict[str, str]) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=state["uri"])
        self.experiment_id, self.parent_run_id = state["experiment_id"], state["parent_run_id"]

    @classmethod
    def open(
        cls,
        client: Any,
        *,
        experiment: str,
        study: str,
        space_hash: str,
        parent_run_id: str | None = None,
        tags: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        files: list[str | Path] = (),
        objectives: Sequence[Objective] = (ACCURACY,),
        knobs: Sequence[str] = (),
    ) -> Recorder:
        """Create the study's parent run, or reopen it by id when resuming, and save the UI's view of its trials:
        ``objectives`` and the searched ``knobs`` as its columns (see :mod:`.views`)."""
        found = client.get_experiment_by_name(experiment)
        # The kind spares the user MLflow's question of what the experiment is for; the UI's view it does not choose (see .views).
        experiment_id = found.experiment_id if found else client.create_experiment(
            experiment, tags={"mlflow.experimentKind": "custom_model_development"}
        )
        if parent_run_id is not None:
            client.update_run(parent_run_id, status="RUNNING")
            save_trials_view(client, experiment_id, study=study, parent_run_id=parent_run_id, objectives=objectives, knobs=knobs)
            return cls(client, experiment_id, parent_run_id)
        tags = {Tags.STUDY: study, Tags.SPACE_HASH: space_hash, **(tags or {})}
        if files:
            tags[Tags.SPACE_FILE] = Path(files[0]).name
        run = client.create_run(experiment_id, run_name=study, tags=tags)
        save_trials_view(client, experiment_id, study=study, parent_run_id=run.info.run_id, objectives=objectives, knobs=knobs)
        recorder = cls(client, experiment_id, run.info.run_id)
        recorder._log_params(run.info.run_id, {**environment(), **(params or {})})
        for file in files:
            client.log_artifact(run.info.run_id, str(file))
        return recorder

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(run_id, params=items[start : start + _MAX_PARAMS])

    def _log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(key, float(value), stamp, step) for key, value in metrics.items()]
        self.client.log_batch(run_id, metrics=items)

    def start_trial(self, trial_id: str, knobs: dict[str, Any], *, space_hash: str, tags: dict[str, str] | None = None) -> str:
        """Create the trial's child run with its knobs, as params only: as metrics too, each would be one more chart in
        the UI, before the accuracy's; ``cnnsearch query --where`` compares them as numbers."""
        run_id = self._create_trial(trial_id, space_hash, tags or {})
        self._log_params(run_id, knobs)
        return run_id

    def _create_trial(self, trial_id: str, space_hash: str, tags: dict[str, str]) -> str:
        tags = {Tags.PARENT: self.parent_run_id, Tags.TRIAL: trial_id, Tags.SPACE_HASH: space_hash, **tags}
        return self.client.create_run(self.experiment_id, run_name=trial_name(trial_id), tags=tags).info.run_id

    def record_trial(self, trial_id: str, knobs: dict[str, Any], *, space_hash: str, tags: dict[str, str], arch: Arch,
                     cost: dict[str, float], recipe: dict[str, Any], result: dict[str, float], step: int) -> str:
        """A trial that did not train, whole and completed, in four writes: a tabular trial, whose ``result`` (its
        accuracy and training time, at epoch ``step``) its table holds. It is recorded as a trained trial is, its
        status last: a study that a kill stops halfway through discards it when it resumes."""
        from mlflow.entities import Metric, Param, RunTag

        run_id = self._create_trial(trial_id, space_hash, tags | _arch_tags(arch))
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, ARCH_FILE).write_text(_arch_file(arch))
            Path(folder, RECIPE_FILE).write_text(json.dumps(recipe, indent=2))
            self.client.log_artifacts(run_id, folder)
        stamp = int(time.time() * 1000)
        metrics = [Metric(key, float(value), stamp, 0) for key, value in cost.items()]
        metrics += [Metric(key, float(value), stamp, step) for key, value in result.items()]
        params = [Param(key, str(value)) for key, value in knobs.items()]
        *earlier, last = [params[start : start + _MAX_PARAMS] for start in range(0, len(params), _MAX_PARAMS)] or [[]]
        for chunk in earlier:
            self.client.log_batch(run_id, params=chunk)
        self.client.log_batch(run_id, metrics=metrics, params=last, tags=[RunTag(Tags.STATUS, Status.COMPLETED)])
        self.client.set_terminated(run_id, _RUN_STATE[Status.COMPLETED])
        return run_id

    def unfinished(self) -> dict[str, str | None]:
        """The child runs that a crash left unfinished, by run id, each with its trial's folder in Tune's storage."""
        return {run.info.run_id: run.data.tags.get(Tags.TRIAL_DIR) for run in self._children() if Tags.STATUS not in run.data.tags}

    def accuracies(self, run_id: str) -> dict[int, float]:
        """A trial's validation accuracy after each epoch it logged."""
        return {m.step: m.value for m in self.client.get_metric_history(run_id, Metrics.VAL_ACC)}

    def logged_epochs(self, run_id: str) -> int:
        """The last epoch a trial's run holds metrics of."""
        return max(self.accuracies(run_id), default=0)

    def discard_failed(self) -> None:
        """Delete the failed child runs: their trials run again."""
        for run in self._children():
            if run.data.tags.get(Tags.STATUS) == Status.FAILED:
                self.discard(run.info.run_id)

    def discard(self, run_id: str) -> None:
        self.client.delete_run(run_id)

    def note_interrupted(self, run_id: str) -> None:
        """A trial stopped by Ctrl-C: unfinished (no status), it goes on when the study resumes."""
        self.client.set_tag(run_id, Tags.REASON, INTERRUPTED)
        self.client.set_terminated(run_id, "KILLED")

    def resume_trial(self, run_id: str) -> None:
        if self.client.get_run(run_id).data.tags.get(Tags.REASON) == INTERRUPTED:
            self.client.delete_tag(run_id, Tags.REASON)
        self.client.update_run(run_id, status="RUNNING")

    def interrupt_study(self) -> None:
        self.client.set_terminated(self.parent_run_id, "KILLED")

    def set_trial_dir(self, run_id: str, path: str) -> None:
        self.client.set_tag(run_id, Tags.TRIAL_DIR, path)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])

    def set_planned_trials(self, trials: int) -> None:
        self.client.set_tag(self.parent_run_id, Tags.TRIALS, str(trials))

    def _children(self) -> list[Any]:
        """The study's trial runs (an export run is a child too, but not a trial)."""
        return self.client.search_runs(
            [self.experiment_id], filter_string=TRIALS_OF.format(parent=self.parent_run_id), max_results=50000
        )

    def log_arch(self, run_id: str, arch: Arch, cost: dict[str, int]) -> None:
        """The trial's architecture file, its costs and its tags: families, digest and, of a NAS-Bench-201 network, its cell's string."""
        self.set_tags(run_id, _arch_tags(arch))
        self._log_metrics(run_id, cost)
        self.client.log_text(run_id, _arch_file(arch), ARCH_FILE)

    def log_recipe(self, run_id: str, recipe: dict[str, Any]) -> None:
        """The recipe the trial trains with (its searched keys drawn), as ``recipe.json``: what its export retrains with."""
        self.client.log_dict(run_id, recipe, RECIPE_FILE)

    def log_weights(self, run_id: str, path: str | Path) -> None:
        """A trial's weights file, as ``checkpoint/weights.pt``."""
        self.client.log_artifact(run_id, str(path), CHECKPOINT_FOLDER)

    def log_epoch(self, run_id: str, metrics: dict[str, Any], epoch: int) -> None:
        """An epoch's metrics, and the compile time so far of a trial that compiles; with the first,
        how the trial trains: its peak learning rate and precision."""
        logged = {key: metrics[key] for key in (*Metrics.PER_EPOCH, Metrics.PEAK_RSS) if key in metrics}
        if metrics.get(Metrics.COMPILE_SECONDS):
            logged[Metrics.COMPILE_SECONDS] = metrics[Metrics.COMPILE_SECONDS]
        self._log_metrics(run_id, logged, step=epoch)
        if epoch == 1 and Metrics.PEAK_LR in metrics:
            self._log_metrics(run_id, {Metrics.PEAK_LR: metrics[Metrics.PEAK_LR]})
            self._log_params(run_id, {Params.PRECISION: metrics[Params.PRECISION]})

    def finish_trial(self, run_id: str, status: str, reason: str = "") -> None:
        self.client.set_tag(run_id, Tags.STATUS, status)
        if status != Status.COMPLETED:
            # The UI's runs list marks a stopped-early run finished like a completed one: its name says which.
            name = trial_name(self.client.get_run(run_id).data.tags[Tags.TRIAL])
            self.client.update_run(run_id, name=f"{name} ({status})")
        if reason:
            self.client.set_tag(run_id, Tags.REASON, reason[:5000])
        self.client.set_terminated(run_id, _RUN_STATE[status])

    def trials(self) -> list[dict[str, Any]]:
        """Every finished trial of the study: status, metrics, knobs and, of a NAS-Bench-201 network, its cell's string; best first."""
        rows = []
        for run in self._children():
            status = run.data.tags.get(Tags.STATUS)
            if status is None:
                continue  # started but never finished: a resumed study runs it again
            metrics = run.data.metrics
            rows.append(
                {
                    "trial_id": run.data.tags[Tags.TRIAL],
                    "run_id": run.info.run_id,
                    "status": status,
                    "cell": run.data.tags.get(Tags.CELL),
                    Metrics.VAL_ACC: metrics.get(Metrics.VAL_ACC) if status in SCORED else None,
                    Metrics.PARAMS: metrics.get(Metrics.PARAMS),
                    Metrics.MACS: metrics.get(Metrics.MACS),
                    Metrics.FLOPS: metrics.get(Metrics.FLOPS),
                    Metrics.LATENCY: metrics.get(Metrics.LATENCY),
                    "knobs": {k: v for k, v in run.data.params.items() if k != Params.PRECISION},
                }
                | ({Tags.NASBENCH201: run.data.tags[Tags.NASBENCH201]} if Tags.NASBENCH201 in run.data.tags else {})
            )
        return sorted(rows, key=lambda row: -1.0 if row[Metrics.VAL_ACC] is None else row[Metrics.VAL_ACC], reverse=True)

    def record(self) -> StudyRecord:
        """The study as MLflow holds it now: what queries read."""
        return record_of(self.client, self.client.get_run(self.parent_run_id))

    def finish_study(self, table: list[dict[str, Any]], best: dict[str, Any] | None, rejected: list[dict[str, Any]] = (),
                     front: Any = None, passed_over: list[dict[str, Any]] = ()) -> None:
        """The study's results table, best trial, the proposals its limits rejected (knobs and reason), the
        proposals its prefilter passed over (knobs and proxy value) and, for several objectives, its Pareto front (a DataFrame)."""
        import pandas as pd

        if front is not None:
            self.client.log_text(self.parent_run_id, front.to_csv(index=False), f"{PARETO}.csv")
        self.client.log_text(self.parent_run_id, json.dumps(table, indent=2), f"{RESULTS}.json")
        # convert_dtypes: a knob that some trials lack stays an integer column (3, not 3.0).
        self.client.log_text(self.parent_run_id, pd.DataFrame(table).convert_dtypes().to_csv(index=False), f"{RESULTS}.csv")
        self._log_metrics(self.parent_run_id, {Metrics.REJECTED: len(rejected)})
        if rejected:
            self.client.log_text(self.parent_run_id, json.dumps(list(rejected), indent=2), f"{REJECTED}.json")
            self.client.log_text(self.parent_run_id, pd.DataFrame(rejected).to_csv(index=False), f"{REJECTED}.csv")
        if passed_over:
            self._log_metrics(self.parent_run_id, {Metrics.PASSED_OVER: len(passed_over)})
            self.client.log_text(self.parent_run_id, pd.DataFrame(passed_over).to_csv(index=False), f"{PASSED_OVER}.csv")
        if best is not None:
            self.client.set_tag(self.parent_run_id, Tags.BEST_RUN, best["run_id"])
            self._log_metrics(self.parent_run_id, {Metrics.BEST_VAL_ACC: best[Metrics.VAL_ACC]})
        self.client.set_terminated(self.parent_run_id, "FINISHED")


def register_model(record: StudyRecord, network: nn.Module, sample: Tensor, expected: Tensor, *, run_name: str,
                   trial_run_id: str, params: dict[str, Any], metrics: dict[str, float]) -> dict[str, Any]:
    """Log ``network`` to an export run ``run_name`` under the study's parent run, with ``params``,
    ``metrics`` and a signature inferred from ``sample`` and its ``expected`` logits, and register it
    as its experiment's champion; returns the registered model's name, version, alias, run id and URI."""
    import mlflow
    from mlflow.models import infer_signature

    experiment = record.client.get_experiment(record.experiment_id).name
    with mlflow.start_run(experiment_id=record.experiment_id, run_name=run_name,
                          tags={Tags.PARENT: record.parent.info.run_id, Tags.EXPORT: trial_run_id}) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        info = mlflow.pytorch.log_model(
            network, name="model", registered_model_name=experiment,
            signature=infer_signature(sample.numpy(), expected.numpy()), input_example=sample[:2].numpy(),
            serialization_format="pt2",
        )
    version = info.registered_model_version
    record.client.set_registered_model_alias(experiment, "champion", version)
    return {"name": experiment, "version": int(version), "alias": "champion", "run_id": run.info.run_id,
            "uri": f"models:/{experiment}@champion"}
