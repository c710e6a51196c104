from __future__ import annotations

import pytest

from cnnsearch.cli import main


@pytest.fixture
def cli(capsys):
    """Run the command line in-process; returns (exit status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            main([str(a) for a in args])
            status = 0
        except SystemExit as exit:
            status = exit.code if isinstance(exit.code, int) else 1
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture(scope="session")
def ray_session():
    """One Ray runtime for every test that needs it: starting Ray costs seconds."""
    import ray

    # "local": a Ray of its own, never the cluster that /tmp/ray/ray_current_cluster names (another session's).
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def scratch_working_directory(tmp_path_factory):
    """Run every test in a scratch folder: MLflow writes ./mlruns artifacts, the CLI ./cnnsearch_runs."""
    import os

    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)
