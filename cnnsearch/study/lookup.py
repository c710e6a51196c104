"""Running a tabular study's trials in the driver: each one's accuracy looked up in its table, not trained.

A lookup takes microseconds where Ray would take seconds to start and Tune milliseconds per
trial, so :func:`run_trials` runs the trials one after another in this process: it asks
:class:`~.propose.Proposals` for each (or takes an ablation's cells in turn), looks the
network up in the study's :class:`~cnnsearch.tabular.Table` with the trial's seed, has the
:class:`~.record.Tracker` write it to MLflow as a completed trial, and tells Optuna its
values, as a trained trial's are told. The first Ctrl-C stops the study between two trials;
a second stops it at once, and the trial it cuts short is discarded when the study resumes.
Imports neither Ray nor Optuna nor MLflow.
"""

from __future__ import annotations

import signal
import uuid
from typing import Any

from ..config import Arch
from ..names import Metrics, Params, Report
from ..tabular import TABLE_EPOCHS, Table
from .progress import CtrlC
from .propose import Proposals
from .record import Tracker
from .settings import Plan

__all__ = ["run_trials"]


def _result(table: Table, config: dict[str, Any]) -> dict[str, Any]:
    """What a trained trial would report at the end of its budget, from the table: the trial's seed picks the cell's seed."""
    found = table.look_up(Arch.from_dict(config["arch"]), config["record"][Params.SEED])
    return {Report.EPOCH: TABLE_EPOCHS, Report.BUDGET_SPENT: True, Metrics.VAL_ACC: found.val_acc, Metrics.TRAIN_SECONDS: found.train_seconds}


def run_trials(plan: Plan, tracker: Tracker, missing: int, *, proposals: Proposals | None = None,
               configs: list[dict[str, Any]] = ()) -> bool:
    """Look up ``missing`` trials, a search's ``proposals`` or an ablation's cell ``configs``, in ``plan.table``.

    Returns:
        Whether Ctrl-C stopped them before they were all done.
    """
    stop, cells = CtrlC("the study stops after this one and can be resumed. Ctrl-C again stops it now."), iter(configs)
    session = uuid.uuid4().hex[:5]  # trial ids, as Tune's: unique across the sessions of a resumed study
    previous = signal.signal(signal.SIGINT, stop.request)
    try:
        for index in range(missing):
            if stop.requested:
                break
            trial_id = f"{session}_{index:05d}"
            config = proposals.suggest(trial_id) if proposals is not None else next(cells)
            if config is None:  # too many proposals were rejected: run_study says so
                break
            result = _result(plan.table, config)
            tracker.looked_up(trial_id, config, result)
            if proposals is not None:
                proposals.complete(trial_id, result, error=False, stopping=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    return stop.requested
