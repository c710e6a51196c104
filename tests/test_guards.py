"""Guards for short budgets: the validation sample, ASHA's rungs, the trials importances need,
ANOVA on searched trials, and the time left."""

from __future__ import annotations

import re

import pytest

from cnnsearch import load_space
from cnnsearch.names import Metrics, Report, Status
from cnnsearch.study.progress import Progress


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _seconds(clock: str) -> int:
    hours, minutes, seconds = map(int, clock.split(":"))
    return 3600 * hours + 60 * minutes + seconds


def test_the_time_left_counts_the_trials_not_yet_started_and_never_grows_on_a_steady_run(tmp_path, tiny_space, capsys):
    """Six trials of two 60-second epochs, two at a time: 6 minutes in all. After each event, and half-way
    through each epoch, the time said to be left is what is left, and it never grows."""
    space = load_space(tiny_space(tmp_path))  # 2 epochs a trial
    clock, epoch_s, trials, together = Clock(), 60.0, 6, 2
    progress = Progress(space, trials, [], clock=clock)
    end = trials // together * space.budget.epochs * epoch_s
    said = []  # (when, seconds said to be left)

    def read() -> None:
        for line in capsys.readouterr().err.splitlines():
            found = re.search(r"(?:ETA|at most) (\d+:\d\d:\d\d)", line)
            if found:
                said.append((clock.now, _seconds(found.group(1))))

    for batch in range(trials // together):
        names = [f"abcde_{batch * together + index:05d}" for index in range(together)]
        for name in names:
            progress.started_trial(name)
        for epoch in range(1, space.budget.epochs + 1):
            clock.now += epoch_s / 2
            progress.heartbeat()
            read()
            clock.now += epoch_s / 2
            for name in names:
                progress.epoch(name, {Report.EPOCH: epoch, Metrics.VAL_ACC: 0.5, Report.TRAIN_IMAGES_PER_S: 100.0})
        for name in names:
            progress.finished(name, Status.COMPLETED, "", 0.5, {})
        read()
    # Every heartbeat says it but the first, before any epoch set a pace; every standing but the last, with nothing left.
    heartbeats = trials // together * space.budget.epochs
    assert len(said) == heartbeats - 1 + trials - 1, said
    for (when, left), (later, then_left) in zip(said, said[1:]):
        assert then_left <= left, said
    for when, left in said:
        assert abs(left - (end - when)) <= 1, (when, left, end - when)
