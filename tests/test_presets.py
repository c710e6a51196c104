"""Presets against torchvision and the papers."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cnnsearch import Arch, ConfigError, build_model, list_presets, load_arch, profile
from cnnsearch.model import TrainingOutput

IMAGENET = [
    "densenet121", "densenet169", "resnet18", "resnet50", "googlenet", "googlenet_aux", "mobilenet_v2",
    "mobilenet_v3_large", "mobilenet_v3_small", "alexnet", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "vgg19_bn",
]

# Parameter counts as the papers print them, with the unit of their last digit.
PAPERS = {
    "resnet20": (0.27e6, 0.01e6),  # He et al. 2016, section 4.2
    "resnet56": (0.85e6, 0.01e6),
    "resnet110": (1.7e6, 0.1e6),
    "densenet_40_k12": (1.0e6, 0.1e6),  # Huang et al. 2017, table 2
    "densenet_bc_100_k12": (0.8e6, 0.1e6),
}


# Counts the papers print exactly: (parameters, MACs or None, the MACs' unit).
EXACT = {
    "lenet5": (61_706, None, None),  # d2l.ai, LeNet
    "mobilenet_v1": (4_231_976, 568.7e6, 0.1e6),  # Howard et al. 2017, tables 1 and 8 (569M)
}


def torchvision_model(name: str, num_classes: int = 1000) -> torch.nn.Module:
    if name.startswith("googlenet"):
        aux = name == "googlenet_aux"
        return torchvision.models.googlenet(num_classes=num_classes, aux_logits=aux, init_weights=aux)
    return getattr(torchvision.models, name)(num_classes=num_classes)


def test_every_documented_preset_ships():
    assert set(IMAGENET) | set(PAPERS) | set(EXACT) | {"mobilenet_v2_cifar", "nin"} <= set(list_presets())


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_preset_counts_equal_torchvision(name):
    ours = profile(load_arch(name))
    theirs = profile(torchvision_model(name), input_size=224)
    assert (ours.params, ours.macs, ours.flops) == (theirs.params, theirs.macs, theirs.flops)


@pytest.mark.slow  # two ImageNet networks with their weights, run: up to 20 s a preset on two cores; their counts are fast above
@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_preset_computes_what_torchvision_computes(name):
    """Same tensors in the same order: torchvision's weights load and give the same logits."""
    reference = torchvision_model(name).eval()
    model = build_model(load_arch(name)).eval()
    ours, theirs = model.state_dict(), reference.state_dict()
    assert [t.shape for t in ours.values()] == [t.shape for t in theirs.values()]
    model.load_state_dict(dict(zip(ours, theirs.values())))
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images), rtol=0, atol=1e-5)


def test_googlenet_aux_has_the_issues_counts():
    """torchvision.models.googlenet(aux_logits=True): the classifiers' parameters count, their MACs (training only) do not."""
    cost = profile(load_arch("googlenet_aux"))
    assert cost.params == 13_004_888 and round(cost.macs / 1e9, 2) == 1.50
    assert cost.macs == profile(load_arch("googlenet")).macs


def test_googlenet_aux_trains_as_torchvision_does():
    """In training mode both return the logits and the two auxiliary classifiers' logits; the same seed
    draws the same dropout masks in the same order."""
    reference = torchvision_model("googlenet_aux").train()
    model = build_model(load_arch("googlenet_aux")).train()
    model.load_state_dict(dict(zip(model.state_dict(), reference.state_dict().values())))
    images = torch.randn(2, 3, 64, 64)
    torch.manual_seed(0)
    theirs = reference(images)
    torch.manual_seed(0)
    ours = model(images)
    assert isinstance(ours, TrainingOutput)
    pairs = [(ours.logits, theirs.logits), (ours.aux_logits[0], theirs.aux_logits1), (ours.aux_logits[1], theirs.aux_logits2)]
    for mine, its in pairs:
        torch.testing.assert_close(mine, its, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_cifar_preset_matches_the_paper(name):
    printed, unit = PAPERS[name]
    params = profile(load_arch(name)).params
    # Within 2%, or within the rounding of the printed figure (0.769M prints as 0.8M).
    assert abs(params - printed) <= max(0.02 * printed, unit / 2)


@pytest.mark.parametrize("name", sorted(EXACT))
def test_preset_has_the_papers_exact_counts(name):
    params, macs, unit = EXACT[name]
    cost = profile(load_arch(name))
    assert cost.params == params
    assert macs is None or abs(cost.macs - macs) <= unit / 2


def d2l_nin(num_classes: int = 1000) -> torch.nn.Sequential:
    """d2l.ai's NiN, written as the book writes it."""

    def nin_block(in_channels, out_channels, kernel_size, strides, padding):
        return torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, out_channels, kernel_size, strides, padding), torch.nn.ReLU(),
            torch.nn.Conv2d(out_channels, out_channels, kernel_size=1), torch.nn.ReLU(),
            torch.nn.Conv2d(out_channels, out_channels, kernel_size=1), torch.nn.ReLU())

    return torch.nn.Sequential(
        nin_block(3, 96, kernel_size=11, strides=4, padding=0), torch.nn.MaxPool2d(3, stride=2),
        nin_block(96, 256, kernel_size=5, strides=1, padding=2), torch.nn.MaxPool2d(3, stride=2),
        nin_block(256, 384, kernel_size=3, strides=1, padding=1), torch.nn.MaxPool2d(3, stride=2),
        torch.nn.Dropout(0.5),
        nin_block(384, num_classes, kernel_size=3, strides=1, padding=1),
        torch.nn.AdaptiveAvgPool2d((1, 1)), torch.nn.Flatten())


def test_nin_preset_is_d2l_nin():
    torch.manual_seed(0)
    reference = d2l_nin().eval()
    model = build_model(load_arch("nin")).eval()
    assert profile(load_arch("nin")) == profile(reference, input_size=224)
    model.load_state_dict(dict(zip(model.state_dict(), reference.state_dict().values())))
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images), rtol=0, atol=1e-5)


def test_cifar_mobilenet_v2_has_torchvision_parameters():
    ours = profile(load_arch("mobilenet_v2_cifar")).params
    assert ours == profile(torchvision_model("mobilenet_v2", num_classes=10), input_size=32).params


def fits(arch: Arch, size: int) -> bool:
    try:
        Arch.from_dict(arch.to_dict() | {"input_size": size})
    except ConfigError:
        return False
    return True


# An ImageNet preset's step takes up to half a minute on two cores: slow; the CIFAR and MNIST ones stay in the fast tier.
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if load_arch(name).input_size >= 224 else name
                                  for name in list_presets()])
def test_preset_trains_one_step(name):
    arch = load_arch(name)
    torch.manual_seed(0)
    model = build_model(arch).train()
    size = next(size for size in (min(arch.input_size, 64), 96) if fits(arch, size))  # NiN needs more than 64
    images = torch.randn(2, arch.in_channels, size, size)
    output = model(images)
    logits = output.logits if isinstance(output, TrainingOutput) else output
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_profile_command_counts_a_preset_at_its_own_input_size_and_channels(cli):
    status, out, err = cli("profile", "lenet5")
    assert status == 0, err
    # 28x28x1: the first conv's 117,600 MACs are a third of what three channels would cost.
    assert "28x28 input" in out and "61,706" in out and "416,520" in out
