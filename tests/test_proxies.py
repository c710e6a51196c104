"""Zero-cost proxies: deterministic under a seed, the network left as it was, wider networks ranked above narrower
ones, each shared pass equal to the proxy alone, the aggregates, and the ``proxies`` command."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

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
    assert aggregate("mean_rank", rows) == pytest.approx([2 / 3, 1 / 2, 1 / 3])  # ranks 2+0+1, 1+2+0, 0+1+2 of 2, over 3
    assert set(AGGREGATES) == {"vote", "mean_rank"}


# The proxies command ------------------------------------------------------------------------------

NASBENCH201 = Path(__file__).resolve().parents[1] / "spaces" / "nasbench201.yaml"


def image_folder(root: Path, size: int, classes: int = 2, per_class: int = 4) -> Path:
    generator = torch.Generator().manual_seed(0)
    for index in range(classes):
        (root / f"class{index}").mkdir(parents=True, exist_ok=True)
        for image in range(per_class):
            pixels = torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=generator)
            Image.fromarray(pixels.numpy()).save(root / f"class{index}" / f"{image}.png")
    return root


def test_proxies_prints_a_json_row_per_sample_with_every_proxy(cli, tiny_space, tmp_path):
    status, out, err = cli("proxies", tiny_space(tmp_path), "--samples", 3, "--batch-size", 16, "--format", "json",
                           "--cache-dir", tmp_path / "cache")
    assert status == 0, err
    rows = json.loads(out)
    assert len(rows) == 3
    assert all(set(PROXIES) | set(AGGREGATES) | {"residual.width", "stem.channels"} <= set(row) for row in rows)
    assert sorted(row["vote"] for row in rows) == [0.0, 0.5, 1.0]
    again = json.loads(cli("proxies", tiny_space(tmp_path), "--samples", 3, "--batch-size", 16, "--format", "json",
                           "--cache-dir", tmp_path / "cache")[1])
    assert again == rows  # the seed draws the architectures, their weights and the batch


def test_proxies_with_a_table_adds_its_accuracy_and_each_proxys_rank_correlation(cli, tmp_path):
    status, out, err = cli("proxies", NASBENCH201, "--dataset", "synthetic", "--samples", 3, "--batch-size", 8,
                           "--proxies", "params,synflow", "--tabular", "nasbench201", "--format", "csv", "--cache-dir", tmp_path)
    assert status == 0, err
    header, *lines = out.splitlines()
    assert header.startswith("params,synflow,val_acc_pct,cell.node1_from0,") and header.endswith(",nasbench201.arch")
    assert len(lines) == 3 and all(60 < float(line.split(",")[2]) < 95 for line in lines)
    assert "rank correlation with nasbench201:cifar10's accuracy (mean over its seeds), 3 architectures" in err
    assert "  synflow         Spearman rho" in err and "Kendall tau" in err


@pytest.mark.parametrize("flags, expected", [
    (["--proxies", "synflow,zen"], "unknown proxy 'zen'; known: params, macs, synflow, naswot, jacob_cov, grad_norm, snip, vote, "
                                   "mean_rank"),
    (["--tabular", "nasbench201"], "--tabular nasbench201:cifar10: not a NAS-Bench-201 network"),
])
def test_proxies_refuses_in_one_line(cli, tiny_space, tmp_path, flags, expected):
    status, out, err = cli("proxies", tiny_space(tmp_path), "--samples", 2, *flags)
    assert status == 2 and err.count("\n") == 1 and expected in err, err


def test_proxies_refuses_images_that_do_not_fit_the_table_or_the_space(cli, tmp_path, tiny_space):
    small = image_folder(tmp_path / "small", size=16)
    status, _, err = cli("proxies", NASBENCH201, "--dataset", f"imagefolder:{small}", "--samples", 2, "--tabular", "nasbench201",
                         "--cache-dir", tmp_path / "cache")
    assert status == 2 and err.count("\n") == 1 and "its images do not fit the table's networks" in err, err
    tiny = image_folder(tmp_path / "tiny", size=1)
    # A dense block's transition halves its map with a 2x2 pool: a 1x1 map has nothing to pool.
    dense = tiny_space(tmp_path, name="dense", family="dense", stem={"style": "cifar", "channels": 8}, residual=None,
                       dense={"num_layers": 1, "growth_rate": 4}, stages=[{"stride": 1}, {"stride": 2}])
    status, _, err = cli("proxies", dense, "--dataset", f"imagefolder:{tiny}", "--samples", 2, "--cache-dir", tmp_path / "cache")
    assert status == 2 and err.count("\n") == 1 and "a 1x1 input shrinks below 1x1 at this stage" in err, err
