"""The prefilter: each trial of a search is the best of a pool of proposals by a zero-cost proxy.

:class:`Prefilter` holds one batch of the study's training images (a tabular study's
are read for it alone, and must fit the table's networks: :mod:`.settings`) and scores a
pool's architectures with :func:`cnnsearch.proxies.score`, each network initialised with
the study's seed. :class:`~.propose.Proposals` asks the sampler for the pool, has it scored
here, and tells the sampler what it learns (see :mod:`.propose`). Imports neither Ray nor Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass
from torch import Tensor

from ..config import Arch
from ..names import Metrics
from ..proxies import AGGREGATES, aggregate, check_names, init_network, proxy_batch, score
from .settings import Plan

__all__ = ["Prefilter", "open_prefilter", "proxy_metric"]


def proxy_metric(proxy: str) -> str:
    """The metric that holds a prefiltered trial's value of ``proxy``: ``proxy.synflow``."""
    return f"{Metrics.PROXY}.{proxy}"


@dataclass(frozen=True)
class Prefilter:
    """Scores a pool of proposals by ``proxy`` on one batch; higher is better."""

    proxy: str
    pool: int
    images: Tensor
    labels: Tensor
    seed: int

    def scores(self, archs: list[Arch]) -> list[float]:
        """Each architecture's value of the proxy; an aggregate's, over the pool."""
        computed = check_names([self.proxy])
        rows = [score(init_network(arch, self.seed), self.images, self.labels, computed, seed=self.seed) for arch in archs]
        return aggregate(self.proxy, rows) if self.proxy in AGGREGATES else [row[self.proxy] for row in rows]


def open_prefilter(plan: Plan) -> Prefilter | None:
    """The plan's prefilter, its batch drawn with the study's seed from the training images; None without one."""
    setting = plan.settings["prefilter"]
    if setting is None:
        return None
    images, labels = proxy_batch(plan.data, plan.split.train, seed=plan.settings["seed"])
    return Prefilter(setting["proxy"], setting["pool"], images, labels, plan.settings["seed"])
