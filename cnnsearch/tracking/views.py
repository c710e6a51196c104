"""What the MLflow UI shows of a study: a saved view of its trials, the experiment's description that links
to it, and the links that ``cnnsearch ui`` and ``run`` print.

MLflow 3's UI (as of 3.17) opens an experiment in the view picked by the switch at its top left,
GenAI or Model training, that the browser remembers (default GenAI) or the URL's ``workflowType``
names; it does not read the experiment's ``mlflow.experimentKind`` tag for that. Its runs table
shows no metric or param column until one is picked, and keeps what was picked in the browser.
What it does read from the store is a *saved view*: an experiment tag
``mlflow.sharedViewState.<id>`` that holds the table's filter, sort and columns and the charts,
listed under the runs page's "Views" and opened by a URL with ``viewStateShareKey=<id>``. So each
study gets one, of its trials only (the filter flattens them out of the study's parent run), best
first, with its objectives, its status and its searched knobs as columns, and its first objective's
chart first; and the experiment's description, which both views show above the page, links to each.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
import zlib
from collections.abc import Sequence
from typing import Any

from ..names import Tags
from ..space import Objective

__all__ = ["EXPERIMENTS_PATH", "save_trials_view", "study_links", "trials_path"]

EXPERIMENTS_PATH = "#/experiments"  # the UI's list of experiments: its switch shows the view the browser remembers
TRIALS_NOTE = "Each study's trials, best first, with their status and searched knobs as columns (also under Views):"
_VIEW_TAG = "mlflow.sharedViewState."  # the prefix of the UI's saved views among an experiment's tags
_NOTE_TAG = "mlflow.note.content"  # an experiment's description, in Markdown
_OURS = "cnnsearch-"  # the ids of the views cnnsearch saves, among those a user saves


def _view_id(study: str) -> str:
    """The id of a study's view: one per study name, so a study made again under its name points it at its newest runs
    (as :func:`~cnnsearch.tracking.find_study` reads the newest); hashed, since an id goes in a URL and a tag key."""
    return _OURS + hashlib.sha1(study.encode()).hexdigest()[:16]


def trials_path(experiment_id: str, study: str) -> str:
    """The UI's address, after its host, of the study's trials: its saved view, in the model-training view."""
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={_view_id(study)}"


def _column(kind: str, name: str) -> str:
    """A column of the UI's runs table, as its saved state names it."""
    return f"{kind}.`{name}`"


def _charts(objectives: Sequence[Objective], knobs: Sequence[str]) -> dict[str, Any]:
    """The first objective's chart, then a parallel-coordinates chart of the knobs against it. The UI appends a chart of
    each other metric after these (its section marked reordered), where it would otherwise sort all by name."""
    section = str(uuid.uuid4())
    card = {"runsCountToCompare": 10, "metricSectionId": section, "deleted": False, "isGenerated": True}
    first = objectives[0].metric
    line = card | {
        "uuid": str(uuid.uuid4()), "type": "LINE", "metricKey": first, "displayName": first, "lineSmoothness": 0,
        "xAxisScaleType": "linear", "scaleType": "linear", "range": {}, "xAxisKey": "step", "selectedXAxisMetricKey": "",
        "yAxisKey": "metric", "yAxisExpressions": [], "ignoreOutliers": False, "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True,
    }
    parallel = card | {"uuid": str(uuid.uuid4()), "type": "PARALLEL", "selectedParams": list(knobs), "selectedMetrics": [first],
                       "showAllRuns": True}
    sections = [{"uuid": uid, "name": name, "display": True, "isReordered": True, "deleted": False, "isGenerated": True}
                for uid, name in ((section, "Model metrics"), (str(uuid.uuid4()), "System metrics"))]
    return {"compareRunCharts": [line, parallel] if knobs else [line], "compareRunSections": sections}


def _state(parent_run_id: str, objectives: Sequence[Objective], knobs: Sequence[str]) -> dict[str, Any]:
    """The view of one study's trials: its runs table's filter, sort and columns, and its charts. The columns are
    ordered and sized too: the UI would put the status, a tag, after every param, past the right edge of the screen."""
    first = objectives[0]
    names = [("metrics", o.metric) for o in objectives] + [("tags", Tags.STATUS)] + [("params", knob) for knob in knobs]
    columns = [_column(kind, name) for kind, name in names]
    return {
        "searchFilter": f"tags.`{Tags.PARENT}` = '{parent_run_id}'",
        "orderByKey": _column("metrics", first.metric),
        "orderByAsc": first.goal == "min",
        "selectedColumns": columns,
        "columnOrder": columns,
        "columnWidths": {column: max(100, 8 * len(name) + 24) for column, (_, name) in zip(columns, names)},  # the name in full
        **_charts(objectives, knobs),
    }


def _compressed(state: dict[str, Any]) -> str:
    """A view's state as the UI saves one: deflated, so that a space of many knobs stays within a tag's length."""
    return "deflate;" + base64.b64encode(zlib.compress(json.dumps(state).encode())).decode("ascii")


def _note(links: list[str]) -> str:
    """The experiment's description: a link to each study's trials, as many as a tag holds (the rest are under Views)."""
    from mlflow.utils.validation import MAX_EXPERIMENT_TAG_VAL_LENGTH

    for shown in range(len(links), 0, -1):
        rest = f" and {len(links) - shown} more" if shown < len(links) else ""
        note = f"{TRIALS_NOTE} {', '.join(links[:shown])}{rest}"
        if len(note) <= MAX_EXPERIMENT_TAG_VAL_LENGTH:
            return note
    return TRIALS_NOTE


def save_trials_view(client: Any, experiment_id: str, *, study: str, parent_run_id: str, objectives: Sequence[Objective],
                     knobs: Sequence[str]) -> None:
    """Save the view of the study's trials in its experiment, and link it from the experiment's description unless
    the user wrote that description."""
    stamp = int(time.time() * 1000)
    envelope = {"name": study, "createdAt": stamp, "updatedAt": stamp, "state": _compressed(_state(parent_run_id, objectives, knobs))}
    client.set_experiment_tag(experiment_id, _VIEW_TAG + _view_id(study), json.dumps(envelope))
    tags = client.get_experiment(experiment_id).tags
    if tags.get(_NOTE_TAG, TRIALS_NOTE).startswith(TRIALS_NOTE):  # one line: the UI shows the first, folded
        links = [f"[{name}]({path})" for name, path in _links(experiment_id, tags)]
        client.set_experiment_tag(experiment_id, _NOTE_TAG, _note(links))


def _links(experiment_id: str, tags: dict[str, str]) -> list[tuple[str, str]]:
    """Each study whose view these experiment tags hold, by name, with the address of its trials."""
    names = sorted(json.loads(value)["name"] for key, value in tags.items() if key.startswith(_VIEW_TAG + _OURS))
    return [(name, trials_path(experiment_id, name)) for name in names]


def study_links(client: Any) -> list[tuple[str, str]]:
    """Every study in the store that has a view, by name, with the address of its trials; one read of the experiments."""
    return sorted(link for experiment in client.search_experiments(max_results=50000)
                  for link in _links(experiment.experiment_id, experiment.tags))
