"""MLflow records of studies and trials: the only package that imports mlflow.

One parent run per study and one nested child run per trial. :mod:`.writer` writes them (the
:class:`Recorder`, the environment, an export's registered model); :mod:`.reader` reads them
back (:func:`find_study`, :func:`study_of_run`, :class:`StudyRecord`, :func:`trial_runs`, :func:`trial_statuses`); :mod:`.store` holds the filter
of a study's trial runs that both use, and :func:`connect`, :func:`check_exists`, :func:`quiet` and :func:`trial_name`, which other modules use too;
:mod:`.views` what the MLflow UI shows of a study (the saved view of its trials) and the links to it (:func:`study_links`, :func:`trials_path`).
"""

from .reader import StudyRecord, TrialRun, find_study, study_of_run, trial_runs, trial_statuses
from .store import check_exists, connect, quiet, trial_name
from .views import EXPERIMENTS_PATH, study_links, trials_path
from .writer import Recorder, environment, register_model, source_commit

__all__ = [
    "EXPERIMENTS_PATH",
    "Recorder",
    "StudyRecord",
    "TrialRun",
    "check_exists",
    "connect",
    "environment",
    "find_study",
    "quiet",
    "register_model",
    "source_commit",
    "study_links",
    "study_of_run",
    "trial_name",
    "trial_runs",
    "trial_statuses",
    "trials_path",
]
