"""`cnnsearch query --anova/--compare`, the intervals of each aggregate, and importances, on
synthetic studies written to MLflow through cnnsearch.tracking as an ablation or a search writes them."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from optuna.trial import FixedTrial
from scipy import stats
from statsmodels.formula.api import ols
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.multicomp import pairwise_tukeyhsd
from statsmodels.stats.multitest import multipletests

from cnnsearch.analysis import median_interval, summarize
from cnnsearch.config import ConfigError
from cnnsearch.effects import anova
from cnnsearch.experiment import load_experiment
from cnnsearch.costs import profile
from cnnsearch.study import importances
from cnnsearch.study.record import design_tags
from cnnsearch.names import Status, Tags
from cnnsearch.tracking import Recorder, find_study

# conftest.py's tiny space with three levels of each factor, one epoch of 128 images, the default recipe.
SPACE = {"residual": {"num_blocks": [1, 2, 3], "width": [8, 16, 32]}, "dataset": {"subset": 128}, "budget": {"epochs": 1}, "recipe": None}

MIXED = """
name: mixed_tiny
stem: {style: cifar, channels: [8, 16]}
stages:
  - {stride: 1, family: [residual, dense]}
residual: {num_blocks: [1, 2], width: [8, 16]}
dense: {growth_rate: [4, 8], num_layers: [2, 4]}
dataset: {name: synthetic, subset: 128}
budget: {epochs: 2}
"""

# Width moves accuracy by 5 points a level; depth does nothing, and nothing interacts.
WIDTH_EFFECT = {8: 0.40, 16: 0.45, 32: 0.50}
NOISE = 0.01


def write_ablation(folder, tiny_space, name: str, design: str = "full_factorial", replicates: int = 3, seed: int = 0) -> str:
    """An ablation of residual.width x residual.num_blocks, its metrics synthetic, logged as `ablate` logs them."""
    tiny_space(folder, **SPACE)
    base = "{stem.channels: 8}" if design == "full_factorial" else "{stem.channels: 8, residual.width: 16, residual.num_blocks: 2}"
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\nspace: tiny.yaml\nbase: {base}\ndesign: {design}\nreplicates: {replicates}\n"
        "factors:\n  residual.width: [8, 16, 32]\n  residual.num_blocks: [1, 2, 3]\n"
    )
    experiment = load_experiment(folder / f"{name}.yaml")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tags = design_tags(experiment)
    recorder = Recorder.open(mlflow.MlflowClient(uri), experiment=name, study=name, space_hash=experiment.digest, tags=tags,
                             files=[folder / "tiny.yaml", folder / f"{name}.yaml"])
    noise = np.random.default_rng(seed)
    archs = {}
    for cell in experiment.cells:
        run_id = recorder.start_trial(str(cell.index), cell.knobs | {"replicate": cell.replicate}, space_hash=experiment.digest,
                                      tags=tags | {Tags.CELL: cell.key})
        key = json.dumps(cell.levels, sort_keys=True)
        if key not in archs:
            arch = experiment.space.sample(FixedTrial(cell.knobs))
            archs[key] = arch, profile(arch).to_dict()
        recorder.log_arch(run_id, *archs[key])
        accuracy = WIDTH_EFFECT[cell.levels["residual.width"]] + noise.normal(0, NOISE)
        recorder.log_epoch(run_id, {"val_acc": accuracy, "val_loss": 1 - accuracy, "train_loss": 1.0, "lr": 0.1}, epoch=1)
        recorder.finish_trial(run_id, Status.COMPLETED)
    return uri


def search_runs(uri: str, name: str) -> pd.DataFrame:
    """The study's completed trials, read the way anyone reads MLflow."""
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[name], filter_string="tags.`mlflow.parentRunId` != ''")
    return runs[runs["tags.cnnsearch.status"] == "completed"]


@pytest.fixture(scope="module")
def factorial(tmp_path_factory, tiny_space):
    return write_ablation(tmp_path_factory.mktemp("factorial"), tiny_space, "factorial")


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory, tiny_space):
    return write_ablation(tmp_path_factory.mktemp("oaat"), tiny_space, "oaat", design="one_at_a_time")


@pytest.fixture(scope="module")
def unreplicated(tmp_path_factory, tiny_space):
    return write_ablation(tmp_path_factory.mktemp("single"), tiny_space, "single", replicates=1)


def json_answer(cli, *args):
    status, out, err = cli("query", *args, "--format", "json")
    assert status == 0, err
    return json.loads(out)


def test_anova_equals_statsmodels_on_search_runs(factorial, cli):
    answer = json_answer(cli, "factorial", "--rows", "residual.width", "--cols", "residual.num_blocks", "--anova",
                         "--tracking-uri", factorial)
    runs = search_runs(factorial, "factorial")
    frame = pd.DataFrame({"w": runs["params.residual.width"], "d": runs["params.residual.num_blocks"], "acc": runs["metrics.val_acc"]})
    expected = anova_lm(ols("acc ~ C(w) * C(d)", data=frame).fit(), typ=2)
    names = {"residual.width": "C(w)", "residual.num_blocks": "C(d)", "residual.width:residual.num_blocks": "C(w):C(d)"}
    assert [term["term"] for term in answer["anova"]] == list(names)
    for term in answer["anova"]:
        row = expected.loc[names[term["term"]]]
        assert term["F"] == pytest.approx(row["F"], rel=1e-9)
        assert term["p"] == pytest.approx(row["PR(>F)"], rel=1e-9)
        assert term["df"] == pytest.approx(row["df"], rel=1e-9)
        residual = expected.loc["Residual", "sum_sq"]
        assert term["partial_eta_sq"] == pytest.approx(row["sum_sq"] / (row["sum_sq"] + residual), rel=1e-9)
    assert answer["residual"]["df"] == pytest.approx(expected.loc["Residual", "df"], rel=1e-9)
    assert set(answer) == {"anova", "residual"}


def test_one_factor_is_a_one_way_anova(factorial, cli):
    answer = json_answer(cli, "factorial", "--rows", "residual.num_blocks", "--anova", "--tracking-uri", factorial)
    runs = search_runs(factorial, "factorial")
    expected = stats.f_oneway(*(group["metrics.val_acc"] for _, group in runs.groupby("params.residual.num_blocks")))
    (term,) = answer["anova"]
    assert term["term"] == "residual.num_blocks" and term["df"] == 2
    assert term["F"] == pytest.approx(expected.statistic, rel=1e-9) and term["p"] == pytest.approx(expected.pvalue, rel=1e-9)


def test_compare_equals_tukey_hsd_per_factor(factorial, cli):
    answer = json_answer(cli, "factorial", "--rows", "residual.width", "--cols", "residual.num_blocks", "--compare",
                         "--anova", "--tracking-uri", factorial)
    assert set(answer) == {"anova", "residual", "compare"}  # both asked for: one object
    runs = search_runs(factorial, "factorial")
    for factor in ("residual.width", "residual.num_blocks"):
        expected = pairwise_tukeyhsd(runs["metrics.val_acc"].to_numpy(), runs[f"params.{factor}"].astype(int).to_numpy()).summary_frame()
        rows = [row for row in answer["compare"] if row["factor"] == factor]
        assert len(rows) == len(expected) == 3
        for row, (_, pair) in zip(rows, expected.iterrows()):
            assert (row["level"], row["versus"]) == (pair["group_t"], pair["group_c"]) and row["test"] == "Tukey HSD"
            assert type(row["level"]) is type(row["versus"]) is int  # a growth rate of 24, not 24.0
            assert row["diff"] == pytest.approx(pair["meandiff"], rel=1e-9)
            assert [row["low"], row["high"]] == pytest.approx([pair["lower"], pair["upper"]], rel=1e-9)
            assert row["p_adj"] == pytest.approx(pair["p-adj"], rel=1e-9)


def test_a_known_main_effect_is_significant_and_no_interaction_is_found(factorial, cli):
    status, out, err = cli("query", "factorial", "--rows", "residual.width", "--cols", "residual.num_blocks", "--anova",
                           "--tracking-uri", factorial)
    assert status == 0, err
    assert "residual.width: significant at alpha 0.05" in out
    assert "residual.num_blocks: not significant at alpha 0.05" in out
    assert "residual.width:residual.num_blocks: not significant at alpha 0.05" in out
    terms = {t["term"]: t for t in json_answer(cli, "factorial", "--rows", "residual.width", "--cols", "residual.num_blocks",
                                                 "--anova", "--tracking-uri", factorial)["anova"]}
    assert terms["residual.width"]["p"] < 1e-6 and terms["residual.width"]["partial_eta_sq"] > 0.9
    assert terms["residual.width:residual.num_blocks"]["p"] > 0.05


def test_one_at_a_time_compares_each_level_with_the_baseline_by_holm_corrected_welch(one_at_a_time, cli):
    answer = json_answer(cli, "oaat", "--rows", "residual.width", "--cols", "residual.num_blocks", "--compare",
                         "--tracking-uri", one_at_a_time)
    runs = search_runs(one_at_a_time, "oaat")
    for factor, other in (("residual.width", "residual.num_blocks"), ("residual.num_blocks", "residual.width")):
        part = runs[runs[f"params.{other}"] == {"residual.width": "16", "residual.num_blocks": "2"}[other]]
        base = part[part[f"params.{factor}"] == {"residual.width": "16", "residual.num_blocks": "2"}[factor]]["metrics.val_acc"]
        levels = sorted({int(level) for level in part[f"params.{factor}"]} - {16 if factor == "residual.width" else 2})
        results = [stats.ttest_ind(part[part[f"params.{factor}"] == str(level)]["metrics.val_acc"], base, equal_var=False)
                   for level in levels]
        adjusted = multipletests([r.pvalue for r in results], method="holm")[1]
        rows = [row for row in answer["compare"] if row["factor"] == factor]
        assert [row["level"] for row in rows] == levels and len(base) == 3
        for row, result, p in zip(rows, results, adjusted):
            interval = result.confidence_interval(0.95)
            assert [row["low"], row["high"]] == pytest.approx([interval.low, interval.high], rel=1e-9)
            assert row["p_adj"] == pytest.approx(p, rel=1e-9) and row["test"] == "Welch t vs baseline, Holm"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--rows", "residual.width", "--anova", "--where", "residual.width=8"], "residual.width: one level (8) among 9 trials"),
        (["--rows", "residual.width", "--cols", "residual.num_blocks", "--compare", "--where", "residual.num_blocks=2"],
         "residual.num_blocks: one level (2) among 9 trials"),
        (["--rows", "residual.width", "--anova", "--compare", "--format", "csv"], "--format csv writes one table"),
    ],
)
def test_questions_the_design_cannot_answer_are_refused_in_one_line(factorial, cli, args, expected):
    status, _, err = cli("query", "factorial", *args, "--tracking-uri", factorial)
    assert status == 2 and expected in err and "Traceback" not in err and err.count("\n") == 1, err


def test_no_residual_degrees_of_freedom_and_uncrossed_cells_are_refused(unreplicated, one_at_a_time, cli):
    status, _, err = cli("query", "single", "--rows", "residual.width", "--cols", "residual.num_blocks", "--anova",
                         "--tracking-uri", unreplicated)
    assert status == 2 and "9 trials in 9 cells leave no residual degrees of freedom" in err, err
    status, _, err = cli("query", "oaat", "--rows", "residual.width", "--anova", "--tracking-uri", one_at_a_time)
    assert status == 2 and "one-factor-at-a-time design has no crossed cells" in err, err
    runs = search_runs(one_at_a_time, "oaat")
    with pytest.raises(ConfigError, match="4 of 9 combinations of levels have no trial"):
        anova(runs, ["residual.width", "residual.num_blocks"])  # a search read as observational data, with holes


def test_each_aggregate_has_its_own_interval():
    values = pd.Series([0.40, 0.42, 0.47, 0.41, 0.52])
    mean = summarize(values, "mean")
    assert [mean["ci_low"], mean["ci_high"]] == pytest.approx(stats.t.interval(0.95, 4, loc=values.mean(), scale=stats.sem(values)))
    median = summarize(values, "median")
    # Five values cannot hold the median at 95% (their range covers 93.75%): no interval, not the range.
    assert median["median"] == 0.42 and np.isnan(median["ci_low"]) and np.isnan(median["ci_high"])
    nine = pd.Series([0.40, 0.42, 0.47, 0.41, 0.52, 0.44, 0.39, 0.45, 0.43])
    median = summarize(nine, "median")
    # Of nine, the 2nd smallest and the 2nd largest: P(2 <= Binomial(9, 1/2) <= 7) = 0.961.
    assert median["median"] == 0.43 and [median["ci_low"], median["ci_high"]] == pytest.approx([0.40, 0.47])
    assert np.isnan(summarize(values, "max")["ci_low"])  # the maximum has none
    for degenerate in ([0.5], [0.5, 0.5], [0.5, 0.5, 0.5]):  # one replicate, or no spread: never a zero-width interval
        for agg in ("mean", "median"):
            cell = summarize(pd.Series(degenerate), agg)
            assert np.isnan(cell["ci_low"]) and np.isnan(cell["ci_high"]) and cell["n"] == len(degenerate)
    for n in (2, 3):  # the range of 2 or 3 replicates covers the median 50% or 75% of the time: no "95%" interval
        assert np.isnan(summarize(pd.Series(np.linspace(0.4, 0.5, n)), "median")["ci_low"])


def test_the_median_interval_covers_the_median_as_often_as_it_says():
    draws = np.random.default_rng(0).exponential(size=(4000, 7))  # skewed; its median is ln 2
    intervals = np.array([median_interval(row) for row in draws])
    covered = (intervals[:, 0] <= np.log(2)) & (np.log(2) <= intervals[:, 1])
    assert covered.mean() >= 0.95 - 3 * np.sqrt(0.95 * 0.05 / len(draws))


def test_tables_show_n1_cells_without_an_interval_and_say_which_interval(unreplicated, factorial, cli):
    status, out, err = cli("query", "single", "--rows", "residual.width", "--cols", "residual.num_blocks",
                           "--tracking-uri", unreplicated)
    assert status == 0, err
    assert "(n=1)" in out and "±" not in out.split("\n", 1)[1] and "none for n=1 or replicates all equal" in out
    status, out, _ = cli("query", "factorial", "--rows", "residual.width", "--agg", "median", "--tracking-uri", factorial)
    assert "order-statistic interval of the median" in out and "[" in out.split("\n", 1)[1]
    status, out, _ = cli("query", "factorial", "--rows", "residual.width", "--agg", "max", "--tracking-uri", factorial)
    assert out.startswith("max val_acc (%), no interval for max") and "[" not in out and "±" not in out


@pytest.mark.parametrize("agg", ["median", "max", "mean"])
def test_plot_draws_each_aggregates_interval_or_none(factorial, cli, tmp_path, monkeypatch, agg):
    from cnnsearch import plots

    figures = {}
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.setdefault(path.name, figure) and save(figure, path))
    status, out, err = cli("plot", "factorial", "--rows", "residual.width", "--cols", "residual.num_blocks", "--agg", agg,
                           "--out", tmp_path, "--tracking-uri", factorial)
    assert status == 0, err
    assert (tmp_path / "interaction.png").read_bytes()[:4] == b"\x89PNG"
    axes = figures["interaction.png"].axes[0]
    bars = [container for container in axes.containers if container.has_yerr]
    if agg == "max":
        assert not bars and "no interval for max" in axes.get_ylabel()
    elif agg == "median":
        assert not bars  # 3 replicates a cell: no 95% interval of the median exists, and none is drawn
    else:
        assert len(bars) == 3  # one set per line, each bar from the interval's own ends
        table = pd.DataFrame(json_answer(cli, "factorial", "--rows", "residual.width", "--cols", "residual.num_blocks",
                                         "--agg", agg, "--tracking-uri", factorial))
        ends = sorted(np.round(np.concatenate([[s[0][1], s[1][1]] for c in bars for s in c.lines[2][0].get_segments()]), 9))
        assert ends == pytest.approx(sorted(np.round(np.concatenate([table["ci_low"], table["ci_high"]]) * 100, 9)))


def write_search(folder, rows: list[tuple[str, dict, float, str]]) -> str:
    """A search over the mixed space: each trial's family, knobs, last val_acc and status."""
    (folder / "mixed.yaml").write_text(MIXED)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    recorder = Recorder.open(mlflow.MlflowClient(uri), experiment="mixed", study="mixed", space_hash="0", files=[folder / "mixed.yaml"])
    client = recorder.client
    for index, (family, knobs, accuracy, status) in enumerate(rows):
        run_id = recorder.start_trial(str(index), {"stages.0.family": family} | knobs, space_hash="0")
        client.set_tag(run_id, Tags.FAMILY, family)
        for metric, value in (("params", 1000 + index), ("macs", 10000 + index)):  # what log_arch records, without building the model
            client.log_metric(run_id, metric, value)
        recorder.log_epoch(run_id, {"val_acc": accuracy}, epoch=1)
        recorder.finish_trial(run_id, status)
    return uri


def test_importances_are_per_family_and_count_stopped_trials(tmp_path, monkeypatch):
    monkeypatch.setattr("cnnsearch.study.propose.MIN_IMPORTANCE_TRIALS", 8)  # a real study needs 75 (tests/test_guards.py)
    rng = np.random.default_rng(0)
    rows = []
    for index in range(12):
        width, blocks = [8, 16][index % 2], [1, 2][index // 2 % 2]
        rows.append(("residual", {"residual.width": width, "residual.num_blocks": blocks}, 0.3 + width / 100 + rng.normal(0, 0.001),
                     Status.COMPLETED if index < 8 else Status.STOPPED_EARLY))
    for index in range(2):  # too few dense trials to score
        rows.append(("dense", {"dense.growth_rate": 4, "dense.num_layers": 2}, 0.3, Status.COMPLETED))
    found = {group.family: group for group in importances(find_study("mixed", write_search(tmp_path, rows)))}
    assert set(found) == {"residual", "dense"}
    residual = found["residual"]
    assert (residual.completed, residual.stopped_early) == (8, 4)
    assert list(residual.scores) == ["residual.width", "residual.num_blocks"] and residual.scores["residual.width"] > 0.9
    assert not found["dense"].scores and found["dense"].why.startswith("2 completed trials; importances need at least 8: ")


def test_a_search_without_importances_says_why(tmp_path, cli, monkeypatch):
    monkeypatch.setattr("cnnsearch.study.propose.MIN_IMPORTANCE_TRIALS", 3)  # a real study needs 75 (tests/test_guards.py)
    rows = [("residual", {"residual.width": 8, "residual.num_blocks": 1}, 0.3 + i / 100, Status.COMPLETED) for i in range(4)]
    uri = write_search(tmp_path, rows)
    status, out, err = cli("plot", "mixed", "--out", tmp_path / "plots", "--tracking-uri", uri)
    assert status == 0, err
    assert "no knob importances: no searched knob varies among these trials" in err
    assert not (tmp_path / "plots" / "importances.png").exists()


def test_compared_levels_keep_their_type_across_factors():
    """An integer factor beside a fractional one: growth rate 24 is reported as 24, not 24.0."""
    from cnnsearch.effects import compare

    rng = np.random.default_rng(0)
    cells = [(growth, compression) for growth in (12, 24) for compression in (0.5, 1.0) for _ in range(3)]
    runs = pd.DataFrame({"params.dense.growth_rate": [str(g) for g, _ in cells],
                         "params.dense.compression": [str(c) for _, c in cells],
                         "metrics.val_acc": [0.4 + g / 1000 + rng.normal(0, 0.01) for g, _ in cells]})
    table = compare(runs, ["dense.growth_rate", "dense.compression"])
    assert [(row.level, row.versus) for row in table.itertuples()] == [(24, 12), (1.0, 0.5)]
    assert [type(row.level) for row in table.itertuples()] == [int, float]


def test_the_libraries_say_nothing_of_their_own_without_verbose(tmp_path, tiny_space):
    """As a user runs them, each in a fresh process: MLflow creating a store's tables, Optuna creating a study in memory."""
    rows = [("residual", {"residual.width": [8, 16][i % 2], "residual.num_blocks": 1}, 0.3 + i / 100, Status.COMPLETED) for i in range(4)]
    uri = write_search(tmp_path, rows)
    # Scores the knobs' importances in Optuna: from these 4 trials, as a real study does from 75 (tests/test_guards.py).
    plot = ("import sys; import cnnsearch.study.propose as propose; propose.MIN_IMPORTANCE_TRIALS = 3; from cnnsearch.cli import main; "
            "main(sys.argv[1:])")
    commands = {
        "plot": ["-c", plot, "plot", "mixed", "--out", tmp_path / "plots", "--tracking-uri", uri],
        "run": ["run", tiny_space(tmp_path), "--dataset", "imagefolder:/no/such/folder", "--storage", tmp_path / "runs",
                "--tracking-uri", f"sqlite:///{tmp_path / 'new.db'}"],  # creates the store, then finds no data
    }
    outputs = {name: subprocess.run([sys.executable, *([] if args[0] == "-c" else ["-m", "cnnsearch"]), *map(str, args)], capture_output=True,
                                    text=True, cwd=tmp_path, check=False)
               for name, args in commands.items()}
    assert outputs["plot"].returncode == 0 and (tmp_path / "plots" / "importances.png").exists(), outputs["plot"].stderr
    assert outputs["plot"].stderr == "", outputs["plot"].stderr
    assert (tmp_path / "new.db").exists() and outputs["run"].returncode == 2
    assert outputs["run"].stderr == "cnnsearch: error: imagefolder:/no/such/folder: no such folder\n", outputs["run"].stderr


def write_mixed_outcomes(folder) -> str:
    """A search of residual trials: four completed at widths 8 and 16, two stopped early, one failed and one unfinished."""
    rows = [("residual", {"residual.width": width, "residual.num_blocks": blocks}, accuracy, status) for width, blocks, accuracy, status in (
        (8, 1, 0.30, Status.COMPLETED), (16, 1, 0.35, Status.COMPLETED), (8, 2, 0.32, Status.COMPLETED), (16, 2, 0.38, Status.COMPLETED),
        (8, 1, 0.20, Status.STOPPED_EARLY), (16, 2, 0.21, Status.STOPPED_EARLY), (8, 2, 0.10, Status.FAILED))]
    uri = write_search(folder, rows)
    recorder = Recorder.open(mlflow.MlflowClient(uri), experiment="mixed", study="mixed", space_hash="0",
                             parent_run_id=find_study("mixed", uri).parent.info.run_id)
    recorder.start_trial("7", {"stages.0.family": "residual", "residual.width": 8, "residual.num_blocks": 1}, space_hash="0")
    return uri


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    return write_mixed_outcomes(tmp_path_factory.mktemp("outcomes"))


def test_query_alone_lists_the_best_trials_and_counts_those_it_leaves_out(outcomes, cli):
    status, out, err = cli("query", "mixed", "--tracking-uri", outcomes)
    assert status == 0, err
    header, columns, *rows, note = out.splitlines()
    assert header == "top 6 of 6 trials by validation accuracy, val_acc in %" and columns.split()[:2] == ["val_acc", "params"]
    assert [row.split()[0] for row in rows] == ["38.00", "35.00", "32.00", "30.00", "21.00", "20.00"]
    assert "stopped early  trial-5" in rows[4] and {"residual.width=16", "residual.num_blocks=2"} <= set(rows[0].split())
    assert note == "1 trial failed and 1 unfinished are not in this list"

    status, out, err = cli("query", "mixed", "--top", "2", "--where", "residual.num_blocks=1", "--format", "csv", "--tracking-uri", outcomes)
    assert status == 0, err
    frame = pd.read_csv(pd.io.common.StringIO(out))
    assert list(frame["trial"]) == ["trial-1", "trial-0"] and list(frame["val_acc_pct"]) == pytest.approx([35.0, 30.0])
    assert err == "1 trial failed and 1 unfinished are not in this list\n"  # apart from the CSV


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--top", "3", "--rows", "residual.width"], "--top lists the best trials, --rows pivots them and --pareto gives their front: ask for one"),
        (["--anova"], "--cols, --anova and --compare need --rows KNOB"),
    ],
)
def test_query_refuses_a_listing_and_a_pivot_at_once(args, expected, outcomes, cli):
    status, out, err = cli("query", "mixed", *args, "--tracking-uri", outcomes)
    assert status == 2 and out == "" and err == f"cnnsearch: error: {expected}\n", err


def test_a_pivot_s_levels_unit_and_left_out_trials_are_said_once_and_alike(outcomes, cli):
    """Integer levels print as 8 and 16 in one-way and two-way tables; the CSV is in the table's unit and says so."""
    status, one_way, err = cli("query", "mixed", "--rows", "residual.width", "--tracking-uri", outcomes)
    assert status == 0, err
    assert one_way.startswith("mean val_acc (%)")
    assert [line.split("|")[0].strip() for line in one_way.splitlines()[2:4]] == ["8", "16"]
    assert one_way.splitlines()[2].split("|")[1].strip().startswith("31.00 ± ")
    assert one_way.splitlines()[-1] == "2 trials stopped early, 1 failed and 1 unfinished are not in this table"
    status, two_way, err = cli("query", "mixed", "--rows", "residual.width", "--cols", "residual.num_blocks", "--tracking-uri", outcomes)
    assert [line.split("|")[0].strip() for line in two_way.splitlines()[2:4]] == ["8", "16"]
    assert [cell.strip() for cell in two_way.splitlines()[1].split("|")] == ["residual.width / residual.num_blocks", "1", "2"]
    status, out, err = cli("query", "mixed", "--rows", "residual.width", "--format", "csv", "--tracking-uri", outcomes)
    frame = pd.read_csv(pd.io.common.StringIO(out))
    assert list(frame.columns) == ["residual.width", "mean_pct", "ci_low_pct", "ci_high_pct", "n"]
    assert list(frame["mean_pct"]) == pytest.approx([31.0, 36.5])  # as the table shows them: 31.00, 36.50
    assert err == "2 trials stopped early, 1 failed and 1 unfinished are not in this table\n"
    status, out, err = cli("query", "mixed", "--rows", "residual.width", "--compare", "--format", "csv", "--tracking-uri", outcomes)
    assert pd.read_csv(pd.io.common.StringIO(out))["diff_pct"].tolist() == pytest.approx([5.5])


def test_anova_and_comparisons_of_a_search_say_they_are_observational_and_a_design_s_do_not(tmp_path, cli):
    uri = write_mixed_outcomes(tmp_path)
    client, parent = mlflow.MlflowClient(uri), find_study("mixed", uri).parent.info.run_id
    client.log_param(parent, "sampler", "tpe")  # as run records it
    query = ["query", "mixed", "--rows", "residual.width", "--tracking-uri", uri]
    status, out, err = cli(*query, "--anova")
    assert status == 0, err
    (line,) = [line for line in out.splitlines() if line.startswith("Observational:")]
    assert line.startswith("Observational: a search (tpe) chose these trials, no design assigned their levels") and "cnnsearch ablate" in line
    assert out.index(line) < out.index("ANOVA of val_acc")
    status, out, err = cli(*query, "--compare", "--format", "json")
    assert status == 0 and json.loads(out)["compare"] and err.splitlines()[-1] == line  # on stderr, apart from the JSON
    status, out, err = cli(*query, "--format", "csv")  # no analysis, nothing to say
    assert status == 0 and "Observational" not in out + err
    client.set_tag(parent, Tags.DESIGN, "full_factorial")  # as ablate tags its parent run
    status, out, err = cli(*query, "--anova", "--compare")
    assert status == 0 and "ANOVA of val_acc" in out and "Observational" not in out + err
