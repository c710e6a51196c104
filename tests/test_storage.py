"""A study's storage: a folder or a URI that pyarrow.fs opens, read and written alike; on an object store,
a log that cannot be appended to is kept as numbered objects."""

from __future__ import annotations

import pytest

from cnnsearch import ConfigError
from cnnsearch.storage import RecordLog, Storage


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.slow)])
def place(request, tmp_path):
    """A function of a name that gives a place for a study's storage: a folder, or a URI of moto's S3 server (slow: a server)."""
    if request.param == "folder":
        return lambda name: tmp_path / name
    return request.getfixturevalue("s3").uri


def test_a_folder_and_an_s3_uri_hold_a_study_alike(place):
    storage = Storage.open(place("alike"))
    state = storage.path("cnnsearch.json")
    assert not storage.exists(state) and storage.listdir(storage.root) == []
    storage.write_text(state, "{}")
    assert storage.read_text(state) == "{}" and storage.listdir(storage.root) == ["cnnsearch.json"]
    with storage.local_folder("plots") as folder:
        (folder / "curves.png").write_bytes(b"png")
    assert storage.listdir(storage.path("plots")) == ["curves.png"]
    with storage.local_file(storage.path("plots", "curves.png")) as file:
        assert file.read_bytes() == b"png"
    storage.delete(storage.path("plots"))
    storage.delete(storage.path("plots"))  # gone already: nothing to do
    assert storage.listdir(storage.root) == ["cnnsearch.json"]
    if str(place("alike")).startswith("s3://"):
        assert not storage.local and storage.root == "studies/alike"
        assert storage.describe(storage.path("plots")) == "s3://studies/alike/plots"
    else:
        assert storage.local and storage.root == str(place("alike"))


@pytest.mark.parametrize("uri, message", [("nosuch://bucket/x", "Unrecognized filesystem type"),
                                          ("s3://bucket/x?endpoint=host", "Unexpected query parameter")])
def test_a_uri_that_pyarrow_cannot_open_is_refused(uri, message):
    with pytest.raises(ConfigError, match=f"--storage .*: cannot be opened .*{message}"):
        Storage.open(uri)


def test_a_record_log_reads_back_what_was_appended_though_a_kill_interrupted_its_compaction(place):
    storage = Storage.open(place("log"))
    folder = storage.path("optuna.journal")
    log = RecordLog(storage, folder)
    for number in range(3):
        log.append([{"n": number}, {"n": number, "second": True}])
    assert storage.listdir(folder) == ["000000000000.jsonl", "000000000002.jsonl", "000000000004.jsonl"]
    left_over = storage.read_text(storage.path("optuna.journal", "000000000002.jsonl"))

    reopened = RecordLog(storage, folder)  # compacts: one object holds every record
    assert reopened.records == log.records and storage.listdir(folder) == ["000000000000.jsonl"]
    # Killed after the compacted object was written, before the rest were deleted: the reader skips what it covers.
    storage.write_text(storage.path("optuna.journal", "000000000002.jsonl"), left_over)
    reopened.append([{"n": 3}])
    assert RecordLog(storage, folder).records == [*log.records, {"n": 3}]

    storage.delete(storage.path("optuna.journal", "000000000000.jsonl"))
    storage.write_text(storage.path("optuna.journal", "000000000007.jsonl"), '{"n": 4}\n')
    with pytest.raises(ConfigError, match="records 0 to 6 are missing"):
        RecordLog(storage, folder)
