"""Search spaces: every shipped space samples valid networks through any Optuna sampler."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cnnsearch import ConfigError, build_model, load_space, profile
from cnnsearch.costs import cheapest, over_limits
from cnnsearch.space import Choice, Fixed, FloatRange, IntRange
from cnnsearch.study import RegularizedEvolution

from pathlib import Path

SPACES_DIR = Path(__file__).resolve().parents[1] / "spaces"
SPACES = sorted(SPACES_DIR.glob("*.yaml"))

optuna.logging.set_verbosity(optuna.logging.WARNING)


class DrawnTrial:
    """A suggester whose every answer hypothesis draws, so it can search for failing points."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.params: dict = {}

    def suggest_categorical(self, name, choices):
        self.params[name] = self.data.draw(st.sampled_from(choices), label=name)
        return self.params[name]

    def suggest_int(self, name, low, high, *, step=1, log=False):
        self.params[name] = low + step * self.data.draw(st.integers(0, (high - low) // step), label=name)
        return self.params[name]

    def suggest_float(self, name, low, high, *, step=None, log=False):
        if step:
            value = low + step * self.data.draw(st.integers(0, math.floor((high - low) / step + 1e-9)), label=name)
        else:
            value = self.data.draw(st.floats(low, high), label=name)
        self.params[name] = value
        return value


def write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_every_space_is_shipped():
    assert {p.stem for p in SPACES} >= {"densenet", "resnet", "inception", "mobilenetv2", "mobilenetv3", "mixed", "vgg"}


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_space_passes_show(path, cli):
    status, out, err = cli("show", path, "--samples", "2")
    assert status == 0, err
    assert "distinct architectures" in out and "within limits" in out


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_sample_builds_and_runs(path, data):
    space = load_space(path)
    trial = DrawnTrial(data)
    try:
        arch = space.sample(trial)
    except ConfigError:
        assume(False)
    assert set(trial.params) <= set(space.knobs())
    model = build_model(arch).train()
    images = torch.randn(2, 3, arch.input_size, arch.input_size)
    logits = model(images)
    assert logits.shape == (2, space.fixed["num_classes"])
    logits.sum().backward()
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "make_sampler, objectives",
    [
        (lambda: optuna.samplers.TPESampler(seed=0, n_startup_trials=3), 1),
        (lambda: optuna.samplers.RandomSampler(seed=0), 1),
        (lambda: optuna.samplers.NSGAIISampler(seed=0, population_size=4), 2),
        (lambda: RegularizedEvolution(population_size=3, sample_size=2, seed=0), 1),
        (lambda: RegularizedEvolution(population_size=3, sample_size=2, seed=0), 2),
        (lambda: optuna.samplers.GPSampler(seed=0, n_startup_trials=3), 2),  # with one objective: tests/test_search.py
    ],
    ids=["tpe", "random", "nsga2", "evolution", "evolution-2", "gp-2"],
)
@pytest.mark.parametrize("name", ["densenet", "mixed"])
def test_optuna_samplers_drive_the_space(make_sampler, objectives, name):
    space = load_space(SPACES_DIR / f"{name}.yaml")
    directions = ["minimize"] * objectives
    study = optuna.create_study(sampler=make_sampler(), directions=directions)

    def objective(trial):
        cost = profile(space.sample(trial))
        return (cost.params, cost.macs) if len(directions) == 2 else cost.params

    study.optimize(objective, n_trials=8)
    assert len(study.trials) == 8
    for trial in study.trials:
        # The recorded params alone rebuild the architecture: the record is complete.
        assert space.sample(optuna.trial.FixedTrial(trial.params)).digest
        assert set(trial.params) <= set(space.knobs())


def test_each_grid_point_is_an_architecture_of_its_own(tmp_path):
    space = load_space(
        write(
            tmp_path,
            """
family: residual
stages: [{stride: 1}, {stride: 2}]
residual: {num_blocks: [1, 2], width: {low: 16, high: 32, step: 16}}
head: {dropout: {low: 0.0, high: 0.2, step: 0.2}}
""",
        )
    )
    grid = space.grid()
    assert space.size() == len(grid) == 8
    assert len({space.sample(optuna.trial.FixedTrial(grid.point(index))).digest for index in range(8)}) == 8


def test_knobs_are_dotted_and_conditional_on_family(tmp_path):
    space = load_space(
        write(
            tmp_path,
            """
stages:
  - {family: [dense, residual], stride: 1, residual: {width: [16, 32]}}
  - {family: dense, stride: 2, dense: {num_layers: [2, 4]}}
dense: {growth_rate: [8, 12], num_layers: 3}
residual: {num_blocks: 1}
""",
        )
    )
    # stage 0 dense: growth(2) x stage-1 layers(2) = 4; stage 0 residual: width(2) x growth(2) x layers(2) = 8
    assert space.size() == 12
    dense = space.sample(optuna.trial.FixedTrial({"stages.0.family": "dense", "dense.growth_rate": 8, "stages.1.dense.num_layers": 4}))
    assert [s.num_layers for s in dense.stages] == [3, 4]
    assert dense.stages[0].growth_rate == dense.stages[1].growth_rate == 8
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        arch = space.sample(trial)
        assert ("stages.0.residual.width" in trial.params) == (arch.stages[0].family == "residual")
        study.tell(trial, 0.0)


def test_knob_kinds(tmp_path):
    space = load_space(
        write(
            tmp_path,
            """
family: dense
stages: [{stride: 1}]
dense:
  growth_rate: {low: 8, high: 64, log: true}
  num_layers: {low: 2, high: 10, step: 4}
  compression: 0.5
  dropout: {low: 0.0, high: 0.3}
  bn_size: [2, 4]
""",
        )
    )
    knobs = space.knobs()
    assert knobs["dense.growth_rate"] == IntRange(8, 64, 1, True)
    assert knobs["dense.num_layers"] == IntRange(2, 10, 4) and knobs["dense.num_layers"].size == 3
    assert knobs["dense.dropout"] == FloatRange(0.0, 0.3)
    assert knobs["dense.bn_size"] == Choice((2, 4))
    assert space.size() is None
    with pytest.raises(ConfigError, match="dense.dropout: a grid needs discrete knobs"):
        space.grid()
    arch = space.sample_random(0)
    assert 8 <= arch.stages[0].growth_rate <= 64 and arch.stages[0].compression == 0.5


def test_recipe_knobs_are_drawn_with_the_architecture_and_a_flag_fixes_them(tmp_path):
    space = load_space(
        write(
            tmp_path,
            """
family: dense
stages: [{stride: 1}]
dense: {num_layers: 2, growth_rate: [12, 24]}
recipe:
  lr: {low: 0.01, high: 0.3, log: true}
  batch_size: [32, 64]
  flip: [true, false]
  weight_decay: [0.0005]
  momentum: 0.8
""",
        )
    )
    knobs = space.knobs()
    assert knobs["recipe.lr"] == FloatRange(0.01, 0.3, None, True) and knobs["recipe.batch_size"] == Choice((32, 64))
    assert "recipe.weight_decay" not in knobs and space.recipe.weight_decay == 0.0005 and space.recipe.momentum == 0.8
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):
        trial = study.ask()
        space.sample(trial)
        recipe = space.sample_recipe(trial)
        assert set(trial.params) == {"dense.growth_rate", "recipe.lr", "recipe.batch_size", "recipe.flip"}
        assert (recipe.lr, recipe.batch_size, recipe.flip) == (trial.params["recipe.lr"], trial.params["recipe.batch_size"], trial.params["recipe.flip"])
        assert 0.01 <= recipe.lr <= 0.3 and recipe.momentum == 0.8
    fixed = space.override(recipe={"lr": 0.05})
    assert "recipe.lr" not in fixed.knobs() and fixed.sample_recipe(optuna.trial.FixedTrial({"recipe.batch_size": 32, "recipe.flip": True})).lr == 0.05


def test_space_sections_are_validated_and_counts_read_like_people_write_them(tmp_path):
    space = load_space(
        write(
            tmp_path,
            """
stages: [{family: dense, num_layers: 2}]
limits: {max_params: 1.5M, max_macs: 2e8}
dataset: {name: "imagefolder:/data/cifar", val_fraction: 0.2, subset: 5000}
budget: {epochs: 3, max_seconds: 60}
search: {sampler: nsga2, trials: 5}
""",
        )
    )
    assert (space.limits.max_params, space.limits.max_macs) == (1_500_000, 200_000_000)
    assert space.dataset.subset == 5000 and space.budget.epochs == 3 and space.search.sampler == "nsga2"


def test_cheapest_meets_the_limits():
    space = load_space(SPACES_DIR / "densenet.yaml")
    arch, cost = cheapest(space)
    assert over_limits(space.limits, cost) is None
    assert arch.stages[0].num_layers == 4 and arch.stages[0].growth_rate == 12


def test_a_list_knob_is_given_element_by_element(tmp_path):
    space = load_space(write(tmp_path, "stages: [{family: dense, num_layers: 2}]\nhead: {hidden: [[64, 128], 32]}\n"))
    assert space.knobs()["head.hidden.0"] == Choice((64, 128)) and space.knobs()["head.hidden.1"] == Fixed(32)
    arch = space.sample(optuna.trial.FixedTrial({"head.hidden.0": 128}))
    assert arch.head.hidden == (128, 32)
    with pytest.raises(ConfigError, match="head.hidden.1: Input should be greater than or equal to 1"):
        load_space(write(tmp_path, "stages: [{family: dense, num_layers: 2}]\nhead: {hidden: [64, 0]}\n"))
