"""The samplers cnnsearch adds to Optuna's: regularized evolution, by its definition, and whether it searches well."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from cnnsearch.study import RegularizedEvolution

EDGES, OPS = 6, 5  # NAS-Bench-201's shape: six edges, each one of five operations
VALUES = np.random.default_rng(0).random((EDGES, OPS))  # each edge's operation's worth: a cell's score is their sum


def suggest(trial: optuna.Trial) -> dict[str, int]:
    return {f"edge{i}": trial.suggest_categorical(f"edge{i}", list(range(OPS))) for i in range(EDGES)}


def score(params: dict[str, int]) -> float:
    return float(sum(VALUES[i, params[f"edge{i}"]] for i in range(EDGES)))


def differing(a: dict, b: dict) -> set[str]:
    return {name for name in a.keys() | b.keys() if a.get(name) != b.get(name)}


def uniform(op: int) -> dict[str, int]:
    return {f"edge{i}": op for i in range(EDGES)}


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_each_child_is_the_tournament_winner_with_one_knob_changed(direction):
    """With tournaments as large as the population the parent is the population's best: the child differs from it in one knob."""
    sampler = RegularizedEvolution(population_size=4, sample_size=4, seed=0)
    study = optuna.create_study(direction=direction, sampler=sampler)
    sign = 1 if direction == "maximize" else -1
    for _ in range(60):
        population = sampler.population(study)
        trial = study.ask()
        params = suggest(trial)
        if len(population) == 4:
            best = (max if direction == "maximize" else min)(population, key=lambda member: member.value)
            assert len(differing(params, best.params)) == 1
        study.tell(trial, sign * score(params))


def test_the_oldest_member_leaves_the_population_even_when_it_is_the_best():
    """The population is the last trials to complete, in the order they completed, not the best ones."""
    sampler = RegularizedEvolution(population_size=3, sample_size=3, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for op in range(4):
        study.enqueue_trial(uniform(op))
    trials = [study.ask() for _ in range(4)]
    for trial in trials:
        suggest(trial)
    # Trial 3 completes first and is by far the best; then 0, 1, 2, each better than the last.
    for number, value in [(3, 100.0), (0, 1.0), (1, 2.0), (2, 3.0)]:
        study.tell(trials[number], value)
    assert [member.number for member in sampler.population(study)] == [0, 1, 2]
    for _ in range(10):
        child = study.ask()
        # Trial 2 (all edges op 2) is the best left; trial 3 (all op 3) is gone: elitism would keep breeding from it.
        assert len(differing(suggest(child), uniform(2))) == 1
        study.tell(child, state=optuna.trial.TrialState.FAIL)  # failed trials never join the population


def test_several_objectives_breed_from_the_sample_s_undominated_members():
    sampler = RegularizedEvolution(population_size=3, sample_size=3, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    # Op 0's cell is accurate and large, op 1's small and less accurate: neither dominates. Op 2's is dominated by op 0's.
    for op, values in [(0, (0.9, 10.0)), (1, (0.5, 1.0)), (2, (0.8, 20.0))]:
        study.enqueue_trial(uniform(op))
        trial = study.ask()
        suggest(trial)
        study.tell(trial, values)
    parents = []
    for _ in range(30):
        params = suggest(study.ask())
        (parent,) = [op for op in range(3) if len(differing(params, uniform(op))) == 1]
        parents.append(parent)
    assert set(parents) == {0, 1}


def test_a_knob_the_parent_lacks_is_drawn():
    """Define-by-run: when the mutation switches a conditional knob, the knobs that come with it are drawn, and nothing else changes."""
    sampler = RegularizedEvolution(population_size=2, sample_size=2, seed=1)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def conditional(trial: optuna.Trial) -> dict:
        kind = trial.suggest_categorical("kind", ["conv", "pool"])
        extra = trial.suggest_int("kernel", 1, 7, step=2) if kind == "conv" else trial.suggest_categorical("pool", ["max", "avg"])
        return {"kind": kind, "detail": extra, "width": trial.suggest_int("width", 8, 64)}

    switched = 0
    for _ in range(40):
        best = max(sampler.population(study), key=lambda member: member.value, default=None)
        trial = study.ask()
        params = conditional(trial)
        if best is not None and len(sampler.population(study)) == 2:
            changed = differing(trial.params, best.params)
            assert len(changed) == 1 or changed == {"kind", "kernel", "pool"}
            switched += "kind" in changed
        study.tell(trial, params["width"] + (10 if params["kind"] == "conv" else 0) + trial.number / 1000)  # no ties: one best
    assert switched


def params_of(seed: int, trials: int = 40) -> list[dict]:
    study = optuna.create_study(direction="maximize", sampler=RegularizedEvolution(seed=seed))
    for _ in range(trials):
        trial = study.ask()
        study.tell(trial, score(suggest(trial)))
    return [trial.params for trial in study.trials]


def test_evolution_is_deterministic_given_its_seed():
    assert params_of(5) == params_of(5)
    assert params_of(5) != params_of(6)


def picked(sampler: optuna.samplers.BaseSampler, seed: int, trials: int = 100) -> float:
    """The true score of the cell a study of noisy evaluations would pick: its best by recorded value."""
    noise = np.random.default_rng(seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(trials):
        trial = study.ask()
        study.tell(trial, score(suggest(trial)) + noise.normal(0, 0.05))
    return score(study.best_params)


def test_evolution_beats_random_search_on_a_nas_bench_201_shaped_space():
    """100 trials over 6 edges of 5 operations (15,625 cells), 10 seeds: evolution's median pick beats random search's."""
    evolution = [picked(RegularizedEvolution(seed=seed), seed) for seed in range(10)]
    random = [picked(optuna.samplers.RandomSampler(seed=seed), seed) for seed in range(10)]
    assert np.median(evolution) > np.median(random) + 0.1, (np.median(evolution), np.median(random))


def test_impossible_tournaments_are_refused():
    with pytest.raises(ValueError, match="1 <= sample_size <= population_size must hold"):
        RegularizedEvolution(population_size=3, sample_size=4)
