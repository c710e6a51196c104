"""The default recipe trains every preset and every sample of every space, even over a few dozen steps."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from cnnsearch import Arch, ConfigError, build_model, list_presets, load_arch, load_space, profile
from cnnsearch.config import Recipe
from cnnsearch.costs import over_limits
from cnnsearch.data import ImageData, split_dataset
from cnnsearch.space import Budget
from cnnsearch.train import find_lr, fit_to_data, resolve_precision, train

SPACES = sorted((Path(__file__).resolve().parents[1] / "spaces").glob("*.yaml"))

optuna.logging.set_verbosity(optuna.logging.WARNING)


def separable(size: int, classes: int = 10, count: int = 840, seed: int = 0) -> ImageData:
    """Each class a smooth colour pattern of its own under mild noise: learnable in a few dozen steps."""
    generator = torch.Generator().manual_seed(seed)
    patterns = F.interpolate(torch.rand(classes, 3, 2, 2, generator=generator), size=size, mode="bilinear") * 200
    labels = torch.arange(count) % classes
    images = (patterns[labels] + 28 + torch.randn(count, 3, size, size, generator=generator) * 12).clamp(0, 255)
    images = images.to(torch.uint8)
    stats = images.double().div(255)
    return ImageData(images, labels, tuple(f"c{i}" for i in range(classes)), "separable", f"separable-{size}",
                     tuple(stats.mean((0, 2, 3)).tolist()), tuple(stats.std((0, 2, 3)).tolist()))


CIFAR_SIZE = separable(32)
SMALL = separable(16)
# 640 training images in batches of 32: 40 steps in 2 epochs, the size of the shortest trials.
RECIPE = Recipe(batch_size=32)


def trains(arch, data: ImageData, epochs: int = 2) -> float:
    split = split_dataset(data.labels, val_fraction=0.2, seed=0)
    result = train(fit_to_data(arch, data), data, split, recipe=RECIPE, budget=Budget(epochs=epochs))
    assert result.status == "completed", result.message
    return result.val_acc


# Classic presets that this recipe does not train to 95% in 40 steps on 32x32 images (measured; issue 17 is open).
SLOW_TO_LEARN = {
    "alexnet": "needs inputs of at least 63x63",
    "lenet5": "sigmoid without batch norm stays at chance for 40 steps",
    "mobilenet_v1": "14 plain depthwise separable layers reach about 73% in 40 steps",
    "nin": "needs inputs of at least 67x67",
}
# ImageNet VGGs, left out for time: 1.5 to 4.5 minutes per case on 2 cores, their 120M-parameter classifiers
# dominating (vgg11_bn reached 95% at this rate; at twice the rate they reached 10-71%).
UNTRAINED_VGGS = ("vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "vgg19_bn")


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset",
    [pytest.param(name, marks=pytest.mark.xfail(reason=SLOW_TO_LEARN[name], strict=True)) if name in SLOW_TO_LEARN else name
     for name in list_presets() if name not in UNTRAINED_VGGS],
)
def test_every_preset_learns_in_a_few_dozen_steps(preset):
    assert trains(load_arch(preset), CIFAR_SIZE) >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
# One example a space (the same each run): each trains a network. No shrinking: a failure's seed is enough to reproduce it.
@settings(max_examples=1, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(seed=st.integers(0, 2**16))
def test_every_sample_of_every_space_learns(path, seed):
    space = load_space(path)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
    try:
        arch = space.sample(trial)
    except ConfigError:
        assume(False)  # a sample the search would reject before training
    cost = profile(arch)
    assume(over_limits(space.limits, cost) is None)
    assert trains(arch, SMALL, epochs=4) >= 0.8  # 80 steps; chance is 0.1


@pytest.mark.slow
def test_old_recipe_sits_at_chance_where_the_default_learns():
    """The defaults matter: lr 0.2 without warm-up floor, zero-init, clipping or precise BN fails this case."""
    data = separable(16, classes=3, count=240)
    arch = load_space(SPACES[[p.stem for p in SPACES].index("resnet")]).sample(
        optuna.trial.FixedTrial({"stem.channels": 16, "residual.block": "bottleneck", "residual.shortcut": "projection",
                                 **{f"stages.{i}.residual.{k}": v for i in range(3) for k, v in (("num_blocks", 3), ("width", (16, 32, 64)[i]))}})
    )
    split = split_dataset(data.labels, val_fraction=0.25, seed=0)
    old = Recipe(batch_size=32, lr=0.8, warmup_min_steps=0, grad_clip_norm=None, bn_recalibration_images=0)
    results = {name: train(fit_to_data(arch, data), data, split, recipe=recipe, budget=Budget(epochs=3))
               for name, recipe in (("old", old), ("default", Recipe(batch_size=32)))}
    assert results["default"].val_acc >= 0.95 and results["default"].val_loss < 1
    # At chance: as many right as guesses that ignore the image would get, within the central 99.9% of
    # Binomial(60, 1/3) (60 validation images, 3 classes): 9 to 32 right, 15% to 53%. Measured: 33.3%, one class for all.
    from scipy import stats

    images, chance = len(split.val), 1 / len(data.classes)
    low, high = stats.binom.interval(0.999, images, chance)
    assert images == 60 and low <= round(results["old"].val_acc * images) <= high, results["old"].history


def test_zero_init_residual_starts_the_named_families_blocks_as_the_identity():
    arch = load_arch("resnet20")
    model = build_model(arch, zero_init_residual=["residual"]).eval()
    for block in model.stages[1]:
        if block.downsample is None:
            x = torch.randn(2, block.conv1.in_channels, 16, 16).relu()
            assert torch.allclose(block(x), x)
    assert all(norm.weight.abs().sum() > 0 for norm in build_model(arch, zero_init_residual=["inverted_residual"]).modules()
               if isinstance(norm, torch.nn.BatchNorm2d))
    mobile = build_model(load_arch("mobilenet_v2_cifar"), zero_init_residual=["inverted_residual"])
    residual = [block for block in mobile.modules() if getattr(block, "use_res_connect", None) is not None]
    assert all((block.conv[-1].weight == 0).all() == block.use_res_connect for block in residual)


def test_bottleneck_silences_the_bottleneck_stages_alone():
    """The default: identity-shortcut blocks of bottleneck stages start as the identity; basic-block stages and
    blocks whose shortcut projects keep their branch."""
    arch = Arch.from_dict({"stem": {"channels": 16}, "stages": [
        {"family": "residual", "block": "basic", "num_blocks": 2, "width": 16},
        {"family": "residual", "block": "bottleneck", "num_blocks": 2, "width": 16, "stride": 2}]})
    model = build_model(arch, zero_init_residual=Recipe().zero_init_residual)
    (basic, basic_identity), (projecting, bottleneck) = model.stages
    assert basic.bn2.weight.abs().sum() > 0 and basic_identity.bn2.weight.abs().sum() > 0
    assert projecting.downsample is not None and projecting.bn3.weight.abs().sum() > 0
    assert bottleneck.downsample is None and (bottleneck.bn3.weight == 0).all()


def test_warmup_has_a_floor_in_steps():
    data = separable(16, count=400)
    split = split_dataset(data.labels, val_fraction=0.2, seed=0, subset=320)
    lrs = []
    train(fit_to_data(load_arch("resnet20"), data), data, split, recipe=Recipe(batch_size=32, warmup_min_steps=8, lr=0.1),
          budget=Budget(epochs=2), callback=lambda report: lrs.append(report.lr))
    # 20 steps, 20% warm-up would be 4 steps: the floor makes it 8, so after 10 steps the lr is 0.1 * (1 - 2/12).
    assert lrs[0] == pytest.approx(0.1 * (1 - 2 / 12))


@pytest.mark.slow
def test_learning_rate_scales_with_the_batch_and_auto_runs_a_range_test():
    assert Recipe(batch_size=1024, lr_at_256=0.1).scaled_lr(100) == pytest.approx(0.2)
    assert Recipe(batch_size=64, lr_at_256=0.2).scaled_lr(100) == pytest.approx(0.1)
    # From SHORT_STEPS to LONG_STEPS the rate at 256 grows log-linearly from lr_at_256 to lr_at_256_long.
    recipe = Recipe(batch_size=64)
    assert recipe.scaled_lr(250) == pytest.approx(0.1) and recipe.scaled_lr(2000) == recipe.scaled_lr(50_000) == pytest.approx(0.2)
    assert recipe.scaled_lr(math.isqrt(250 * 2000)) == pytest.approx(0.1 * math.sqrt(2), rel=1e-3)
    data = separable(16, count=400)
    split = split_dataset(data.labels, val_fraction=0.2, seed=0)
    arch = fit_to_data(load_arch("resnet20"), data)
    result = train(arch, data, split, recipe=Recipe(batch_size=32, lr="auto"), budget=Budget(epochs=2))
    assert 1e-4 < result.lr < 1.0 and result.history[0].peak_lr == result.lr
    assert result.val_acc >= 0.5  # chance is 0.1
    model = build_model(arch)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    from cnnsearch.data import Batches

    find_lr(model, Batches(data, split.train, batch_size=32, train=True), Recipe())
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_precision_follows_the_device():
    cpu = torch.device("cpu")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_both_cpu_precisions_train_and_are_recorded(precision):
    data = separable(16, count=400)
    split = split_dataset(data.labels, val_fraction=0.2, seed=0)
    result = train(fit_to_data(load_arch("resnet20"), data), data, split, recipe=Recipe(batch_size=32, precision=precision),
                   budget=Budget(epochs=2))
    assert result.precision == precision and result.history[-1].precision == precision
    assert result.val_acc >= 0.95
