"""Zero-cost proxies: scores of an untrained network, from one minibatch, that rank architectures before training them.

Each proxy is a function of a network and one batch of the study's own training images
(:func:`proxy_batch`), run on CPU on a copy of the network: the caller's weights, gradients
and BN statistics stay as they were. :func:`score` seeds torch before each proxy, so that
the same network, batch and seed give the same values. A network built from an
architecture (:func:`init_network`) takes its initial weights from the seed too.

The proxies, higher is better for each (see each function's docstring for its paper and formula):

- ``params``, ``macs``: the network's size, a strong baseline (ZiCo, Li et al., ICLR 2023);
- ``synflow``: Tanaka et al., NeurIPS 2020, as Abdelfattah et al. (ICLR 2021) scored NAS-Bench-201;
- ``naswot``: Mellor et al., ICML 2021;
- ``jacob_cov``: the first version of Mellor et al. (arXiv:2006.04647v1), as Abdelfattah et al. scored it;
- ``grad_norm``, ``snip``: Abdelfattah et al., after Lee et al., ICLR 2019 for snip.

An aggregate (:data:`AGGREGATES`) combines several proxies over a population of networks,
by their ranks in it: it has no value for one network alone. Imports no Optuna, Ray or MLflow.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor, nn

from .blocks.cell import is_nasbench201
from .config import Arch, ConfigError
from .costs import profile
from .data import Batches, ImageData
from .names import PROXIES as PROXY_NAMES
from .names import PROXY_AGGREGATES, PROXY_BATCH
from .model import TrainingOutput, build_model
from .tabular import nasbench201_cost

__all__ = ["AGGREGATES", "PROXIES", "PROXY_BATCH", "aggregate", "check_names", "grad_norm", "init_network", "jacob_cov",
           "macs", "naswot", "params", "proxy_batch", "rank_correlations", "score", "snip", "synflow"]

Proxy = Callable[[nn.Module, Tensor, Tensor], float]


def _logits(network: nn.Module, images: Tensor) -> Tensor:
    output = network(images)
    return output.logits if isinstance(output, TrainingOutput) else output


def _weights(network: nn.Module) -> list[Tensor]:
    """The weights of the network's convolutions and linear layers: what Abdelfattah et al. score (their ``mode='param'``)."""
    return [module.weight for module in network.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]


def params(network: nn.Module, images: Tensor, labels: Tensor) -> float:
    """The number of parameters: ZiCo (Li et al., ICLR 2023) reports it at Spearman rho 0.75 on NAS-Bench-201's CIFAR-10.

    ``params = sum over parameters theta of numel(theta)``; the batch is not used.
    """
    return float(sum(parameter.numel() for parameter in network.parameters()))


def macs(network: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Multiply-accumulates of one forward pass of one image of the batch's shape, as :func:`cnnsearch.costs.profile` counts them.

    A NAS-Bench-201 network's are counted from its cell's edges (:func:`cnnsearch.tabular.nasbench201_cost`), in a fraction of the time.
    """
    arch = getattr(network, "arch", None)
    if isinstance(arch, Arch) and (arch.in_channels, arch.input_size, arch.input_size) == tuple(images.shape[1:]) and is_nasbench201(arch):
        return float(nasbench201_cost(arch).macs)
    return float(profile(network, input_size=images.shape[-1], in_channels=images.shape[1]).macs)


def synflow(network: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Synaptic flow (Tanaka et al., "Pruning neural networks without any data by iteratively conserving synaptic flow",
    NeurIPS 2020, arXiv:2006.05467), summed over the network as Abdelfattah et al. (ICLR 2021) score NAS-Bench-201.

    ``R = 1^T (prod_l |theta_l|) 1``: the network in double precision with every parameter
    replaced by its absolute value, on one all-ones image, its outputs summed. Then
    ``synflow = sum over conv and linear weights theta of |theta * dR/dtheta|``. Batch norm
    is removed, as Abdelfattah et al. do (their ``get_prunable_copy(bn=False)``): its batch
    statistics of one constant image would divide by a variance of zero. Dropout is off.
    Only the batch's image shape is used.
    """
    network = _without_batch_norm(network).double().eval()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.abs_()
    ones = torch.ones(1, *images.shape[1:], dtype=torch.float64)
    _logits(network, ones).sum().backward()
    with torch.no_grad():
        return float(sum((weight * weight.grad).abs().sum() for weight in _weights(network) if weight.grad is not None))


def _without_batch_norm(network: nn.Module) -> nn.Module:
    """``network`` with every batch norm replaced by the identity, in place."""
    for module in list(network.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(module, name, nn.Identity())
    return network


@dataclass
class _Pass:
    """What one training-mode forward of the batch and its backward passes give the proxies that read them.

    naswot, jacob_cov, grad_norm and snip all run the network in training mode on the same
    batch: :func:`score` runs it once for all of them, and each one alone runs it for itself.
    """

    kernel: Tensor | None = None  # naswot's K_H
    input_gradients: Tensor | None = None  # jacob_cov's d(sum of the logits)/d(images)
    weights: list[tuple[Tensor, Tensor]] | None = None  # each conv and linear weight, and dL/dweight of the cross-entropy


def _run_pass(network: nn.Module, images: Tensor, labels: Tensor, names: Sequence[str]) -> _Pass:
    """One training-mode forward of ``images``, with what the proxies ``names`` need recorded or differentiated."""
    result, count = _Pass(), len(images)
    handles = []
    if "naswot" in names:
        relus = [module for module in network.modules() if isinstance(module, (nn.ReLU, nn.ReLU6))]
        if not relus:
            raise ConfigError("naswot scores the codes of a network's ReLUs, and this network has none")
        result.kernel = torch.zeros(count, count, dtype=torch.float64)

        def add_codes(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            # Before the ReLU: an in-place ReLU overwrites its input.
            codes = (inputs[0].detach().reshape(count, -1) > 0).float()
            ones = codes.sum(1, dtype=torch.float64)
            # N_A - d_H(c_i, c_j) = c_i.c_j + (1 - c_i).(1 - c_j) = 2 c_i.c_j - |c_i| - |c_j| + N_A
            result.kernel.add_(2 * (codes @ codes.T).double() - ones[:, None] - ones[None, :] + codes.shape[1])

        handles = [relu.register_forward_pre_hook(add_codes) for relu in relus]
    network.train()
    gradients = {"jacob_cov", "grad_norm", "snip"} & set(names)
    inputs = images.clone().requires_grad_("jacob_cov" in names)
    try:
        with torch.set_grad_enabled(bool(gradients)):
            logits = _logits(network, inputs)
    finally:
        for handle in handles:
            handle.remove()
    if "jacob_cov" in names:
        result.input_gradients = torch.autograd.grad(logits.sum(), inputs, retain_graph=bool(gradients - {"jacob_cov"}))[0]
    if gradients - {"jacob_cov"}:
        weights = _weights(network)
        grads = torch.autograd.grad(F.cross_entropy(logits, labels), weights, allow_unused=True)
        result.weights = [(weight.detach(), grad) for weight, grad in zip(weights, grads) if grad is not None]
    return result


def _naswot(found: _Pass) -> float:
    return float(torch.linalg.slogdet(found.kernel).logabsdet)


def _jacob_cov(found: _Pass) -> float:
    jacobian = found.input_gradients.reshape(len(found.input_gradients), -1).double().numpy()
    if np.any(jacobian.std(axis=1) == 0):
        return -math.inf
    eigenvalues = np.linalg.eigvalsh(np.corrcoef(jacobian))
    k = 1e-5
    return float(-np.sum(np.log(eigenvalues + k) + 1 / (eigenvalues + k)))


def _grad_norm(found: _Pass) -> float:
    return float(sum(grad.norm() for _, grad in found.weights))


def _snip(found: _Pass) -> float:
    return float(sum((weight * grad).abs().sum() for weight, grad in found.weights))


def naswot(network: nn.Module, images: Tensor, labels: Tensor) -> float:
    """NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021, arXiv:2006.04647).

    Each ReLU's input gives each image a binary code ``c`` (1 where a unit is positive).
    ``K_H[i, j] = sum over ReLUs of (N_A - d_H(c_i, c_j))``, ``N_A`` the ReLU's units and
    ``d_H`` the Hamming distance, and ``naswot = log |det K_H|``: networks whose ReLUs
    separate the images' codes score high. In training mode (batch statistics), on the
    whole batch (Mellor et al. used 128 images; the default batch here is 64).

    Raises:
        ConfigError: the network has no ReLU.
    """
    return _naswot(_run_pass(network, images, labels, ["naswot"]))


def jacob_cov(network: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Jacobian covariance (Mellor et al., first version of "Neural Architecture Search without Training",
    arXiv:2006.04647v1), as Abdelfattah et al. (ICLR 2021) score it.

    ``J`` holds, for each image ``x_i`` of the batch, ``d(sum of the logits)/dx_i``
    flattened; ``Sigma`` is the correlation matrix of its rows and ``lambda`` its
    eigenvalues. ``jacob_cov = -sum_i (log(lambda_i + k) + 1 / (lambda_i + k))``, ``k = 1e-5``:
    networks whose local linear maps differ between images score high. In training mode.
    A network whose output does not depend on its input (a cell whose output node no path
    reaches) has no correlation at all: it scores ``-inf``, the worst.
    """
    return _jacob_cov(_run_pass(network, images, labels, ["jacob_cov"]))


def grad_norm(network: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Gradient norm (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021, arXiv:2101.08134).

    ``grad_norm = sum over conv and linear layers l of ||dL/dtheta_l||_2``, ``L`` the
    cross-entropy of the batch, in training mode.
    """
    return _grad_norm(_run_pass(network, images, labels, ["grad_norm"]))


def snip(network: nn.Module, images: Tensor, labels: Tensor) -> float:
    """SNIP's saliency (Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019,
    arXiv:1810.02340), summed over the network as Abdelfattah et al. (ICLR 2021) score it.

    ``snip = sum over conv and linear weights theta of |theta * dL/dtheta|``, ``L`` the
    cross-entropy of the batch, in training mode.
    """
    return _snip(_run_pass(network, images, labels, ["snip"]))


_FROM_PASS: dict[str, Callable[[_Pass], float]] = {"naswot": _naswot, "jacob_cov": _jacob_cov, "grad_norm": _grad_norm, "snip": _snip}


PROXIES: dict[str, Proxy] = dict(zip(PROXY_NAMES, (params, macs, synflow, naswot, jacob_cov, grad_norm, snip)))
# Each aggregate's proxies. vote: the majority vote of Abdelfattah et al. (rho 0.82 on NAS-Bench-201);
# mean_rank: the mean of naswot's, synflow's and jacob_cov's ranks, the combination that ranked NAS-Bench-201's cells
# best of the few that benchmarks/proxies.py tried (see BENCHMARKS.md).
AGGREGATES: dict[str, tuple[str, ...]] = dict(zip(PROXY_AGGREGATES, (("synflow", "jacob_cov", "snip"), ("naswot", "synflow", "jacob_cov"))))


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """The proxies that ``names`` (proxies and aggregates) need computed, each once, in :data:`PROXIES`' order.

    Raises:
        ConfigError: an unknown name; the message lists the known ones.
    """
    unknown = [name for name in names if name not in PROXIES and name not in AGGREGATES]
    if unknown:
        raise ConfigError(f"unknown proxy {unknown[0]!r}; known: {', '.join([*PROXIES, *AGGREGATES])}")
    needed = {member for name in names for member in AGGREGATES.get(name, (name,))}
    return tuple(name for name in PROXIES if name in needed)


def init_network(arch: Arch, seed: int) -> nn.Module:
    """``arch``'s network at initialisation, its weights drawn from ``seed``; torch's global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch)


def score(network: nn.Module, images: Tensor, labels: Tensor, names: Sequence[str] = tuple(PROXIES), *, seed: int = 0) -> dict[str, float]:
    """Each proxy of ``names`` (of :data:`PROXIES`) of ``network`` on one batch, on copies of it.

    Torch is seeded with ``seed`` before each copy runs (what draws at random, such as
    dropout, draws the same): the same network, batch and seed give the same values.
    naswot, jacob_cov, grad_norm and snip share one forward pass of one copy, and give
    what each gives alone. ``network`` is left as it was: weights, gradients, BN statistics and mode.
    """
    values = {}
    with torch.random.fork_rng(devices=[]):
        for name in names:
            if name not in _FROM_PASS:
                torch.manual_seed(seed)
                values[name] = PROXIES[name](copy.deepcopy(network), images, labels)
        shared = [name for name in names if name in _FROM_PASS]
        if shared:
            torch.manual_seed(seed)
            found = _run_pass(copy.deepcopy(network), images, labels, shared)
            values |= {name: _FROM_PASS[name](found) for name in shared}
    return {name: values[name] for name in names}


def aggregate(name: str, rows: Sequence[dict[str, float]]) -> list[float]:
    """Aggregate ``name`` of :data:`AGGREGATES` over a population: one value per row of its proxies, higher is better.

    ``vote`` ranks by the vote of Abdelfattah et al. (ICLR 2021): between two networks, each
    of the three proxies votes for the one it scores higher, and the majority wins; a network's
    value is the share of the others it wins against. ``mean_rank`` is the mean of each
    network's ranks (from 0, the lowest, to 1) by naswot, synflow and jacob_cov. Ties share their mean rank.
    """
    members = AGGREGATES[name]
    if len(rows) < 2:
        return [0.5] * len(rows)
    ranks = np.array([stats.rankdata([row[member] for row in rows]) for member in members])  # -inf ranks lowest
    if name == "vote":
        wins = sum(np.sign(rank[:, None] - rank[None, :]) for rank in ranks) > 0  # [i, j]: i beats j by majority
        return list(wins.sum(axis=1) / (len(rows) - 1))
    return list((ranks.mean(axis=0) - 1) / (len(rows) - 1))


CORRELATION_RESAMPLES = 1000  # bootstrap resamples of rank_correlations' intervals


def rank_correlations(values: Sequence[float], truth: Sequence[float], *, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Spearman's rho and Kendall's tau-b of ``values`` (a proxy's, ``-inf`` ranked lowest) with ``truth``, each with
    its 95% percentile bootstrap interval over the pairs (:data:`CORRELATION_RESAMPLES` resamples drawn with ``seed``)."""
    x, y = stats.rankdata(values), np.asarray(truth, dtype=float)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"rho": [], "tau": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)  # a resample of ties only: its NaN is left out below
        for _ in range(CORRELATION_RESAMPLES):
            index = rng.integers(0, len(x), len(x))
            draws["rho"].append(stats.spearmanr(x[index], y[index]).statistic)
            draws["tau"].append(stats.kendalltau(x[index], y[index]).statistic)
    found = {"rho": stats.spearmanr(x, y).statistic, "tau": stats.kendalltau(x, y).statistic}
    return {key: (float(found[key]), *map(float, np.nanpercentile(draws[key], [2.5, 97.5]))) for key in found}


def proxy_batch(data: ImageData, indices: Tensor, size: int = PROXY_BATCH, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """One batch of ``size`` images drawn with ``seed`` among ``indices`` (a split's training images), normalized as training normalizes them."""
    generator = torch.Generator().manual_seed(seed)
    chosen = indices[torch.randperm(len(indices), generator=generator)[:size]]
    return next(iter(Batches(data, chosen, batch_size=size, train=False)))
