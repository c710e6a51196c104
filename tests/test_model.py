"""Building networks from architectures: determinism, round trips, families, profiling."""

from __future__ import annotations

import copy
from typing import get_args

import pytest
import torch

from cnnsearch import Arch, ConfigError, build_model, load_arch, profile, save_arch
from cnnsearch.config import Row
from cnnsearch.model import TrainingOutput
from cnnsearch.registry import get_family, list_families, register_family


def small(**stage) -> Arch:
    return Arch.from_dict({"stem": {"channels": 16}, "stages": [stage]})


def test_registry_refuses_duplicates_and_names_the_known_families():
    assert {"dense", "residual", "inception", "inverted_residual"} <= set(list_families())
    with pytest.raises(ValueError, match="'dense' is registered twice"):
        register_family(get_family("dense"))
    with pytest.raises(KeyError, match="known: cell, dense, "):
        get_family("transformer")


# Families that take one of two forms, none of whose knobs alone is required: the form the test builds.
EITHER_FORM = {"inverted_residual": {"channels": 4}}  # channels, or a table of blocks


def required_knobs(family: str) -> dict:
    """Small values for the knobs a family requires: 4 for a number, one row of 4s for a table."""
    values = dict(EITHER_FORM.get(family, {}))
    for name, field in get_family(family).knobs.model_fields.items():
        if field.is_required():
            row = next((arg for arg in get_args(field.annotation) if isinstance(arg, type) and issubclass(arg, Row)), None)
            values[name] = [[4] * len(row.model_fields)] if row else 4
    return values


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("family", list_families())
def test_every_family_builds_trains_and_keeps_its_output_size_rule(family, stride):
    stage = {"family": family, "stride": stride, **required_knobs(family)}
    arch = Arch.from_dict({"stem": {"channels": 8}, "stages": [stage, stage]})
    torch.manual_seed(0)
    model = build_model(arch).train()
    images = torch.randn(2, 3, 32, 32)
    features = model.stages(model.stem(images))
    size = arch.stem.output_size(32)
    for config in arch.stages:
        size = config.output_size(size)
    assert features.shape[-2:] == (size, size)
    logits = model(images)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ["resnet20", "densenet_bc_100_k12", "mobilenet_v2_cifar", "googlenet"])
def test_saved_architecture_reloads_and_builds_the_same_model(name, tmp_path):
    arch = load_arch(name)
    save_arch(arch, tmp_path / "arch.yaml")
    again = load_arch(tmp_path / "arch.yaml")
    assert again == arch and again.digest == arch.digest
    torch.manual_seed(3)
    first = build_model(arch).state_dict()
    torch.manual_seed(3)
    second = build_model(again).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_digest_ignores_the_name_only():
    arch = load_arch("resnet20")
    assert arch.model_copy(update={"name": "other"}).digest == arch.digest
    assert load_arch("resnet56").digest != arch.digest


def test_digests_of_architectures_written_before_the_new_head_knobs_do_not_change():
    """Studies recorded before MLP and conv heads existed still find their architectures by digest."""
    assert load_arch("resnet20").digest == "dbeddac8e458fe0c"
    assert "hidden" not in load_arch("resnet20").to_dict()["head"]


def test_digests_of_architectures_written_before_mobilenet_v3_and_aux_classifiers_do_not_change():
    """Kernel size, activation, blocks, aux_classifiers and batch_norm stay out of files at their defaults."""
    assert load_arch("mobilenet_v2").digest == "a160ca38d5bf8a2d"
    assert load_arch("googlenet").digest == "89cc63db87fbce58"
    assert load_arch("mobilenet_v2").to_dict()["stages"][0].keys() == {
        "family", "stride", "expansion", "channels", "num_blocks", "width_multiplier", "squeeze_excitation"}
    assert "batch_norm" not in load_arch("googlenet").to_dict()


def test_model_carries_its_architecture():
    arch = load_arch("resnet20")
    assert build_model(arch).arch == arch


def _dense_pair(**knobs):
    plain = build_model(small(family="dense", num_layers=4, growth_rate=8, **knobs))
    efficient = build_model(small(family="dense", num_layers=4, growth_rate=8, memory_efficient=True, **knobs))
    efficient.load_state_dict(plain.state_dict())
    return plain, efficient


@pytest.mark.parametrize("bn_size", [4, 0])
def test_memory_efficient_dense_gives_same_outputs_gradients_and_statistics(bn_size):
    torch.manual_seed(0)
    plain, efficient = _dense_pair(bn_size=bn_size)
    images = torch.randn(4, 3, 16, 16)
    for model in (plain, efficient):
        model.train()
        model(images).square().sum().backward()
    torch.testing.assert_close(efficient(images), plain(images))
    for (name, a), (_, b) in zip(plain.named_parameters(), efficient.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, msg=name)
    # Recomputation in backward must not update the running statistics a second time.
    for (name, a), (_, b) in zip(plain.named_buffers(), efficient.named_buffers()):
        torch.testing.assert_close(b, a, msg=name)


def _saved_bytes(model, images):
    """What a training forward of ``model`` keeps for backward."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(images).sum()
    return total


def test_memory_efficient_dense_stores_less_for_backward():
    plain, efficient = _dense_pair()
    images = torch.randn(8, 3, 32, 32)
    assert _saved_bytes(efficient, images) < 0.8 * _saved_bytes(plain, images)


def test_memory_efficient_dense_compiles_to_the_same_results_and_stores_less():
    """Under torch.compile: Dynamo and AOTAutograd as recipe.compile runs them; the aot_eager
    backend spares the test Inductor's half-minute of C++ (test_search compiles one with it)."""
    torch.manual_seed(0)
    plain, efficient = _dense_pair()
    compiled_plain, compiled_efficient = (torch.compile(model, backend="aot_eager") for model in (plain, efficient))
    images = torch.randn(8, 3, 32, 32)
    plain(images).square().sum().backward()
    compiled_efficient(images).square().sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), efficient.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, msg=name)
    for (name, a), (_, b) in zip(plain.named_buffers(), efficient.named_buffers()):
        torch.testing.assert_close(b, a, msg=name)
    assert _saved_bytes(compiled_efficient, images) < 0.8 * _saved_bytes(compiled_plain, images)


def test_residual_shortcuts():
    pad = small(family="residual", num_blocks=2, width=32, stride=2, shortcut="pad")
    projection = small(family="residual", num_blocks=2, width=32, stride=2)
    every = small(family="residual", num_blocks=2, width=32, stride=2, shortcut="all_projection")
    assert profile(projection).params - profile(pad).params == 16 * 32 + 2 * 32  # one 1x1 conv + BN
    assert profile(every).params - profile(projection).params == 32 * 32 + 2 * 32  # and one in the 2nd block
    assert build_model(pad)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnext_groups_change_the_bottleneck_width():
    narrow = small(family="residual", block="bottleneck", num_blocks=1, width=64, groups=1, width_per_group=64)
    grouped = small(family="residual", block="bottleneck", num_blocks=1, width=64, groups=32, width_per_group=4)
    conv = build_model(grouped).stages[0][0].conv2
    assert (conv.in_channels, conv.groups) == (128, 32)
    assert profile(grouped).params != profile(narrow).params


def test_width_multiplier_rounds_to_multiples_of_8():
    stage = dict(family="inverted_residual", channels=24, num_blocks=1, width_multiplier=0.35)
    model = build_model(small(**stage))
    assert model.head.fc.in_features == 8
    assert build_model(small(**(stage | {"width_multiplier": 1.4}))).head.fc.in_features == 32


def test_squeeze_excitation_adds_parameters_and_keeps_shapes():
    stage = dict(family="inverted_residual", channels=32, num_blocks=2)
    without, with_se = small(**stage), small(**stage, squeeze_excitation=True)
    assert profile(with_se).params > profile(without).params
    assert build_model(with_se)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_mobilenet_v3_knobs_shape_the_blocks():
    stage = dict(family="inverted_residual", channels=24, num_blocks=2, stride=2)
    plain, v3 = small(**stage), small(**stage, kernel_size=5, activation="hardswish", squeeze_excitation=True)
    block = build_model(v3).stages[0][0]
    assert block.conv[1][0].kernel_size == (5, 5) and isinstance(block.conv[1][2], torch.nn.Hardswish)
    assert block.conv[2].fc1.out_channels == 24  # torchvision's squeeze width: make_divisible(96 // 4)
    assert profile(v3).params > profile(plain).params
    assert build_model(v3)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("stride", [1, 2])
def test_a_table_of_blocks_gives_each_block_its_own_knobs_and_keeps_the_output_size_rule(stride):
    rows = [[3, 16, 16, False, "relu", 1], [5, 72, 24, True, "hardswish", stride], [3, 88, 24, False, "relu6", 1]]
    arch = Arch.from_dict({"stem": {"channels": 16}, "stages": [{"family": "inverted_residual", "blocks": rows}]})
    model = build_model(arch)
    first, second, third = model.stages[0]
    assert len(first.conv) == 3  # an exp size equal to the input's width: no expansion conv
    assert second.conv[0][0].out_channels == 72 and second.conv[1][0].stride == (stride, stride)
    assert third.use_res_connect and isinstance(third.conv[0][2], torch.nn.ReLU6)
    assert model.stages(model.stem(torch.randn(2, 3, 32, 32))).shape[-1] == arch.stages[0].output_size(32) == 32 // stride
    saved = arch.to_dict()["stages"][0]
    assert saved.keys() == {"family", "width_multiplier", "blocks"} and Arch.from_dict(arch.to_dict()) == arch


def test_a_stage_takes_either_channels_or_blocks():
    row = [3, 16, 16, False, "relu", 1]
    with pytest.raises(ConfigError, match="stages.0: an inverted_residual stage needs channels"):
        small(family="inverted_residual")
    with pytest.raises(ConfigError, match="stages.0: blocks give each block's channels, num_blocks: leave the stage's out"):
        small(family="inverted_residual", channels=16, num_blocks=2, blocks=[row])
    with pytest.raises(ConfigError, match="stages.0.blocks.0.kernel_size: Input should be 3 or 5"):
        small(family="inverted_residual", blocks=[[7, *row[1:]]])


def test_batch_norm_constants_reach_every_batch_norm():
    arch = load_arch("mobilenet_v2_cifar")
    tf_style = Arch.from_dict(arch.to_dict() | {"batch_norm": {"eps": 0.001, "momentum": 0.01}})
    norms = [m for m in build_model(tf_style).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all((m.eps, m.momentum) == (0.001, 0.01) for m in norms)
    assert all((m.eps, m.momentum) == (1e-5, 0.1) for m in build_model(arch).modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert tf_style.digest != arch.digest


def small_googlenet(aux_classifiers: bool = True) -> Arch:
    module = [8, 8, 8, 4, 4, 4]
    return Arch.from_dict({"stem": {"channels": 16}, "stages": [
        {"family": "inception", "modules": [module]},
        {"family": "inception", "stride": 2, "aux_classifiers": aux_classifiers, "modules": [module] * 4}]})


def test_aux_classifiers_run_in_training_only():
    torch.manual_seed(0)
    model = build_model(small_googlenet()).train()
    images = torch.randn(2, 3, 32, 32)
    output = model(images)
    assert isinstance(output, TrainingOutput) and output.logits.shape == (2, 10)
    assert [aux.shape for aux in output.aux_logits] == [(2, 10), (2, 10)]
    (output.logits.sum() + sum(aux.sum() for aux in output.aux_logits)).backward()
    assert all(p.grad is not None for p in model.aux_classifiers.parameters())
    model.eval()
    with torch.no_grad():
        logits = model(images)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 10)
    without = small_googlenet(aux_classifiers=False)
    # Parameters count the classifiers; MACs count the eval forward, which leaves them out.
    assert profile(small_googlenet()).params > profile(without).params
    assert profile(small_googlenet()).macs == profile(without).macs


def test_inception_without_batch_norm_uses_biases():
    stage = dict(family="inception", modules=[[8, 8, 8, 4, 4, 4]])
    with_bn = build_model(small(**stage))
    without = build_model(small(**stage, batch_norm=False))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in without.stages.modules())
    assert all(m.bias is not None for m in without.stages.modules() if isinstance(m, torch.nn.Conv2d))
    assert with_bn(torch.randn(1, 3, 32, 32)).shape == without(torch.randn(1, 3, 32, 32)).shape


def test_pre_activation_family_gets_a_final_norm():
    dense = build_model(small(family="dense", num_layers=2))
    residual = build_model(small(family="residual", num_blocks=1))
    assert isinstance(dense.head.norm, torch.nn.BatchNorm2d)
    assert not hasattr(residual.head, "norm")


def test_mixed_families_chain_their_channels():
    arch = Arch.from_dict(
        {
            "stem": {"channels": 16},
            "stages": [
                {"family": "residual", "num_blocks": 1, "width": 16},
                {"family": "dense", "stride": 2, "num_layers": 2, "growth_rate": 8},
                {"family": "inverted_residual", "stride": 2, "channels": 32},
                {"family": "inception", "stride": 2, "modules": [[8, 8, 8, 4, 4, 4]]},
            ],
        }
    )
    assert build_model(arch)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_profile_counts_flops_as_twice_macs_and_leaves_a_model_alone():
    arch = load_arch("resnet20")
    model = build_model(arch).train()
    before = copy.deepcopy(model.state_dict())
    cost = profile(model, input_size=32)
    assert cost == profile(arch)
    assert cost.flops == 2 * cost.macs
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert profile(arch, input_size=64).macs == 4 * cost.macs - 3 * 64 * 10  # convs scale, the classifier does not


def test_profile_needs_no_weights():
    """On the meta device: a network far larger than memory still profiles."""
    huge = small(family="residual", num_blocks=40, width=16384)
    assert profile(huge).params > 10**11


@pytest.mark.parametrize("device", ["cpu", "onnxruntime"])
def test_latency_is_positive_repeatable_and_ordered_by_cost(device):
    """Two measurements of one network agree within a factor of 1.5 (a loaded machine's noise; the median of
    10 repeats absorbs a preemption), and a network of ~29x the MACs is measured slower."""
    from cnnsearch.costs import latency

    tiny = Arch.from_dict({"name": "tiny", "stem": {"style": "cifar", "channels": 8},
                           "stages": [{"family": "residual", "num_blocks": 1, "width": 8}]}, source="")
    large = load_arch("resnet20")
    assert profile(large).macs > 25 * profile(tiny).macs
    first, second = latency(tiny, device), latency(tiny, device)
    assert 0 < first and 1 / 1.5 < first / second < 1.5
    assert latency(large, device) > 2 * max(first, second)


def test_latency_leaves_threads_and_random_state_alone():
    from cnnsearch.costs import latency

    threads, state = torch.get_num_threads(), torch.random.get_rng_state()
    latency(load_arch("resnet20"), repeats=1, warmup=0)
    assert torch.get_num_threads() == threads and torch.equal(torch.random.get_rng_state(), state)


def test_mlp_head_pools_to_its_own_size_so_any_image_size_fits():
    arch = load_arch("lenet5")
    for size in (28, 32, 64):
        model = build_model(Arch.from_dict(arch.to_dict() | {"input_size": size}))
        assert model.head.hidden0.in_features == 16 * 5 * 5
        assert model(torch.randn(2, 1, size, size)).shape == (2, 10)


def test_conv_classifier_emits_the_classes_without_a_linear_layer():
    arch = Arch.from_dict({"stem": {"style": "none"}, "stages": [{"family": "nin", "channels": 16}], "head": {"classifier": "conv"}})
    model = build_model(arch)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="head: a conv classifier takes no channels, hidden or pool_size"):
        Arch.from_dict(arch.to_dict() | {"head": {"classifier": "conv", "hidden": [64]}})


def test_every_activation_name_has_its_module():
    from cnnsearch.layers import ACTIVATION_MODULES
    from cnnsearch.names import ACTIVATIONS

    assert tuple(ACTIVATION_MODULES) == ACTIVATIONS
