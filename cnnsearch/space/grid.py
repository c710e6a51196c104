"""A discrete space's grid: each of its points once, counted and numbered without being listed.

A point is what one trial is asked for, define-by-run: the knobs of the families its stages
picked, and no other family's. So the grid is a union of products, one per combination of
the stages' families (:meth:`~.space.Space.grid` builds it), and not the product of every
knob, which would repeat each architecture once per value of the knobs it does not use.
No torch here.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

__all__ = ["Grid"]


@dataclass(frozen=True)
class Grid:
    """Every point of a discrete space, as products of knob values (each a point's knobs, by dotted name)."""

    products: tuple[dict[str, tuple[Any, ...]], ...]  # one per combination of the stages' families; disjoint

    @cached_property
    def _ends(self) -> list[int]:
        """Where each product's points end in the grid's numbering."""
        return list(itertools.accumulate(math.prod(len(values) for values in product.values()) for product in self.products))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def point(self, index: int) -> dict[str, Any]:
        """The grid's point number ``index`` (0 to ``len - 1``): each knob it asks for, and its value."""
        which = bisect.bisect_right(self._ends, index)
        rest = index - (self._ends[which - 1] if which else 0)
        point = {}
        for name, values in self.products[which].items():
            rest, position = divmod(rest, len(values))
            point[name] = values[position]
        return point
