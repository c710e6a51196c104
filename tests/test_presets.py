"""Presets against torchvision and the papers."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cnnsearch import build_model, list_presets, load_arch, profile

IMAGENET = ["densenet121", "densenet169", "resnet18", "resnet50", "googlenet", "mobilenet_v2"]

# Parameter counts as the papers print them, with the unit of their last digit.
PAPERS = {
    "resnet20": (0.27e6, 0.01e6),  # He et al. 2016, section 4.2
    "resnet56": (0.85e6, 0.01e6),
    "resnet110": (1.7e6, 0.1e6),
    "densenet_40_k12": (1.0e6, 0.1e6),  # Huang et al. 2017, table 2
    "densenet_bc_100_k12": (0.8e6, 0.1e6),
}


def torchvision_model(name: str, num_classes: int = 1000) -> torch.nn.Module:
    extra = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    return getattr(torchvision.models, name)(num_classes=num_classes, **extra)


def test_every_documented_preset_ships():
    assert set(IMAGENET) | set(PAPERS) | {"mobilenet_v2_cifar"} <= set(list_presets())


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_preset_counts_equal_torchvision(name):
    ours = profile(load_arch(name))
    theirs = profile(torchvision_model(name), input_size=224)
    assert (ours.params, ours.macs, ours.flops) == (theirs.params, theirs.macs, theirs.flops)


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


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_cifar_preset_matches_the_paper(name):
    printed, unit = PAPERS[name]
    params = profile(load_arch(name)).params
    # Within 2%, or within the rounding of the printed figure (0.769M prints as 0.8M).
    assert abs(params - printed) <= max(0.02 * printed, unit / 2)


def test_cifar_mobilenet_v2_has_torchvision_parameters():
    ours = profile(load_arch("mobilenet_v2_cifar")).params
    assert ours == profile(torchvision_model("mobilenet_v2", num_classes=10), input_size=32).params


@pytest.mark.parametrize("name", list_presets())
def test_preset_trains_one_step(name):
    arch = load_arch(name)
    torch.manual_seed(0)
    model = build_model(arch).train()
    size = min(arch.input_size, 64)
    images = torch.randn(2, arch.in_channels, size, size)
    loss = torch.nn.functional.cross_entropy(model(images), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
