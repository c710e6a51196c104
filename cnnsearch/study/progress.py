"""A study's console output: the opening line, each epoch, a heartbeat with the time left, and the standing after each trial.

:class:`Progress` keeps the counts it prints (trials done by status, the best so far, the
epochs of the running trials and the mean epoch's seconds), so each line costs the same at
any study size. The time left (:meth:`Progress.eta`) counts the trials not yet started, and
on a steady run falls as the clock does. Everything goes to stderr. Imports neither Ray nor
Optuna nor MLflow.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..names import Metrics, Report, Status
from ..space import Fixed, Space
from ..tabular import TABLE_EPOCHS
from ..tracking import trial_name
from .settings import Plan

__all__ = ["CtrlC", "Progress", "announce", "searched_knobs"]

_HEARTBEAT_S = 30.0  # the longest the driver stays silent while trials train: an epoch can take minutes


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def searched_knobs(space: Space, knobs: dict[str, Any]) -> str:
    """The knobs that the space searches, as ``name=value`` pairs."""
    names = [name for name, knob in space.knobs().items() if not isinstance(knob, Fixed) and name in knobs]
    return " ".join(f"{name}={knobs[name]}" for name in names)


def announce(plan: Plan, memory: float | None) -> None:
    """The study's opening line: its data, its trials and what each may use of ``memory``, the largest node's (None on GPUs),
    then a line for each guard for short budgets that acted; a tabular study's: its table."""
    split, trials, cpus, gpus = plan.split, plan.trials, plan.cpus, plan.gpus
    if plan.table is not None:
        print(f"{plan.options.name}: {trials} trials, each network's validation accuracy after {TABLE_EPOCHS} epochs looked up in the "
              f"{plan.table.name} table (NAS-Bench-201's, {plan.table.data.description}), not trained", file=sys.stderr, flush=True)
        return
    test = f"{len(split.test):,} test images held out" if len(split.test) else "its own test images set aside"
    print(f"{plan.options.name}: {len(split.train):,} training and {len(split.val):,} validation images of {plan.data.source} ({test}); "
          f"{trials} trials, up to {plan.concurrent} at a time ({cpus:g} CPUs" + (f", {gpus:g} GPUs" if gpus else "") + " each"
          + ("" if gpus else f", and the memory each is expected to need, of the {memory / 2**30:.1f} GiB the largest node offers")
          + ")", file=sys.stderr, flush=True)
    for note in plan.notes:
        print(note, file=sys.stderr, flush=True)


class Progress:
    """Where a study stands, and the lines that say so as its trials train and end."""

    def __init__(self, space: Space, total: int, done: list[dict[str, Any]], rejected: Callable[[], int] = lambda: 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.space, self.total, self.rejected, self.clock = space, total, rejected, clock
        self.interrupted = 0  # trials Ctrl-C stopped before their budget, to go on when the study resumes
        self.counts = Counter(row["status"] for row in done)
        self.best = next((row for row in done if row["status"] == Status.COMPLETED), None)
        # Tune trial id -> the epochs it has reported, and when it reported the last one (or started); as many as run at once.
        self.training: dict[str, tuple[int, float]] = {}
        self.epochs, self.epoch_seconds = 0, 0.0  # reported in this session, and the seconds each took: the pace of a trial
        self.slots = 0  # the most trials seen training at once: how many the cluster runs together
        self.started = self.said = clock()

    def _say(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        self.said = self.clock()

    def started_trial(self, trial_id: str) -> None:
        self.training[trial_id] = (0, self.clock())
        self.slots = max(self.slots, len(self.training))

    def epoch(self, trial_id: str, result: dict[str, Any]) -> None:
        """A trial's epoch, reported: its accuracy and pace."""
        now = self.clock()
        _, since = self.training.get(trial_id, (0, now))
        self.training[trial_id] = (int(result[Report.EPOCH]), now)
        self.epochs += 1
        self.epoch_seconds += now - since
        self._say(f"[{_clock(now - self.started)}] {trial_name(trial_id)} epoch {result[Report.EPOCH]}/"
                  f"{self.space.budget.epochs}: val_acc {result[Metrics.VAL_ACC]:.2%}, {result[Report.TRAIN_IMAGES_PER_S]:,.0f} img/s")

    def eta(self) -> float | None:
        """Seconds until every trial has trained its whole budget at the pace so far; None before the first epoch.

        Each running trial has its budget's epochs left at the mean epoch's seconds, less
        what it has trained since its last report; each trial not yet started, its whole
        budget. That work is shared by the trials that run at once, and takes no less than
        the longest running trial's. On a steady run it falls by a second each second, and
        grows only when epochs slow down. ASHA may stop trials early: it is an upper bound.
        Its cost is one term per running trial, whatever the study's size.
        """
        if not self.epochs:
            return None
        now, pace, budget = self.clock(), self.epoch_seconds / self.epochs, self.space.budget.epochs
        left = [max(0.0, (budget - done) * pace - (now - since)) for done, since in self.training.values()]
        waiting = max(0, self.total - sum(self.counts.values()) - len(left))
        together = min(max(self.slots, 1), len(left) + waiting)
        return max((sum(left) + waiting * budget * pace) / together, max(left, default=0.0)) if together else 0.0

    def heartbeat(self) -> None:
        """Between epochs: every _HEARTBEAT_S, which epoch each running trial is in, and the time left at the pace so far."""
        now = self.clock()
        if now - self.said < _HEARTBEAT_S or not self.training:
            return
        epochs = self.space.budget.epochs
        line = f"[{_clock(now - self.started)}] training: " + ", ".join(
            f"{trial_name(trial_id)} epoch {min(done + 1, epochs)}/{epochs}" for trial_id, (done, _) in self.training.items())
        if (left := self.eta()) is not None:
            line += f"; at most {_clock(left)} to go at the pace so far"
        self._say(line)

    def retried(self, trial_id: str, error: str) -> None:
        """A trial whose machine failed (its worker lost, say): Tune runs it again."""
        self._say(f"{trial_name(trial_id)}: its machine failed ({error}); it goes on from its last checkpoint")

    def interrupted_trial(self, trial_id: str) -> None:
        self.training.pop(trial_id, None)
        self.interrupted += 1

    def finished(self, trial_id: str, status: str, reason: str, val_acc: float | None, knobs: dict[str, Any]) -> None:
        """A trial's end, recorded: a failure's reason, and the study's standing with the time left."""
        self.training.pop(trial_id, None)
        self.counts[status] += 1
        if status in (Status.FAILED, Status.DIVERGED):
            self._say(f"{trial_name(trial_id)} {status}: {reason}")
        if val_acc is not None and (self.best is None or val_acc > self.best[Metrics.VAL_ACC]):
            self.best = {Metrics.VAL_ACC: val_acc, "knobs": knobs}
        left = self.eta() if sum(self.counts.values()) < self.total else None
        self._say(f"[{_clock(self.clock() - self.started)}] {self.standing()}" + (f"; ETA {_clock(left)}" if left is not None else ""))

    def standing(self) -> str:
        """Where the study stands: trials done by status, rejected proposals, the best trial."""
        counts = [f"{n} {s}" for s, n in self.counts.items() if n]
        if self.rejected():
            counts.append(f"{self.rejected()} proposals rejected")
        return (
            f"{sum(self.counts.values())}/{self.total} trials done (" + ", ".join(counts) + ")"
            + (f"; best val_acc {self.best[Metrics.VAL_ACC]:.2%} ({searched_knobs(self.space, self.best['knobs'])})" if self.best else "")
        )


class CtrlC:
    """Ctrl-C in two steps: the first is remembered (:attr:`requested`) and ``notice`` said; the second stops at once."""

    def __init__(self, notice: str) -> None:
        self.requested, self.notice = False, notice

    def request(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nCtrl-C: no new trials; {self.notice}", file=sys.stderr, flush=True)
