"""--sampler grid: a point holds only the knobs of the families it uses, and each point is proposed once."""

from __future__ import annotations

from types import SimpleNamespace

from cnnsearch.config import Arch
from cnnsearch.names import Metrics, Report
from cnnsearch.space import load_space
from cnnsearch.storage import Storage
from cnnsearch.study.propose import Proposals, rejected_proposals
from cnnsearch.study.reject import Target

# Two families a stage, each family's knobs shared by its stages: residual has 2 x 2 points,
# plain 2, so the four combinations of families hold 4 + 4*2 + 2*4 + 2 = 22 architectures.
# Every knob crossed, as Optuna's GridSampler crosses them, would be 2^5 = 32 points.
MIXED = """
name: two_families
stem: {style: cifar, channels: 8}
stages:
  - {stride: 1, family: [residual, plain]}
  - {stride: 2, family: [residual, plain]}
residual: {num_blocks: [1, 2], width: [8, 16]}
plain: {num_convs: [1, 2], channels: 8, pool: none}
dataset: {name: synthetic}
"""
SHAPE = {"num_classes": 10, "input_size": 32, "in_channels": 3}


def grid_proposals(space_file, folder, **session) -> Proposals:
    """A grid study's proposals, as the driver opens them on the study's storage for a session."""
    space = load_space(space_file)
    folder.mkdir(exist_ok=True)
    plan = SimpleNamespace(storage=Storage.open(folder), options=SimpleNamespace(name=space.name), space=space,
                           settings={"seed": 0, "sampler": "grid", "prefilter": None}, trials=space.size())
    return Proposals.open(plan, Target(SHAPE, None, "fp32", "cpu"), space.size(), session.get("resumed", []), session.get("ended", []))


def completed(proposals: Proposals, trial_id: str) -> None:
    proposals.complete(trial_id, {Report.EPOCH: 1, Report.BUDGET_SPENT: True, Metrics.VAL_ACC: 0.5}, error=False, stopping=False)


def test_a_mixed_grid_holds_each_architecture_once(tmp_path):
    (tmp_path / "mixed.yaml").write_text(MIXED)
    space = load_space(tmp_path / "mixed.yaml")
    assert space.size() == len(space.grid()) == 22
    proposals = grid_proposals(tmp_path / "mixed.yaml", tmp_path / "runs")
    digests = []
    for index in range(22):
        config = proposals.suggest(f"t{index}")
        digests.append(Arch.from_dict(config["arch"]).digest)
        completed(proposals, f"t{index}")
    assert len(set(digests)) == 22
    # Nothing is left to propose: the study has run through its grid.
    assert proposals.suggest("t22") is None and proposals.exhausted and proposals.rejected == 0


def test_a_grid_study_resumed_after_a_crash_runs_every_point_once(tmp_path, tiny_space):
    """Killed with two trials running: the one that had begun goes on, the other's point is proposed
    again, and no point is proposed twice, those that the limits turned away included."""
    # 8 points; the two of width 16 and 2 blocks (18K and 20K params) are over the limit.
    space_file = tiny_space(tmp_path, limits={"max_params": 15000})
    first = grid_proposals(space_file, tmp_path / "runs")
    configs = [first.suggest(f"a{index}") for index in range(4)]
    completed(first, "a0")
    first.complete("a1", {Report.EPOCH: 1, Report.FAILED: "RuntimeError: boom", Metrics.VAL_ACC: float("nan")}, error=False, stopping=False)
    # Killed: a2 had trained an epoch and is resumed; a3 had not begun (recover discards its run).
    second = grid_proposals(space_file, tmp_path / "runs", resumed=[configs[2] | {"earlier": {1: 0.3}}])
    assert point(second.suggest("b0")) == point(configs[2])
    new = []
    for index in range(1, 10):
        config = second.suggest(f"b{index}")
        if config is None:
            break
        new.append(config)
        completed(second, f"b{index}")
    trained = [point(config) for config in [*configs[:3], *new]]
    rejected = [point(row) for row in rejected_proposals(second.study)]
    assert point(configs[3]) in trained and len(rejected) == 2
    assert sorted(trained + rejected) == sorted(point(load_space(space_file).grid().point(index)) for index in range(8))


def point(config: dict) -> tuple:
    """The tiny space's searched knobs of a trial's config, or of a rejected proposal's row."""
    knobs = config.get("record", config)
    return tuple(knobs[name] for name in ("stem.channels", "residual.num_blocks", "residual.width"))
