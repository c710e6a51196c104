"""A study from start to finish: :func:`run_study` walks settings, propose, reject, launch and record.

Optuna proposes (:mod:`.propose`), each proposal is fitted to the data and checked before
it becomes a trial (:mod:`.reject`), Ray Tune schedules the trials and stops them early
(:mod:`.launch`), and MLflow records them (:mod:`.record`). With several objectives Optuna
is told each, and no trial is stopped early. A tabular study (``--tabular``) looks each
trial's accuracy up in its table instead, in the driver, without Ray (:mod:`.lookup`). The
study's state, Optuna's record and Ray Tune's checkpoints live in its storage (a folder, or
a URI that every node of a cluster reaches: :mod:`cnnsearch.storage`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import Interrupted
from ..experiment import Experiment
from ..space import Space
from ..storage import Storage
from . import lookup
from .progress import Progress, announce
from .propose import Proposals, passed_over_proposals, rejected_proposals
from .record import StudyResult, Tracker, earlier_accuracies, finish, open_study, recover, study_tags
from .reject import cell_config, check_resumed, exhausted, target
from .settings import Plan, RunOptions, resolve, save_state

__all__ = ["run_study"]


def run_study(space: Space, options: RunOptions, *, experiment: Experiment | None = None,
              started: Callable[[], None] = lambda: None, summarize: Callable[[StudyResult], None] = lambda result: None) -> StudyResult:
    """Run, resume or extend a study of ``space``, or the cells of an ablation ``experiment``.

    MLflow is the record of which trials are done: a resumed study goes on with the trials
    that a crash or Ctrl-C left unfinished from their last checkpoints (and runs again the
    ones that saved none), then runs as many new trials as are missing. ``started`` is called
    once the study exists in its storage: from then on it can be resumed. ``summarize`` is
    called with the result once every trial has run and the study's summary is written, before
    the study is marked finished: a study interrupted there is resumed, and summarized, again.

    Raises:
        ConfigError: an invalid space (or one that a tabular study's table does not hold), an
            unreachable tracking store or Ray address, or a storage folder that belongs to
            another study; all before any trial starts.
        Interrupted: Ctrl-C stopped the study before it finished; it can be resumed.
        AlreadyFinished: the study has finished, and holds every trial it is asked for: nothing ran.
    """
    plan = resolve(space, options, experiment, _start_ray)
    fit_to = target(plan)
    # Every cell is fitted and checked before anything is written: a cell that cannot be is the experiment's error.
    cells = {cell.key: cell_config(plan.space, cell, fit_to, plan.settings["seed"]) for cell in experiment.cells} if experiment else {}
    recorder = open_study(plan, tags := study_tags(plan))
    resumed, ended = recover(recorder, plan.storage)
    check_resumed(resumed, fit_to)
    done = recorder.trials()
    save_state(plan, recorder.parent_run_id, finished=False)
    started()
    recorder.set_planned_trials(max(plan.trials, len(done)))
    announce(plan, fit_to.memory)
    proposals, configs = None, []
    if experiment is not None:
        finished = {row["cell"] for row in done} | {config["cell"] for config in resumed}
        configs = resumed + [config for key, config in cells.items() if key not in finished]
        missing = len(configs)
    else:
        missing = max(plan.trials - len(done), len(resumed))
        proposals = Proposals.open(plan, fit_to, missing, resumed, ended)
    if missing > 0:
        progress = Progress(plan.space, plan.trials, done, rejected=lambda: proposals.rejected if proposals else 0)
        tracker = Tracker(recorder, plan.storage, plan.space, tags, progress)
        stopped = _run_trials(plan, tracker, missing, proposals, configs, done)
        if stopped and (progress.interrupted or sum(progress.counts.values()) < plan.trials):
            recorder.interrupt_study()
            running = f"; {progress.interrupted} interrupted trials go on from their last epoch" if progress.interrupted else ""
            raise Interrupted(f"study {options.name!r} interrupted with {progress.standing()}{running}")
    rejected = rejected_proposals(proposals.study) if proposals else []
    result = finish(plan, recorder, rejected, passed_over_proposals(proposals.study) if proposals else [])
    if proposals is not None and proposals.exhausted:
        save_state(plan, recorder.parent_run_id, finished=True)
        raise exhausted(plan.space, proposals.rejected, rejected, len(result.trials) - len(done), missing)
    summarize(result)
    save_state(plan, recorder.parent_run_id, finished=True)
    return result


def _start_ray(options: RunOptions, storage: Storage) -> tuple[dict[str, float], float]:
    from . import launch  # Ray takes seconds to import: only a study that trains pays for it

    return launch.start(options, storage)


def _run_trials(plan: Plan, tracker: Tracker, missing: int, proposals: Proposals | None, configs: list[dict[str, Any]],
                done: list[dict[str, Any]]) -> bool:
    """Run the missing trials: a tabular study's looked up in the driver, the others trained on Ray Tune; whether Ctrl-C stopped them."""
    if plan.table is not None:
        return lookup.run_trials(plan, tracker, missing, proposals=proposals, configs=configs)
    from . import launch

    earlier = earlier_accuracies(tracker.recorder, done) if proposals and plan.settings["scheduler"] == "asha" else []
    return launch.run_trials(plan, tracker, missing, proposals=proposals, configs=configs, earlier=earlier)
