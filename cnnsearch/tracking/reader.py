"""Reading a study back from MLflow: by name (:func:`find_study`) or by its parent run
(:func:`study_of_run`), the :class:`StudyRecord` that queries, plots and exports read, its
trial runs as plain values (:func:`trial_runs`), and how its trials ended (:func:`trial_statuses`).

A StudyRecord writes one thing: :meth:`StudyRecord.log_files` attaches a query's plots and
tables to the study's parent run.
"""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ConfigError
from ..names import DEFAULT_TRACKING_URI, Metrics, Params, Tags
from ..space import ACCURACY, Objective
from .store import TRIALS_OF, check_exists, connect, filter_value

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["StudyRecord", "TrialRun", "find_study", "record_of", "study_of_run", "trial_runs", "trial_statuses"]


@dataclass(frozen=True)
class StudyRecord:
    """What MLflow holds of one study: its parent run and its trial runs as a DataFrame.

    ``runs`` is :func:`mlflow.search_runs`'s own frame (columns ``params.*``, ``metrics.*``,
    ``tags.*``), one row per trial.
    """

    client: Any
    experiment_id: str
    parent: Any
    runs: Any

    @property
    def name(self) -> str:
        """The study's name."""
        return self.parent.data.tags[Tags.STUDY]

    @property
    def params(self) -> dict[str, str]:
        """The study's params: its settings, split, recipe and budget, as strings."""
        return self.parent.data.params

    @property
    def objectives(self) -> tuple[Objective, ...]:
        """The study's objectives; a study recorded before objectives had validation accuracy alone."""
        text = self.parent.data.tags.get(Tags.OBJECTIVES)
        return tuple(Objective.model_validate(item) for item in json.loads(text)) if text else (ACCURACY,)

    @property
    def designed(self) -> bool:
        """Whether a design assigned the trials' levels (an ablation's); a search's trials are observational data."""
        return Tags.DESIGN in self.parent.data.tags

    @property
    def baseline(self) -> dict[str, str] | None:
        """A one-factor-at-a-time ablation's baseline level of each factor, as its trials' params
        record it; None for any other study."""
        text = self.parent.data.tags.get(Tags.BASELINE)
        return json.loads(text) if text else None

    def space_file(self, folder: str | Path) -> Path | None:
        """Download the study's space file into ``folder``; None if none is on record.

        Raises:
            FileNotFoundError: it is on record, but not where MLflow keeps the run's artifacts
                (a study moved with its sqlite store: MLflow keeps artifact folders by their absolute path).
        """
        from mlflow.exceptions import MlflowException

        name = self.parent.data.tags.get(Tags.SPACE_FILE)
        try:
            return Path(self.client.download_artifacts(self.parent.info.run_id, name, str(folder))) if name else None
        except MlflowException:
            raise FileNotFoundError(f"{name} is not in {self.parent.info.artifact_uri}, where MLflow keeps the study's files") from None

    def download(self, run_id: str, path: str, folder: str | Path) -> Path | None:
        """Download the artifact ``path`` of run ``run_id`` into ``folder``; None where the run recorded no such file.

        Looked up in its folder's listing first: MLflow raises the same for a missing file as for
        a store that failed, and only the first may be taken for an absence.
        """
        listed = self.client.list_artifacts(run_id, posixpath.dirname(path) or None)
        if not any(item.path == path and not item.is_dir for item in listed):
            return None
        return Path(self.client.download_artifacts(run_id, path, str(folder)))

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in sorted(self.client.get_metric_history(run_id, metric), key=lambda m: m.step)]

    def log_files(self, paths: list[Path], folder: str) -> None:
        for path in paths:
            self.client.log_artifact(self.parent.info.run_id, str(path), folder)


@dataclass(frozen=True)
class TrialRun:
    """One trial run as plain values."""

    run_id: str
    name: str  # its run name: trial-ID, and its status after it when it did not complete
    status: str | None  # a Status; None while it has not finished
    val_acc: float  # its last validation accuracy; NaN where it recorded none
    seed: int | None = None  # the seed it trained with (an ablation replicate's is offset); None where it recorded none
    precision: str | None = None  # what its recipe's precision resolved to on its device (bf16, fp16, fp32); None where it recorded none


def trial_runs(runs: pd.DataFrame, *, best_first: bool = False) -> list[TrialRun]:
    """The trial runs of a :attr:`StudyRecord.runs` frame (or of part of it), in its order or, with
    ``best_first``, by validation accuracy, highest first."""
    column = f"metrics.{Metrics.VAL_ACC}"
    if best_first and column in runs:
        runs = runs.sort_values(column, ascending=False)
    return [
        TrialRun(run["run_id"], run[f"tags.{Tags.RUN_NAME}"], run.get(f"tags.{Tags.STATUS}"), float(run.get(column, math.nan)),
                 _seed(run.get(f"params.{Params.SEED}")), _text(run.get(f"params.{Params.PRECISION}")))
        for _, run in runs.iterrows()
    ]


def _seed(param: Any) -> int | None:
    """A trial's seed param (a string, or NaN in the frame where the run has none) as an int."""
    return int(param) if isinstance(param, str) and param not in ("", "None") else None


def _text(param: Any) -> str | None:
    """A trial's param as a string; None where the run has none (NaN in the frame)."""
    return param if isinstance(param, str) and param else None


def find_study(name: str, tracking_uri: str = DEFAULT_TRACKING_URI, experiment: str | None = None) -> StudyRecord:
    """The study called ``name`` (the newest, if several experiments hold one) and its trial runs.

    Raises:
        ConfigError: the store does not exist or cannot be reached, or holds no such study.
    """
    import mlflow

    check_exists(tracking_uri)
    client = connect(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise ConfigError(f"{tracking_uri}: no experiment named {experiment!r}")
        ids = [found.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments(max_results=50000)]
    literal = filter_value(name)
    if literal is None:  # a name no filter can hold: every study's parent, sorted out here
        studies = client.search_runs(ids, filter_string=f"tags.`{Tags.STUDY}` != ''", order_by=["attributes.start_time DESC"])
        parents = [run for run in studies if run.data.tags[Tags.STUDY] == name]
    else:
        parents = client.search_runs(ids, filter_string=f"tags.`{Tags.STUDY}` = {literal}", order_by=["attributes.start_time DESC"])
    if not parents:
        known = sorted({r.data.tags[Tags.STUDY] for r in client.search_runs(ids, filter_string=f"tags.`{Tags.STUDY}` != ''")})
        raise ConfigError(f"{tracking_uri}: no study named {name!r}" + (f" (studies: {', '.join(known)})" if known else ""))
    return record_of(client, parents[0])


def study_of_run(parent_run_id: str, tracking_uri: str = DEFAULT_TRACKING_URI) -> StudyRecord:
    """The study whose parent run is ``parent_run_id``: the study a driver ran, even where a newer one has its name.

    Raises:
        ConfigError: the store cannot be reached.
    """
    client = connect(tracking_uri)
    return record_of(client, client.get_run(parent_run_id))


def trial_statuses(client: Any, parent_run_id: str) -> list[str | None]:
    """The status of each trial run of the study whose parent run is ``parent_run_id``; None for one not finished."""
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], filter_string=TRIALS_OF.format(parent=parent_run_id), max_results=50000)
    return [run.data.tags.get(Tags.STATUS) for run in runs]


def record_of(client: Any, parent: Any) -> StudyRecord:
    """The study whose parent run is ``parent``, with its trial runs as MLflow holds them now."""
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)  # search_runs, which returns the frame, reads the global store
    runs = mlflow.search_runs(
        [parent.info.experiment_id], filter_string=TRIALS_OF.format(parent=parent.info.run_id), max_results=50000
    )
    return StudyRecord(client, parent.info.experiment_id, parent, runs)
