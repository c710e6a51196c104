"""What the writer, the reader and other modules need of MLflow records: connecting to the store,
a trial's name, the filter that finds a study's trial runs, and quoting a value in a filter.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..names import Tags

__all__ = ["TRIALS_OF", "check_exists", "connect", "filter_value", "quiet", "trial_name"]

_SQLITE = "sqlite:///"

# A study's trial runs: children of its parent run that carry a trial id (an export run is a child too, but not a trial).
TRIALS_OF = f"tags.`{Tags.PARENT}` = '{{parent}}' and tags.`{Tags.TRIAL}` != ''"


def filter_value(value: str) -> str | None:
    """``value`` as a string literal of an MLflow filter, or None where none can hold it.

    MLflow's filter grammar has no escapes: a value with a single quote goes in double
    quotes, and one with both kinds of quote cannot be written at all.
    """
    if "'" not in value:
        return f"'{value}'"
    return f'"{value}"' if '"' not in value else None


def trial_name(trial_id: str) -> str:
    """What a trial is called everywhere: progress lines, tables, plots and its MLflow run."""
    return f"trial-{trial_id}"


def quiet() -> None:
    """Keep MLflow's INFO lines from the user: "Creating initial MLflow database tables" and its migrations (alembic's) are
    its bookkeeping. MLflow sets its loggers' levels, alembic's too, from ``MLFLOW_LOGGING_LEVEL`` when it is imported:
    that holds in this process and in every process it starts (``mlflow ui``); an MLflow imported already (cnnsearch
    called in a process that uses it) has its loggers set here."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))


def check_exists(tracking_uri: str) -> None:
    """Refuse a sqlite store that is not there: opening it would create an empty one where the user ran the command.

    Raises:
        ConfigError: no such database file.
    """
    if tracking_uri.startswith(_SQLITE):
        database = Path(tracking_uri.removeprefix(_SQLITE)).resolve()
        if not database.exists():
            raise ConfigError(f"tracking store {tracking_uri}: no database at {database}; pass the study's --tracking-uri")


def connect(tracking_uri: str, *, holding: str | None = None) -> Any:
    """A client for ``tracking_uri``, after checking that the store answers and, given its id, holds run ``holding``.

    Raises:
        ConfigError: the server cannot be reached, the store cannot be opened, or it lacks run ``holding``
            (a sqlite file that is not there is not created then).
    """
    sqlite_file = tracking_uri.removeprefix(_SQLITE).split("?")[0] if tracking_uri.startswith(_SQLITE) else None
    if holding is not None and sqlite_file is not None and not Path(sqlite_file).is_file():
        raise ConfigError(f"tracking store {tracking_uri}: no such file, so not the study's records; give the --tracking-uri that holds them")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if tracking_uri.startswith(("http://", "https://")):
        # Fail in seconds, not after MLflow's default minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as error:  # any failure to reach the store is the user's to fix
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__
        raise ConfigError(f"tracking store {tracking_uri}: cannot be reached ({first_line})") from None
    if holding is not None:
        from mlflow.exceptions import MlflowException

        try:
            client.get_run(holding)
        except MlflowException:
            raise ConfigError(
                f"tracking store {tracking_uri}: holds no run {holding}, the study's parent run; give the --tracking-uri that holds it"
            ) from None
    return client
