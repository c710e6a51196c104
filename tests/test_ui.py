"""The MLflow UI, driven by a real browser as a person would: from the list of experiments that `cnnsearch ui`
prints to the study's trials, with their accuracy, status and knobs as columns; and the study's plots.

Needs Debian's chromium (apt-get install chromium) and Playwright's Python package;
skipped only when chromium is absent.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"), pytest.mark.slow]

SPACE = Path(__file__).parents[1] / "spaces" / "nasbench201.yaml"
STUDY = "uicells"
KNOB = "cell.node1_from0"  # one of the space's six searched knobs
TRIALS = 4


@dataclass(frozen=True)
class UI:
    """`cnnsearch ui` serving a study's store: what it printed, and the store."""

    start: str  # the list of experiments, as printed
    trials: str  # the study's trials, as printed
    client: mlflow.MlflowClient


@pytest.fixture(scope="module")
def ui(tmp_path_factory, free_port):
    """A four-trial study, its accuracies looked up in NAS-Bench-201's table (no Ray, no training), and `cnnsearch ui`
    serving its store."""
    from cnnsearch.cli import main

    folder = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    main(["run", str(SPACE), "--tabular", "nasbench201", "--trials", str(TRIALS), "--sampler", "random", "--name", STUDY,
          "--tracking-uri", uri, "--storage", str(folder / "runs")])
    port = free_port()
    printed = folder / "ui.txt"  # a file, not a pipe: the server's log would fill a pipe that nobody reads
    with printed.open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "cnnsearch", "ui", "--tracking-uri", uri, "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:  # the server goes, whatever fails here
        deadline = time.monotonic() + 180  # a loaded machine: mlflow ui took over 90 s to answer
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow ui did not start: {printed.read_text()}")
                time.sleep(0.5)
        text = printed.read_text()
        start = re.search(r"^MLflow UI: (\S+)$", text, re.MULTILINE)
        trials = re.search(rf"^  {STUDY}  (\S+)$", text, re.MULTILINE)
        assert start and trials, text
        yield UI(start[1], trials[1], mlflow.MlflowClient(uri))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)  # what outlived it: MLflow's job consumers take their time
        server.wait()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A page in a browser profile of its own: MLflow keeps the view it opens experiments in, and each table's columns,
    in the browser."""
    context = browser.new_context(viewport={"width": 1800, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def wait_in_view(locator) -> None:
    """Wait until the element lies wholly within the visible part of its table (the UI sizes and orders the columns
    after it draws them)."""
    locator.page.wait_for_function(
        "e => { const r = e.getBoundingClientRect(), t = e.closest('.ag-root-wrapper').getBoundingClientRect();"
        " return r.width > 0 && r.left >= t.left && r.right <= t.right; }", arg=locator.element_handle())


def test_a_person_clicks_from_the_experiment_list_to_the_study_s_trials_and_sees_accuracy_status_and_knobs(ui, page):
    expect = pytest.importorskip("playwright.sync_api").expect
    page.goto(ui.start)
    # MLflow 3 opens an experiment in the view picked here, which the browser keeps (GenAI until picked), as printed.
    page.get_by_text("Model training", exact=True).click()
    page.get_by_test_id("experiment-list-item-link").filter(has_text="nasbench201").click()  # named after the space
    page.get_by_test_id("saved-views-trigger").click()  # the runs page's Views: the study's is there
    page.get_by_role("menuitem").filter(has_text=STUDY).click()

    # Its trials, best first, with these columns in sight; the Columns menu never opened.
    headers = page.locator("[role=columnheader]")
    for name in ("val_acc", "cnnsearch.status", KNOB):
        wait_in_view(headers.filter(has_text=re.compile(rf"^{re.escape(name)}$")).first)
    expect(page.get_by_role("link", name=re.compile(r"^trial-"))).to_have_count(TRIALS)
    expect(page.locator("[role=gridcell][col-id='tags.`cnnsearch.status`']")).to_have_text(["completed"] * TRIALS)
    expect(page.locator(f"[role=gridcell][col-id='params.`{KNOB}`']")).to_have_text([re.compile(r"^\w+$")] * TRIALS)
    rows = page.locator("[role=gridcell][col-id='metrics.`val_acc`']").evaluate_all(  # the table's order, not the DOM's
        "cells => cells.map(c => [Number(c.closest('[role=row]').getAttribute('row-index')), Number(c.innerText)])")
    accuracies = [value for _, value in sorted(rows)]
    assert len(accuracies) == TRIALS and accuracies == sorted(accuracies, reverse=True)
    # The experiment's description links to the same trials as `cnnsearch ui` printed.
    expect(page.locator(f"a[href='{ui.trials[ui.trials.index('#'):]}']").first).to_be_attached()

    page.locator("label:has(input[name=runs-view-mode][value=CHART])").click()  # the charts: val_acc first
    expect(page.get_by_test_id("experiment-view-compare-runs-card").first).to_have_text(re.compile(r"^val_acc(?!_)"))


def test_the_printed_address_opens_the_trials_and_the_parent_run_lists_its_plots(ui, page):
    page.goto(ui.trials)
    page.locator("[role=columnheader]").filter(has_text=KNOB).first.wait_for()
    assert page.get_by_role("link", name=re.compile(r"^trial-")).count() == TRIALS
    experiment = ui.client.get_experiment_by_name("nasbench201")
    parent = ui.client.search_runs([experiment.experiment_id], filter_string=f"tags.`cnnsearch.study` = '{STUDY}'")[0]
    page.goto(f"{ui.start.removesuffix('#/experiments')}#/experiments/{experiment.experiment_id}/runs/{parent.info.run_id}"
              "/artifacts?workflowType=machine_learning")
    page.get_by_text("plots", exact=True).first.click()
    page.get_by_text("val_acc_vs_macs.png", exact=True).first.wait_for()
    assert page.get_by_text("learning_curves.png", exact=True).count() >= 1
