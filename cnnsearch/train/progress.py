"""The progress display of whatever runs a model over images, training or evaluating: one bar on
stderr that counts images (not batches) and shows their rate."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["image_bar"]


def image_bar(total: int) -> tqdm:
    """A bar of ``total`` images on stderr, in images/s; it clears itself when closed, so the lines around it stay."""
    from tqdm import tqdm

    return tqdm(total=total, unit="img", unit_scale=True, leave=False, dynamic_ncols=True, file=sys.stderr)
