from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cnnsearch.cli import main


# The tests' tiny residual space: 8 architectures of a few thousand parameters, on the synthetic images.
TINY_SPACE = {
    "name": "tiny",
    "family": "residual",
    "stem": {"style": "cifar", "channels": [8, 16]},
    "stages": [{"stride": 1}, {"stride": 2}],
    "residual": {"num_blocks": [1, 2], "width": [8, 16]},
    "dataset": {"name": "synthetic", "subset": 256},
    "budget": {"epochs": 2},
    "recipe": {"batch_size": 64},
}


def _changed(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` merged in, mapping into mapping; a change to None removes the key."""
    merged = dict(base)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _changed(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture(scope="session")
def tiny_space():
    """A function that writes the tiny residual space, or a variant of it, as ``folder/NAME.yaml``, and returns the path.

    ``tiny_space(folder, name="tiny", **changes)``: each change is a top-level section merged into the
    space's own (``dataset={"subset": 128}`` keeps its name), a list replaces the space's, None removes.
    """
    import yaml

    def write(folder, name: str = "tiny", **changes) -> Path:
        path = Path(folder) / f"{name}.yaml"
        path.write_text(yaml.safe_dump(_changed(TINY_SPACE, {"name": name, **changes}), sort_keys=False, default_flow_style=None))
        return path

    return write


@pytest.fixture(scope="session")
def free_port():
    """A function that returns a TCP port on 127.0.0.1 that nothing listens on now."""
    def port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    return port


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


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server on 127.0.0.1 with an empty bucket, and credentials for it in the environment.

    Ray processes started after this fixture inherit the credentials, as a cluster's nodes
    would have their own. ``uri(path)`` is the bucket's ``path`` as ``--storage`` takes it.
    """
    from types import SimpleNamespace

    import pyarrow.fs
    from moto.server import ThreadedMotoServer

    environment = pytest.MonkeyPatch()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        environment.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"127.0.0.1:{server.get_host_and_port()[1]}"
    filesystem = pyarrow.fs.S3FileSystem(endpoint_override=endpoint, scheme="http", allow_bucket_creation=True)
    filesystem.create_dir("studies")
    yield SimpleNamespace(bucket="studies", filesystem=filesystem,
                          uri=lambda path: f"s3://studies/{path}?endpoint_override={endpoint}&scheme=http")
    server.stop()
    environment.undo()
