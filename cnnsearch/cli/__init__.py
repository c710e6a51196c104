"""The ``cnnsearch`` command line: one parser builder and one handler per command, grouped by
what the commands act on (``inspection``: show, profile; ``training``: train; ``studies``: run,
ablate; ``records``: query, plot, ui; ``exports``: export, evaluate, predict), the flags that
several commands share (``flags``), what they print (``render``), and the entry point
(``entry``). In cnnsearch only ``__main__`` imports this package.
"""

from .entry import main

__all__ = ["main"]
