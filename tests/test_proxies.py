"""Zero-cost proxies: deterministic under a seed, the network left as it was, wider networks ranked above narrower
ones, each shared pass equal to the proxy alone, the aggregates, and the ``proxies`` command."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from cnnsearch import Arch, ConfigError
from cnnsearch.blocks.cell import nasbench201_network
from cnnsearch.proxies import AGGREGATES, PROXIES, aggregate, check_names, init_network, score


def small_arch(width: int) -> Arch:
    """Two residual stages of ``width`` and twice ``width`` channels on 8x8 images of 4 classes."""
    stages = [{"family": "residual", "stride": stride, "block": "basic", "num_blocks": 1, "width": width * factor}
              for stride, factor in ((1, 1), (2, 2))]
    return Arch.from_dict({"name": f"width{width}", "num_classes": 4, "input_size": 8,
                           "stem": {"style": "cifar", "channels": width}, "stages": stages})


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(16, 3, 8, 8, generator=generator), torch.randint(0, 4, (16,), generator=generator)


@pytest.mark.parametrize("name", PROXIES)
def test_each_proxy_is_deterministic_under_a_seed(name, batch):
    first = score(init_network(small_arch(8), seed=3), *batch, [name], seed=3)
    again = score(init_network(small_arch(8), seed=3), *batch, [name], seed=3)
    assert first == again and math.isfinite(first[name])


def test_the_seed_draws_the_networks_weights(batch):
    assert score(init_network(small_arch(8), 0), *batch, ["synflow"]) != score(init_network(small_arch(8), 1), *batch, ["synflow"])


@pytest.mark.parametrize("name", PROXIES)
def test_each_proxy_leaves_the_network_as_it_was(name, batch):
    network = init_network(small_arch(8), seed=0).eval()
    before = copy.deepcopy(network.state_dict())  # BN's running statistics among them
    score(network, *batch, [name])
    after = network.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert not network.training and all(parameter.grad is None for parameter in network.parameters())


@pytest.mark.parametrize("name", PROXIES)
def test_each_proxy_ranks_a_wider_network_above_a_narrower_one(name, batch):
    # None of the proxies' papers compares a trained network with itself untrained; all score
    # an untrained network, and a wider one of the same depth trains to a higher accuracy.
    for seed in range(3):
        narrow = score(init_network(small_arch(4), seed), *batch, [name], seed=seed)[name]
        wide = score(init_network(small_arch(16), seed), *batch, [name], seed=seed)[name]
        assert wide > narrow, (seed, narrow, wide)


def test_jacob_cov_ranks_a_network_blind_to_its_input_lowest(batch):
    # Mellor et al.: networks whose Jacobians correlate across images score low; a cell whose
    # output node no path reaches gives every image the same, zero, Jacobian.
    images, labels = batch
    blind = init_network(nasbench201_network(("none",) * 6, num_classes=4, input_size=8), 0)
    reached = init_network(nasbench201_network(("nor_conv_3x3",) * 6, num_classes=4, input_size=8), 0)
    assert score(blind, images, labels, ["jacob_cov"])["jacob_cov"] == -math.inf
    assert math.isfinite(score(reached, images, labels, ["jacob_cov"])["jacob_cov"])


def test_the_shared_pass_gives_what_each_proxy_gives_alone(batch):
    network = init_network(small_arch(8), seed=0)
    together = score(network, *batch, list(PROXIES), seed=5)
    assert together == {name: score(network, *batch, [name], seed=5)[name] for name in PROXIES}
    for name, proxy in PROXIES.items():
        torch.manual_seed(5)
        assert proxy(copy.deepcopy(network), *batch) == together[name]


def test_naswot_refuses_a_network_without_relu(batch):
    network = init_network(small_arch(8), 0)
    for module in list(network.modules()):
        for child_name, child in module.named_children():
            if isinstance(child, torch.nn.ReLU):
                setattr(module, child_name, torch.nn.Tanh())
    with pytest.raises(ConfigError, match="naswot.*ReLU"):
        score(network, *batch, ["naswot"])


def test_check_names_refuses_an_unknown_proxy_and_expands_aggregates():
    with pytest.raises(ConfigError, match="unknown proxy 'synflo'; known: params, macs, synflow"):
        check_names(["synflo"])
    assert check_names(["vote", "synflow"]) == ("synflow", "jacob_cov", "snip")


def test_aggregates_rank_by_their_proxies():
    rows = [{"synflow": 3.0, "jacob_cov": 1.0, "snip": 3.0, "naswot": 3.0},  # two of three votes against each other row
            {"synflow": 2.0, "jacob_cov": 3.0, "snip": 2.0, "naswot": 1.0},
            {"synflow": 1.0, "jacob_cov": 2.0, "snip": 1.0, "naswot": 2.0}]
    assert aggregate("vote", rows) == [1.0, 0.5, 0.0]
    assert aggregate("naswot_synflow", rows) == [1.0, 0.25, 0.25]
    assert set(AGGREGATES) == {"vote", "naswot_synflow"}
