"""A study: Optuna proposes, each proposal is fitted and checked, Ray Tune runs the trials, MLflow records them.

:func:`run_study` walks the modules of this package in order: :mod:`.settings` resolves
the options and runs every check that can refuse a study before anything is written,
with :mod:`.guards`' rules for short budgets (a validation sample, ASHA only where its
rungs can judge);
:mod:`.propose`, the only module of cnnsearch that imports Optuna, proposes trials (its
samplers include regularized evolution, which Optuna lacks) and
scores a finished study's knob importances; :mod:`.reject` fits each proposal to the data
and turns away the ones over the limits; :mod:`.launch`, the only module of cnnsearch
that imports Ray, runs the trials on Ray Tune, or :mod:`.lookup` looks a tabular study's
trials up in its table, in the driver; :mod:`.record` writes them to MLflow and
recovers an interrupted study's checkpoints; :mod:`.progress` prints the study's progress.
The driver alone writes to MLflow, keeping the run ids and counts it needs so each event
costs the same at any study size. Ray is imported only when a study trains.
"""

from .progress import searched_knobs
from .propose import Importances, RegularizedEvolution, importances, make_sampler, rejected_proposals
from .record import StudyResult
from .run import run_study
from .settings import RunOptions, concurrency, with_overrides

__all__ = [
    "Importances", "RegularizedEvolution", "RunOptions", "StudyResult", "concurrency", "importances", "make_sampler", "rejected_proposals", "run_study", "searched_knobs",
    "with_overrides",
]
