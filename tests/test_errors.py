"""Bad input ends in one clear message naming the file and key, and exit status 2."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnsearch.study.settings import STATE_VERSION

GOOD_SPACE = """
family: dense
stages: [{stride: 1}, {stride: 2}]
dense: {growth_rate: [12, 24], num_layers: 4}
"""

BAD_SPACES = {
    "syntax error": ("stages: [{stride: 1}\ndense: {growth_rate: 12", "line 2"),
    "empty file": ("", "the file is empty"),
    "list at the top": ("- family: dense\n", "expected a mapping of keys to values, got a list"),
    "list where a mapping belongs": (GOOD_SPACE + "stem: [1, 2]\n", "stem: expected a mapping"),
    "unknown key": (GOOD_SPACE + "optimizer: sgd\n", "optimizer: unknown key"),
    "unknown stem key": (GOOD_SPACE + "stem: {kernel: 5}\n", "stem.kernel: unknown key"),
    "wrong type": ("family: dense\nstages: [{stride: 1}]\ndense: {num_layers: 4, growth_rate: twelve}\n", "dense.growth_rate: Input should be a valid integer"),
    "float for an int": ("family: dense\nstages: [{stride: 1}]\ndense: {num_layers: 4.5}\n", "dense.num_layers: Input should be a valid integer"),
    "empty choices": ("family: dense\nstages: [{stride: 1}]\ndense: {num_layers: 4, growth_rate: []}\n", "dense.growth_rate: empty list of choices"),
    "low above high": ("family: dense\nstages: [{stride: 1}]\ndense: {num_layers: 4, growth_rate: {low: 32, high: 12}}\n", "dense.growth_rate: low 32 > high 12"),
    "range on a category": ("family: residual\nstages: [{stride: 1}]\nresidual: {num_blocks: 1, block: {low: 1, high: 2}}\n", "residual.block: a range {low, high} needs a numeric knob"),
    "log range from zero": ("family: dense\nstages: [{stride: 1}]\ndense: {num_layers: 4, dropout: {low: 0.0, high: 0.5, log: true}}\n", "dense.dropout: a log range needs low > 0"),
    "constraint": ("family: dense\nstages: [{stride: 1}]\ndense: {num_layers: 4, compression: [0.5, 1.5]}\n", "dense.compression: Input should be less than or equal to 1"),
    "unknown family": ("family: transformer\nstages: [{stride: 1}]\n", "family: unknown family 'transformer'"),
    "unknown stage family": ("stages: [{family: [dense, attention]}]\n", "stages.0.family: unknown family"),
    "knob of another family": ("family: dense\nstages: [{stride: 1}]\ndense: {num_layers: 4, block: basic}\n", "dense.block: not a knob of family dense"),
    "family no stage uses": (GOOD_SPACE + "residual: {num_blocks: 2}\n", "residual: no stage can be of family residual"),
    "missing required knob": ("family: residual\nstages: [{stride: 1}]\n", "stages.0: family residual needs num_blocks"),
    "stage without family": ("stages: [{stride: 1}]\n", "stages.0.family: missing"),
    "bad stride": ("family: dense\nstages: [{stride: 3}]\ndense: {num_layers: 4}\n", "stages.0.stride: Input should be 1 or 2"),
    "python tag": ("family: !!python/object/apply:os.system [echo hacked]\nstages: []\n", "tags that build objects are refused"),
    "duplicate key": ("family: dense\nfamily: residual\nstages: []\n", "duplicate key 'family'"),
    "shrinks below 1x1": ("family: dense\nstages: [{stride: 2}, {stride: 2}, {stride: 2}, {stride: 2}, {stride: 2}, {stride: 2}]\ndense: {num_layers: 1}\n", "no point of the space is a valid network"),
    "unmeetable limit": (GOOD_SPACE + "limits: {max_params: 1000}\n", "limits.max_params: 1,000 cannot be met: the smallest architecture of the space has"),
    "bad limit": (GOOD_SPACE + "limits: {max_params: lots}\n", "limits.max_params"),
    "unknown sampler": (GOOD_SPACE + "search: {sampler: bayes}\n",
                        "search.sampler: Input should be 'tpe', 'random', 'grid', 'nsga2', 'evolution' or 'gp', got 'bayes'"),
    "unknown dataset": (GOOD_SPACE + "dataset: {name: mnist}\n", "dataset.name: unknown dataset 'mnist'"),
    "unknown objective metric": (GOOD_SPACE + "objectives: [{metric: val_acc, goal: max}, {metric: energy, goal: min}]\n",
                                 "objectives.1.metric: Input should be 'val_acc', 'params', 'macs', 'flops' or 'latency_ms', got 'energy'"),
    "objective goal": (GOOD_SPACE + "objectives: [{metric: val_acc, goal: max}, {metric: macs, goal: smallest}]\n",
                       "objectives.1.goal: Input should be 'max' or 'min', got 'smallest'"),
    "objectives without accuracy": (GOOD_SPACE + "objectives: [{metric: macs, goal: min}]\n", "objectives: val_acc with goal max must be one"),
    "classes against dataset": (GOOD_SPACE + "num_classes: 100\n", "num_classes: 100 does not match dataset cifar10"),
    "searched precision": (GOOD_SPACE + "recipe: {precision: [bf16, fp32]}\n", "recipe.precision: the machine's choice, not searched"),
    "recipe range on a category": (GOOD_SPACE + "recipe: {schedule: {low: 0, high: 1}}\n", "recipe.schedule: a range {low, high} needs a numeric knob"),
    "searched lr out of range": (GOOD_SPACE + "recipe: {lr: {low: 0.0, high: 0.1}}\n", "recipe.lr.low: Input should be greater than 0"),
    "recipe choice constraint": (GOOD_SPACE + "recipe: {label_smoothing: [0.1, 1.0]}\n", "recipe.label_smoothing: Input should be less than 1"),
    "unknown recipe key": (GOOD_SPACE + "recipe: {optimizer: [sgd, adam]}\n", "recipe.optimizer"),
}

BAD_ARCHS = {
    "syntax error": ("stages: [\n  - {family: dense", "line"),
    "empty file": ("# nothing\n", "the file is empty"),
    "list at the top": ("[1, 2]\n", "got a list"),
    "unknown key": ("stages: [{family: dense, num_layers: 2}]\nlayers: 3\n", "layers: unknown key"),
    "wrong type": ("stages: [{family: dense, num_layers: '2'}]\n", "stages.0.num_layers: Input should be a valid integer"),
    "unknown family": ("stages: [{family: vit}]\n", "stages.0.family: unknown family 'vit'"),
    "knob of another family": ("stages: [{family: dense, num_layers: 2, width: 64}]\n", "stages.0.width: not a knob of family dense"),
    "shrinks below 1x1": ("stages: [" + ", ".join(["{family: dense, num_layers: 1, stride: 2}"] * 6) + "]\n", "stages.5.stride: a 32x32 input shrinks below 1x1"),
    "imagenet stem on tiny input": ("input_size: 2\nstem: {style: googlenet}\nstages: [{family: dense, num_layers: 1}]\n", "stem.style"),
    "basic block with groups": ("stages: [{family: residual, num_blocks: 1, groups: 8}]\n", "stages.0: basic blocks take only groups=1"),
    "pad shortcut that drops channels": ("stem: {channels: 64}\nstages: [{family: residual, num_blocks: 1, width: 16, shortcut: pad}]\n", "stages.0: a pad shortcut cannot go from 64 to fewer (16) channels"),
    "python tag": ("!!python/object/new:dict {}\n", "tags that build objects are refused"),
}


@pytest.mark.parametrize("text, expected", BAD_SPACES.values(), ids=BAD_SPACES.keys())
def test_bad_space(text, expected, tmp_path, cli):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    status, out, err = cli("show", path)
    assert status == 2
    assert err.startswith(f"cnnsearch: error: {path}: ")
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("text, expected", BAD_ARCHS.values(), ids=BAD_ARCHS.keys())
def test_bad_architecture(text, expected, tmp_path, cli):
    path = tmp_path / "arch.yaml"
    path.write_text(text)
    status, out, err = cli("profile", path)
    assert status == 2
    assert err.startswith(f"cnnsearch: error: {path}: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_python_tag_is_never_executed(tmp_path, cli):
    marker = tmp_path / "pwned"
    path = tmp_path / "arch.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\nstages: [{{family: dense, num_layers: 1}}]\n")
    assert cli("profile", path)[0] == 2
    assert not marker.exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["profile", "resnet21"], "resnet21: neither a file nor a preset; presets: "),
        (["profile", "missing.yaml"], "missing.yaml: no such file"),
        (["show", "missing.yaml"], "missing.yaml: no such file"),
        (["profile", "resnet20", "--input-size", "0"], "expected a positive integer"),
        (["profile", "densenet_bc_100_k12", "--input-size", "2"], "stages.2.stride: a 2x2 input shrinks below 1x1"),
    ],
)
def test_bad_command_line(args, expected, cli):
    status, _, err = cli(*args)
    assert status == 2 and expected in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args, start, command",
    [
        (["run", "space.yaml", "--trails", "3"], "cnnsearch: error: unrecognized arguments: --trails 3", "cnnsearch"),
        (["run", "space.yaml", "--sampler", "bayes"],
         ("cnnsearch run: error: argument --sampler: invalid choice: 'bayes' "
          "(choose from 'tpe', 'random', 'grid', 'nsga2', 'evolution', 'gp')"), "cnnsearch run"),
        (["train", "resnet20"], "cnnsearch train: error: the following arguments are required: --dataset", "cnnsearch train"),
        (["train", "resnet20", "--dataset", "synthetic", "--epochs", "0"],
         "cnnsearch train: error: argument --epochs: expected a positive integer, got '0'", "cnnsearch train"),
        (["launch"], "cnnsearch: error: argument command: invalid choice: 'launch'", "cnnsearch"),
    ],
)
def test_command_line_errors_are_one_line_without_the_usage_block(args, start, command, cli):
    status, out, err = cli(*args)
    assert status == 2 and out == "" and "usage:" not in err
    assert err.startswith(start) and err.endswith(f" (see {command} --help)\n") and err.count("\n") == 1, err


def test_installed_command_reports_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("family: dense\nstages: [{stride: 1}]\ndense: {num_layers: 4, growth_rate: {low: 32, high: 12}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "cnnsearch", "show", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr == f"cnnsearch: error: {path}: dense.growth_rate: low 32 > high 12\n"


@pytest.mark.parametrize("flags", [["--name", "B"], ["--name", "A", "--experiment", "other"]])
def test_a_folder_that_holds_a_study_refuses_another(flags, tmp_path, cli):
    import json

    from cnnsearch import load_space

    space = Path(__file__).parent.parent / "spaces" / "resnet.yaml"
    folder = tmp_path / "study"
    folder.mkdir()
    state = {"name": "A", "space_hash": load_space(space).digest, "experiment": "resnet", "parent_run_id": "0",
             "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "settings": {}, "finished": True, "version": STATE_VERSION}
    (folder / "cnnsearch.json").write_text(json.dumps(state))
    status, _, err = cli("run", space, *flags, "--storage", folder, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert status == 2 and err.count("\n") == 1 and "holds study 'A' (experiment 'resnet')" in err, err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["study"] and [p.name for p in folder.iterdir()] == ["cnnsearch.json"]


@pytest.mark.parametrize("command", ["export", "plot"])
def test_out_refuses_a_folder_with_files_unless_forced(command, tmp_path, cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"someone's model")
    status, _, err = cli(command, "nosuch", "--out", out, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert status == 2 and f"--out {out}: not empty; add --force" in err, err
    assert (out / "model.onnx").read_bytes() == b"someone's model"
    status, _, err = cli(command, "nosuch", "--out", out, "--force", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert status == 2 and "no database" in err, err  # past the folder check, to the missing study


@pytest.mark.parametrize("name, points", [("inception", "12,884,901,888"), ("mixed", "3,443,040")])
def test_a_grid_too_large_to_run_through_is_refused_in_one_line_before_anything_is_written(tmp_path, cli, name, points):
    """The size it gives is the space's own: a mixed space's grid holds each family's knobs only
    (mixed.yaml: 3.4e6 points, not the 2.9e9 of every knob crossed)."""
    space = Path(__file__).parent.parent / "spaces" / f"{name}.yaml"
    status, _, err = cli("run", space, "--sampler", "grid", "--storage", tmp_path / "runs",
                         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert status == 2 and err.count("\n") == 1, err
    assert f"--sampler grid would enumerate {points} points, more than the 1,000,000" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["flag", "file"])
def test_an_unknown_sampler_is_refused_in_one_line_naming_the_known_ones_before_anything_is_written(where, tmp_path, cli, tiny_space):
    (tmp_path / "spaces").mkdir()
    space = tiny_space(tmp_path / "spaces", **({"search": {"sampler": "bayes"}} if where == "file" else {}))
    flags = ["--sampler", "bayes"] if where == "flag" else []
    status, out, err = cli("run", space, *flags, "--storage", tmp_path / "runs", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert status == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert "'bayes'" in err and all(f"'{name}'" in err for name in ("tpe", "random", "grid", "nsga2", "evolution", "gp")), err
    assert [path.name for path in tmp_path.iterdir()] == ["spaces"]


@pytest.mark.parametrize(
    "args, flag",
    [
        (["run", "space.yaml", "--epoch", "2"], "--epoch 2"),
        (["train", "resnet20", "--dataset", "synthetic", "--epoch", "2"], "--epoch 2"),
        (["query", "study", "--metr", "val_acc"], "--metr val_acc"),
    ],
)
def test_a_prefix_of_a_flag_is_an_unknown_flag(args, flag, cli):
    """argparse's allow_abbrev would take --epoch for --epochs, and the resume command would repeat it."""
    status, out, err = cli(*args)
    assert status == 2 and out == "" and err == f"cnnsearch: error: unrecognized arguments: {flag} (see cnnsearch --help)\n", err


def test_no_command_takes_a_flag_by_its_prefix():
    from cnnsearch.cli.entry import build_parser

    parser = build_parser()
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    assert not parser.allow_abbrev and commands.choices and not any(command.allow_abbrev for command in commands.choices.values())


def test_ui_refuses_a_store_that_is_not_there_as_query_does(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "execv", lambda *command: pytest.fail(f"the UI was started: {command}"))
    for command in (["ui"], ["query", "tiny"]):
        status, out, err = cli(*command)
        assert status == 2 and out == "" and err.count("\n") == 1, err
        assert err == f"cnnsearch: error: tracking store sqlite:///mlflow.db: no database at {tmp_path / 'mlflow.db'}; pass the study's --tracking-uri\n"
    assert list(tmp_path.iterdir()) == []
