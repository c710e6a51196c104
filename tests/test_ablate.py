"""`cnnsearch ablate`, `query` and `plot`: a replicated design recorded in MLflow and read back."""

from __future__ import annotations

import json
import math

import mlflow
import pandas as pd
import pytest
from scipy import stats

from cnnsearch.analysis import query

SPACE = {"dataset": {"subset": 128}, "budget": {"epochs": 1}}  # conftest.py's tiny space, one epoch of 128 images

EXPERIMENT = """
name: width_vs_depth
space: tiny.yaml
base: {stem.channels: 8}
factors:
  residual.width: [8, 16]
  residual.num_blocks: [1, 2]
replicates: 2
"""


@pytest.fixture(scope="module")
def ablation(ray_session, tmp_path_factory, tiny_space):
    """One small ablation, shared by the tests that read it."""
    from cnnsearch.cli import main

    folder = tmp_path_factory.mktemp("ablation")
    tiny_space(folder, **SPACE)
    (folder / "experiment.yaml").write_text(EXPERIMENT)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    storage = folder / "runs"
    main(["ablate", str(folder / "experiment.yaml"), "--tracking-uri", uri, "--storage", str(storage)])
    return folder, uri, storage


def trial_runs(uri):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(search_all_experiments=True, filter_string="tags.`cnnsearch.ablation` = 'width_vs_depth' and tags.`mlflow.parentRunId` != ''")


@pytest.mark.slow
def test_every_cell_runs_with_its_replicates(ablation):
    _, uri, _ = ablation
    runs = trial_runs(uri)
    assert len(runs) == 8
    cells = runs.groupby(["params.residual.width", "params.residual.num_blocks"]).size()
    assert cells.to_dict() == {("16", "1"): 2, ("16", "2"): 2, ("8", "1"): 2, ("8", "2"): 2}
    assert set(runs["params.stem.channels"]) == {"8"}
    assert sorted(runs["params.replicate"]) == ["0", "0", "0", "0", "1", "1", "1", "1"]
    assert sorted(runs["params.seed"]) == ["0", "0", "0", "0", "1", "1", "1", "1"]  # replicates differ in seed
    assert set(runs["tags.cnnsearch.status"]) == {"completed"}


@pytest.mark.slow
def test_query_equals_mlflow_search_runs_with_pandas(ablation, cli):
    _, uri, _ = ablation
    runs = trial_runs(uri)
    runs = runs[runs["tags.cnnsearch.status"] == "completed"]
    expected = runs.assign(w=runs["params.residual.width"].astype(int), d=runs["params.residual.num_blocks"].astype(int))
    grouped = expected.groupby(["w", "d"])["metrics.val_acc"]

    table = query("width_vs_depth", "residual.width", "residual.num_blocks", tracking_uri=uri)
    assert len(table) == 4
    for _, row in table.iterrows():
        values = grouped.get_group((row["residual.width"], row["residual.num_blocks"]))
        assert row["mean"] == pytest.approx(values.mean(), abs=1e-12) and row["n"] == len(values) == 2
        if values.nunique() == 1:  # two equal replicates: no spread, no interval (never a zero-width one)
            assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
            continue
        half = stats.t.ppf(0.975, 1) * values.std(ddof=1) / math.sqrt(2)
        assert row["ci_low"] == pytest.approx(values.mean() - half) and row["ci_high"] == pytest.approx(values.mean() + half)

    status, out, err = cli("query", "width_vs_depth", "--rows", "residual.width", "--agg", "max", "--format", "json", "--tracking-uri", uri)
    assert status == 0, err
    by_width = {r["residual.width"]: r for r in json.loads(out)}
    assert by_width[8]["max"] == pytest.approx(expected[expected.w == 8]["metrics.val_acc"].max()) and by_width[8]["n"] == 4

    status, out, _ = cli("query", "width_vs_depth", "--rows", "residual.num_blocks", "--where", "residual.width=16",
                         "--format", "csv", "--tracking-uri", uri)
    frame = pd.read_csv(pd.io.common.StringIO(out))
    assert list(frame.columns) == ["residual.num_blocks", "mean_pct", "ci_low_pct", "ci_high_pct", "n"]  # in percent, as the table
    wide = expected[expected.w == 16].groupby("d")["metrics.val_acc"].mean() * 100
    assert frame.set_index("residual.num_blocks")["mean_pct"].to_dict() == pytest.approx(wide.to_dict())

    status, out, _ = cli("query", "width_vs_depth", "--rows", "residual.width", "--cols", "residual.num_blocks", "--tracking-uri", uri)
    assert status == 0 and "(n=2)" in out and "95% t-interval of the mean" in out


@pytest.mark.slow
def test_pictures_are_written_and_logged(ablation):
    _, uri, storage = ablation
    pictures = {p.name for p in (storage / "plots").iterdir()}
    assert {"heatmap.png", "interaction.png", "val_acc_vs_macs.png", "val_acc_vs_params.png", "learning_curves.png"} <= pictures
    for name in pictures:
        assert (storage / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = mlflow.MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name("width_vs_depth").experiment_id],
                                filter_string="tags.`cnnsearch.study` = 'width_vs_depth'")[0]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/heatmap.png" in logged
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"tiny.yaml", "experiment.yaml"}


@pytest.mark.slow
def test_the_anova_and_comparisons_are_printed_and_logged_to_the_parent_run(ablation):
    _, uri, storage = ablation
    client = mlflow.MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name("width_vs_depth").experiment_id],
                                filter_string="tags.`cnnsearch.study` = 'width_vs_depth'")[0]
    assert parent.data.tags["cnnsearch.design"] == "full_factorial" and "cnnsearch.baseline" not in parent.data.tags
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "analysis")}
    assert logged == {f"analysis/{name}.{ext}" for name in ("anova", "comparisons") for ext in ("csv", "txt")}
    anova = pd.read_csv(storage / "analysis" / "anova.csv")
    assert list(anova["term"]) == ["residual.width", "residual.num_blocks", "residual.width:residual.num_blocks", "Residual"]
    assert list(anova["df"]) == [1, 1, 1, 4]  # 2 x 2 cells, 2 replicates each
    assert "significant at alpha 0.05" in (storage / "analysis" / "anova.txt").read_text()
    assert set(pd.read_csv(storage / "analysis" / "comparisons.csv")["test"]) == {"Tukey HSD"}


@pytest.mark.slow
def test_more_seeds_extend_the_ablation(ablation, cli):
    folder, uri, storage = ablation
    status, out, err = cli("ablate", folder / "experiment.yaml", "--tracking-uri", uri, "--storage", storage, "--seeds", "3")
    assert status == 0, err
    runs = trial_runs(uri)
    assert len(runs) == 12 and "(n=3)" in out
    assert sorted(runs["params.replicate"]).count("2") == 4


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, expected",
    [
        (["nosuch", "--rows", "x"], "no study named 'nosuch' (studies: width_vs_depth)"),
        (["width_vs_depth", "--rows", "dense.growth_rate"], "--rows 'dense.growth_rate': no such knob or factor"),
        (["width_vs_depth", "--rows", "residual.width", "--metric", "accuracy"], "--metric 'accuracy': not recorded"),
        (["width_vs_depth", "--rows", "residual.width", "--where", "residual.width"], "expected KNOB=VALUE"),
        (["width_vs_depth", "--rows", "residual.width", "--where", "residual.width=12"],
         "no completed trial has residual.width=12; values present: 8, 16"),
        (["width_vs_depth", "--rows", "residual.num_blocks", "--where", "stem.style=cfar"],
         "--where 'stem.style=cfar': no completed trial has stem.style=cfar; values present: cifar"),
    ],
)
def test_query_refuses_bad_questions(ablation, cli, args, expected):
    _, uri, _ = ablation
    status, _, err = cli("query", *args, "--tracking-uri", uri)
    assert status == 2 and expected in err and "Traceback" not in err


@pytest.mark.parametrize(
    "change, expected",
    [
        (("residual.width: [8, 16]", "dense.growth_rate: [8, 16]"), "factors.dense.growth_rate: 'dense.growth_rate' is not a knob of the space"),
        (("residual.width: [8, 16]", "residual.width: [8, 12]"), "factors.residual.width: residual.width: 12 is outside the space"),
        (("base: {stem.channels: 8}", "base: {}"), "base: The value of the parameter 'stem.channels' is not found"),
        (("base: {stem.channels: 8}", "base: {stem.channels: 8, stages.0.stride: 1}"), "stages.0.stride is fixed at 1"),
        (("replicates: 2", "replicates: 0"), "replicates: "),
        (("replicates: 2", "replicates: 2\ndesign: one_at_a_time"), "one factor at a time needs the base to hold a level"),
        (("space: tiny.yaml", "space: missing.yaml"), "missing.yaml: no such file"),
        (("name: width_vs_depth", "name: width_vs_depth\nfactor: {}"), "factor: unknown key"),
    ],
)
def test_bad_experiment_files_are_refused(tmp_path, cli, change, expected, tiny_space):
    tiny_space(tmp_path, **SPACE)
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT.replace(*change))
    status, _, err = cli("ablate", tmp_path / "experiment.yaml", "--storage", tmp_path / "runs")
    assert status == 2 and expected in err and "Traceback" not in err, err


@pytest.mark.parametrize("command", ["query", "plot"])
def test_reading_a_store_that_does_not_exist_creates_none(command, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = cli(command, "width_vs_depth", "--rows", "residual.width")
    assert status == 2 and f"tracking store sqlite:///mlflow.db: no database at {tmp_path / 'mlflow.db'}" in err
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_integer_levels_print_as_integers_though_a_trial_lacks_the_knob(ablation, cli):
    _, uri, _ = ablation
    status, out, err = cli("query", "width_vs_depth", "--rows", "residual.num_blocks", "--format", "json", "--tracking-uri", uri)
    assert status == 0, err
    assert [row["residual.num_blocks"] for row in json.loads(out)] == [1, 2]
    runs = trial_runs(uri)
    runs.loc[0, "params.residual.num_blocks"] = None  # as in a mixed-family study, where a trial has no such knob
    from cnnsearch.analysis import pivot

    table = pivot(runs[runs["tags.cnnsearch.status"] == "completed"], "residual.num_blocks", None, "val_acc")
    assert list(table["residual.num_blocks"]) == [1, 2]  # numbers, not the strings "1" and "2"


def test_a_recipe_knob_can_be_a_factor(tmp_path, cli, tiny_space):
    import optuna

    from cnnsearch.experiment import load_experiment

    tiny_space(tmp_path, **SPACE, recipe={"lr": {"low": 0.01, "high": 0.3, "log": True}})
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT.replace("residual.num_blocks: [1, 2]", "recipe.lr: [0.02, 0.2]").replace(
        "base: {stem.channels: 8}", "base: {stem.channels: 8, residual.num_blocks: 1}"))
    experiment = load_experiment(tmp_path / "experiment.yaml")
    assert len(experiment.cells) == 8
    for cell in experiment.cells:
        assert experiment.space.sample_recipe(optuna.trial.FixedTrial(cell.knobs)).lr == cell.levels["recipe.lr"]
    (tmp_path / "experiment.yaml").write_text((tmp_path / "experiment.yaml").read_text().replace("[0.02, 0.2]", "[0.02, 0.5]"))
    status, _, err = cli("ablate", tmp_path / "experiment.yaml", "--storage", tmp_path / "runs")
    assert status == 2 and "factors.recipe.lr: recipe.lr: 0.5 is outside the space" in err, err


@pytest.mark.slow
def test_a_cell_that_cannot_train_is_refused_before_anything_is_written(ray_session, tmp_path, tiny_space, cli):
    """The mobilenet stem leaves a 1x1 map before the last stage's batch norm: batch 1 cannot train, which only fitting the cell finds."""
    tiny_space(tmp_path, stem={"style": "mobilenet", "channels": 8}, stages=[{"stride": 2}] * 4,
               residual={"num_blocks": 1, "width": 8}, dataset={"subset": 64}, budget={"epochs": 1}, recipe={"precision": "fp32", "batch_size": [1, 2]})
    (tmp_path / "experiment.yaml").write_text(
        "name: batches\nspace: tiny.yaml\nfactors:\n  recipe.batch_size: [2, 1]\nreplicates: 1\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status, _, err = cli("ablate", tmp_path / "experiment.yaml", "--tracking-uri", uri, "--storage", tmp_path / "runs")
    assert status == 2 and "cannot train at batch 1" in err and "Traceback" not in err, err
    assert not (tmp_path / "runs" / "cnnsearch.json").exists()
    assert mlflow.MlflowClient(uri).search_runs([e.experiment_id for e in mlflow.MlflowClient(uri).search_experiments()]) == []
