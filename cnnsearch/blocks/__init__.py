"""Block families, one module each; importing a module registers its family.

A family module declares everything about its family: its knobs (a
:class:`~cnnsearch.config.StageConfig` subclass, torch-free like the rest of the
configuration), their output-size rule, ``build_stage(config, in_channels) ->
(module, out_channels)`` and its hooks (a stem style, a head classifier, auxiliary
heads, zero-init names: see :class:`~cnnsearch.registry.Family`); its last line
registers them in :mod:`cnnsearch.registry`. Adding a family, even one with its own
stem or auxiliary heads, is one new module here and one import line below.

Layering: the registry and the configuration import no torch and nothing above them;
family modules import the configuration and torch; :mod:`cnnsearch.model` imports this
package, walks the stages and tracks channels. Families never import each other. A block
with a residual branch has ``zero_init_last()``, which zeroes the branch's last norm
scale so that the block starts as the identity, when its shortcut is the identity.
"""

from __future__ import annotations

from . import cell  # noqa: F401
from . import dense  # noqa: F401
from . import depthwise_separable  # noqa: F401
from . import inception  # noqa: F401
from . import inverted_residual  # noqa: F401
from . import nin  # noqa: F401
from . import plain  # noqa: F401
from . import residual  # noqa: F401

__all__: list[str] = []  # the families are reached through cnnsearch.registry
