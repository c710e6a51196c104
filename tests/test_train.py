"""The trainer: learns, is deterministic on CPU, honours budgets, callbacks and divergence."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from cnnsearch import Arch, build_model, load_arch
from cnnsearch.config import Recipe
from cnnsearch.data import load_dataset, split_dataset
from cnnsearch.space import Budget
from cnnsearch.train import fit_to_data, train

SMALL = Recipe(batch_size=64, lr=0.2)


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic")


@pytest.fixture(scope="module")
def split(data):
    return split_dataset(data.labels, subset=640)


def small_arch(data):
    stages = [{"family": "residual", "num_blocks": 1, "width": 16}, {"family": "residual", "num_blocks": 1, "width": 32, "stride": 2}]
    return fit_to_data(Arch.from_dict({"stem": {"channels": 16}, "stages": stages}), data)


@pytest.mark.slow
def test_learns_and_reports_every_epoch(data, split):
    reports = []
    result = train(small_arch(data), data, split, recipe=SMALL, budget=Budget(epochs=3), callback=reports.append)
    assert result.status == "completed" and result.epochs == 3 and result.images == 3 * 640
    assert [r.epoch for r in reports] == [1, 2, 3] and result.history == reports
    assert result.val_acc == reports[-1].val_acc > 0.5  # chance is 0.1
    assert reports[-1].train_loss < reports[0].train_loss
    assert result.split["val_images"] == 200 and result.train_images_per_s > 0
    assert all(report.val_images_per_s > 0 for report in reports)


@pytest.mark.slow
def test_same_seed_same_metrics_on_cpu(data, split):
    runs = [train(small_arch(data), data, split, recipe=SMALL, budget=Budget(epochs=1), seed=seed) for seed in (7, 7, 8)]
    same = [(r.val_acc, r.val_loss, r.train_loss) for r in runs]
    assert same[0] == same[1] and same[0] != same[2]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [SMALL, Recipe(batch_size=64, lr="auto", precision="bf16")], ids=["fixed-lr", "auto-lr-bf16"])
def test_resumed_training_ends_where_uninterrupted_training_does(data, split, recipe):
    """Stopped after epoch 1 of 3 and resumed from its checkpoint: the same metrics, the same weights."""
    whole = train(small_arch(data), data, split, recipe=recipe, budget=Budget(epochs=3), seed=5)
    states = []
    first = train(small_arch(data), data, split, recipe=recipe, budget=Budget(epochs=3), seed=5,
                  checkpoint=lambda state, report: states.append(copy.deepcopy(state)), callback=lambda report: True)
    assert first.status == "stopped" and len(states) == 1
    rest = train(small_arch(data), data, split, recipe=recipe, budget=Budget(epochs=3), seed=5, resume=states[0])
    assert rest.status == "completed" and [r.epoch for r in rest.history] == [1, 2, 3] and rest.images == whole.images
    assert [(r.val_acc, r.val_loss, r.train_loss, r.lr) for r in rest.history] == [(r.val_acc, r.val_loss, r.train_loss, r.lr) for r in whole.history]
    assert all(torch.equal(a, b) for a, b in zip(rest.model.state_dict().values(), whole.model.state_dict().values()))


def test_callback_stops_early(data, split):
    result = train(small_arch(data), data, split, recipe=SMALL, budget=Budget(epochs=5), callback=lambda report: True)
    assert result.status == "stopped" and len(result.history) == 1


def test_image_budget_ends_mid_epoch(data, split):
    result = train(small_arch(data), data, split, recipe=SMALL, budget=Budget(epochs=5, max_images=320))
    assert result.status == "completed" and result.images == 320 and result.epochs == 0.5
    assert len(result.history) == 1


def test_diverging_loss_ends_the_trial(data, split):
    result = train(small_arch(data), data, split, recipe=Recipe(batch_size=64, lr=1e12, warmup=0.0), budget=Budget(epochs=2))
    assert result.status == "diverged" and "training loss became" in result.message


# The recipe before issue 20: no warm-up floor, no clipping, BN's running statistics as they
# ran. At lr 0.8 resnet20's first epoch ends at chance with a validation loss in the thousands.
UNGUARDED = Recipe(batch_size=64, lr=0.8, warmup=0.0, warmup_min_steps=0, grad_clip_norm=None, bn_recalibration_images=0,
                   zero_init_residual=(), precision="fp32")


def test_an_exploded_validation_loss_at_chance_is_divergence(data, split):
    """A last epoch at chance with a validation loss far above ln(classes) is called diverged, with its values."""
    result = train(fit_to_data(load_arch("resnet20"), data), data, split, recipe=UNGUARDED, budget=Budget(epochs=1))
    assert result.status == "diverged", result.history
    assert "validation loss" in result.message and "bound 9.21 = 4 ln 10" in result.message and "chance 10" in result.message
    assert result.val_loss > 100 and result.val_acc <= 0.15


@pytest.mark.slow
def test_one_exploded_epoch_that_the_next_repairs_is_not_divergence(data, split):
    result = train(fit_to_data(load_arch("resnet20"), data), data, split, recipe=UNGUARDED, budget=Budget(epochs=2))
    assert result.status == "completed", result.message
    assert result.history[0].val_loss > 1000 and result.history[1].val_loss < 9.21


def test_aux_classifiers_train_on_their_loss_and_validation_sees_the_logits_alone(data, split):
    """GoogLeNet's auxiliary classifiers get gradients from their own losses only: if they move, those losses count."""
    module = [8, 8, 8, 4, 4, 4]
    arch = fit_to_data(Arch.from_dict({"stem": {"channels": 16}, "stages": [
        {"family": "inception", "modules": [module]},
        {"family": "inception", "stride": 2, "aux_classifiers": True, "modules": [module] * 3}]}), data)
    torch.manual_seed(0)
    initial = build_model(arch).aux_classifiers.state_dict()
    recipe = SMALL.model_copy(update={"bn_recalibration_images": 0})
    result = train(arch, data, split, recipe=recipe, budget=Budget(epochs=1, max_images=128), seed=0)
    assert result.status == "completed" and 0 <= result.val_acc <= 1
    trained = result.model.aux_classifiers.state_dict()
    assert len(result.model.aux_classifiers) == 2
    assert all(not torch.equal(initial[key], trained[key]) for key in initial if key.endswith("fc2.weight"))
    assert isinstance(result.model.eval()(torch.randn(2, 3, 32, 32)), torch.Tensor)


def test_architecture_must_fit_the_data(data, split):
    with pytest.raises(Exception, match="built for 1000 classes"):
        train(load_arch("resnet18"), data, split)


def test_train_command_prints_json(cli):
    status, out, err = cli("train", "resnet20", "--dataset", "synthetic", "--epochs", "1", "--subset", "256", "--json")
    assert status == 0, err
    result = json.loads(out)
    assert 0 <= result["val_acc"] <= 1
    assert {"val_loss", "train_images_per_s", "epochs", "seconds", "split", "status"} <= set(result)
    assert result["epochs"] == 1 and result["split"]["train_images"] == 256


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--dataset", "imagefolder:/no/such/folder"], "imagefolder:/no/such/folder: no such folder"),
        (["--dataset", "synthetic", "--device", "cuda"], "no CUDA GPU is available"),
        (["--dataset", "synthetic", "--device", "tpu"], "device 'tpu': use cpu or cuda"),
        (["--dataset", "synthetic", "--lr", "-1"], "lr: Input should be greater than 0"),
        (["--dataset", "synthetic", "--subset", "100000"], "subset 100,000 is larger than"),
    ],
)
def test_train_command_bad_input(args, expected, cli):
    status, _, err = cli("train", "resnet20", *args)
    assert status == 2 and expected in err and "Traceback" not in err


def test_train_command_fits_a_preset_to_the_data(cli):
    """lenet5 is built for 28x28 grey images; synthetic data has 32x32 colour ones."""
    status, out, err = cli("train", "lenet5", "--dataset", "synthetic", "--epochs", "1", "--subset", "128", "--json")
    assert status == 0, err
    assert json.loads(out)["status"] == "completed"


@pytest.mark.parametrize("preset", ["mobilenet_v1", "resnet18"])
def test_a_remainder_of_one_image_does_not_crash_a_network_that_reaches_1x1(preset, cli):
    # 65 = 64 + 1: batch norm after a 1x1 feature map cannot normalize one image.
    status, out, err = cli("train", preset, "--dataset", "synthetic", "--epochs", "1", "--subset", "65", "--json")
    assert status == 0, err
    assert json.loads(out)["status"] == "completed"


def test_train_command_says_what_size_a_plain_network_needs(cli):
    status, _, err = cli("train", "alexnet", "--dataset", "synthetic", "--epochs", "1")
    assert status == 2 and "a 32x32 input shrinks below 1x1" in err and "needs inputs of at least 63x63" in err


def test_train_command_input_too_small_for_the_architecture(tmp_path, cli):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "tiny" / name).mkdir(parents=True)
        Image.new("RGB", (2, 2)).save(tmp_path / "tiny" / name / "x.png")
    status, _, err = cli("train", "densenet_bc_100_k12", "--dataset", f"imagefolder:{tmp_path / 'tiny'}", "--cache-dir", tmp_path / "cache", "--val-fraction", "0.5")
    assert status == 2 and "stages.2.stride: a 2x2 input shrinks below 1x1" in err


@pytest.mark.slow  # Inductor compiles C++: half a minute
def test_train_command_compiles_once_and_reports_the_compile_time(tmp_path, cli):
    """--compile: one graph for two epochs, though evaluation runs in eval mode and the last batch is smaller (100 = 3 x 32 + 4)."""
    import torch._dynamo

    arch = tmp_path / "tiny.yaml"
    arch.write_text("stem: {channels: 8}\nstages: [{family: residual, num_blocks: 1, width: 8}]\n")
    torch.compiler.reset()
    torch._dynamo.utils.counters.clear()
    status, out, err = cli("train", arch, "--dataset", "synthetic", "--subset", "100", "--batch-size", "32", "--epochs", "2", "--compile")
    assert status == 0, err
    counters = torch._dynamo.utils.counters
    assert counters["stats"]["unique_graphs"] == 1 and counters["frames"]["total"] == 1, dict(counters)
    compiled = float(out.split("compiled in ")[1].split(" s")[0])
    seconds = float(out.split(" images in ")[1].split(" s")[0])
    assert 0 < compiled < seconds and "not counted in the images/s" in out


def test_train_command_s_progress_bar_counts_images(cli, monkeypatch):
    """Two epochs of 300 images in batches of 128 are 600 images, not six batches' 768 (each refresh shown)."""
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    status, _, err = cli("train", "lenet5", "--dataset", "synthetic", "--epochs", "2", "--subset", "300", "--batch-size", "128")
    assert status == 0, err
    counts = re.findall(r"\| (\S+)/(\S+) \[", err)  # tqdm's "| n/total [elapsed<remaining, rate]"
    assert counts and {total for _, total in counts} == {"600"} and ("600", "600") in counts, err
