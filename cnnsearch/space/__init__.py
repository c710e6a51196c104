"""Search spaces: YAML files whose knobs are fixed values, lists of choices or ranges.

The package holds the knobs and what samples them (:mod:`.knobs`), the space as a value with
its sections, sampling, size and overrides (:mod:`.space`), its grid (:mod:`.grid`), and the
reader of a space file (:mod:`.parse`, :func:`load_space`), which documents the file's format.
No torch here.
"""

from .grid import Grid
from .knobs import Choice, Fixed, FloatRange, IntRange, Knob, Suggester
from .parse import load_space
from .space import ACCURACY, Budget, DatasetSpec, Limits, Objective, ObjectiveMetric, Prefilter, SearchSpec, Space, count

__all__ = [
    "ACCURACY",
    "Budget",
    "Choice",
    "DatasetSpec",
    "FloatRange",
    "Fixed",
    "Grid",
    "IntRange",
    "Knob",
    "Limits",
    "Objective",
    "ObjectiveMetric",
    "Prefilter",
    "SearchSpec",
    "Space",
    "Suggester",
    "count",
    "load_space",
]
