"""The MLflow UI, driven by a real browser: a recorded study shows its trial runs, their knobs and its plots.

Needs Debian's chromium (apt-get install chromium) and Playwright's Python package;
skipped only when chromium is absent.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"), pytest.mark.slow]

SPACE = """
name: uidense
family: dense
stem: {style: cifar, channels: 8}
stages:
  - {stride: 1}
  - {stride: 2}
dense: {growth_rate: [4, 8], num_layers: 2, bn_size: 2, compression: 0.5}
dataset: {name: synthetic, subset: 128}
budget: {epochs: 1}
recipe: {batch_size: 64}
"""


@pytest.fixture(scope="module")
def ui(ray_session, tmp_path_factory, free_port):
    """A two-trial study recorded in its own store, and `cnnsearch ui` serving it."""
    from cnnsearch.cli import main

    folder = tmp_path_factory.mktemp("ui")
    (folder / "uidense.yaml").write_text(SPACE)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    main(["run", str(folder / "uidense.yaml"), "--tracking-uri", uri, "--storage", str(folder / "runs"),
          "--sampler", "grid", "--trials", "2"])
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cnnsearch", "ui", "--tracking-uri", uri, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # a loaded machine: mlflow ui took over 90 s to answer
    while True:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                os.killpg(server.pid, signal.SIGKILL)
                pytest.fail(f"mlflow ui did not start: {server.stderr.read()}")
            time.sleep(0.5)
    yield base, mlflow.MlflowClient(uri)
    os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def page():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1800, "height": 1000})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def test_runs_table_lists_trials_with_a_growth_rate_column(ui, page):
    base, client = ui
    experiment = client.get_experiment_by_name("uidense")
    page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning")
    page.get_by_role("link", name="uidense", exact=True).last.wait_for()
    # Trial runs are nested under their study: expand it.
    page.locator("[role=row]").filter(has_text="uidense").locator("button").first.click()
    trials = page.get_by_role("link", name="trial-")
    trials.first.wait_for()
    assert trials.count() == 2
    page.get_by_role("button", name="Columns").click()
    page.get_by_placeholder("Search columns").fill("growth_rate")
    page.get_by_text("dense.growth_rate", exact=True).last.click()  # the param (the metric copy comes first)
    page.keyboard.press("Escape")
    header = page.locator("[role=columnheader]").filter(has_text="dense.growth_rate")
    header.first.wait_for()
    cells = page.locator("[role=gridcell][col-id*='growth_rate']").all_inner_texts()
    assert sorted(c.strip() for c in cells if c.strip() not in ("", "-")) == ["4", "8"]  # "-": the study row


def test_parent_run_lists_its_plot_artifacts(ui, page):
    base, client = ui
    experiment = client.get_experiment_by_name("uidense")
    parent = client.search_runs([experiment.experiment_id], filter_string="tags.`cnnsearch.study` = 'uidense'")[0]
    page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs/{parent.info.run_id}/artifacts?workflowType=machine_learning")
    page.get_by_text("plots", exact=True).first.click()
    page.get_by_text("val_acc_vs_macs.png", exact=True).first.wait_for()
    assert page.get_by_text("learning_curves.png", exact=True).count() >= 1
