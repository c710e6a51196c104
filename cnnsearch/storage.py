"""Where a study keeps its state: a folder, or a URI that ``pyarrow.fs`` opens.

``--storage`` takes a folder on this machine (a shared filesystem's mount is one) or a
URI such as ``s3://bucket/path?endpoint_override=host:9000&scheme=http``, ``gs://``,
``hdfs://`` or ``file://``, with pyarrow's query options. Ray Tune's trial folders and
checkpoints, the study's state file, Optuna's record and the study's pictures live there,
so every node of a cluster, and any machine that resumes the study, reaches them.

Paths are the filesystem's own (``bucket/key`` on S3, absolute on this machine), as Ray
Tune's trials report them. A folder that a cluster's nodes share is checked from each of
them before a study starts: :meth:`Storage.marked` writes a file for the nodes to look
for, and :func:`unreachable_reason`, run on each node, looks for it and writes a file of
its own. Nothing here knows Ray, Optuna or MLflow.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow
import pyarrow.fs as pafs

from .config import ConfigError

__all__ = ["RecordLog", "Storage", "unreachable_reason"]

_PROBE = ".cnnsearch-probe-"  # the names of the files that check a folder from each node; each is deleted at once


class Storage:
    """A study's storage: a pyarrow filesystem and the path of the study's folder on it."""

    def __init__(self, filesystem: pafs.FileSystem, root: str, uri: str) -> None:
        self.filesystem, self.root, self.uri = filesystem, root, uri

    @classmethod
    def open(cls, location: str | Path) -> Storage:
        """The storage that ``location`` names: a folder (relative to the working directory) or a URI.

        Raises:
            ConfigError: a URI that pyarrow cannot open (an unknown scheme, a bad option, no such bucket).
        """
        text = str(location)
        if "://" not in text:
            folder = Path(text).expanduser().resolve()
            return cls(pafs.LocalFileSystem(), folder.as_posix(), str(folder))
        try:
            filesystem, root = pafs.FileSystem.from_uri(text)
        except (pyarrow.ArrowException, OSError, ValueError) as error:
            raise ConfigError(f"--storage {text}: cannot be opened ({str(error).strip().splitlines()[0]})") from None
        return cls(filesystem, root.rstrip("/"), text)

    @property
    def local(self) -> bool:
        """Whether the study's folder is a folder of this machine's (a mounted shared filesystem included)."""
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        """A path under the study's folder."""
        return posixpath.join(self.root, *parts)

    def describe(self, path: str) -> str:
        """``path`` as people read it: a local path, or a URI without the options that only connect to it."""
        return path if self.local else f"{urlsplit(self.uri).scheme}://{path}"

    def exists(self, path: str) -> bool:
        return self.filesystem.get_file_info(path).type != pafs.FileType.NotFound

    def listdir(self, path: str) -> list[str]:
        """The names in folder ``path``, sorted; none if there is no such folder."""
        infos = self.filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return sorted(posixpath.basename(info.path) for info in infos)

    def read_bytes(self, path: str) -> bytes:
        with self.filesystem.open_input_stream(path) as stream:
            return stream.read()

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode()

    def write_bytes(self, path: str, content: bytes) -> None:
        if self.local:  # an object store has no folders to make
            self.filesystem.create_dir(posixpath.dirname(path), recursive=True)
        with self.filesystem.open_output_stream(path) as stream:
            stream.write(content)

    def write_text(self, path: str, text: str) -> None:
        self.write_bytes(path, text.encode())

    def delete(self, path: str) -> None:
        """Delete a file or a folder with its contents; nothing if it is gone already."""
        kind = self.filesystem.get_file_info(path).type
        if kind == pafs.FileType.Directory:
            self.filesystem.delete_dir(path)
        elif kind == pafs.FileType.File:
            self.filesystem.delete_file(path)

    @contextlib.contextmanager
    def local_file(self, path: str) -> Iterator[Path]:
        """File ``path`` on this machine: itself, or a copy that is deleted on exit."""
        if self.local:
            yield Path(path)
            return
        with tempfile.TemporaryDirectory(prefix="cnnsearch-") as folder:
            copy = Path(folder) / posixpath.basename(path)
            copy.write_bytes(self.read_bytes(path))
            yield copy

    @contextlib.contextmanager
    def local_folder(self, name: str) -> Iterator[Path]:
        """Folder ``name`` of the study, to write into on this machine: itself, or a scratch folder
        whose files are copied there on exit."""
        if self.local:
            folder = Path(self.path(name))
            folder.mkdir(parents=True, exist_ok=True)
            yield folder
            return
        with tempfile.TemporaryDirectory(prefix="cnnsearch-") as scratch:
            yield Path(scratch)
            for file in sorted(Path(scratch).iterdir()):
                self.write_bytes(self.path(name, file.name), file.read_bytes())

    @contextlib.contextmanager
    def marked(self) -> Iterator[str]:
        """A file of a name of its own in this local folder, for each node of a cluster to look for; deleted on exit,
        with the folders that it needed made (so that a study refused later leaves nothing behind).

        Raises:
            ConfigError: the folder cannot be made or written.
        """
        folder = Path(self.root)
        made = next((path for path in reversed([folder, *folder.parents]) if not path.exists()), None)
        marker = folder / f"{_PROBE}{uuid.uuid4().hex}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            marker.write_text(marker.name)
        except OSError as error:
            raise ConfigError(f"--storage {self.root}: cannot be written ({error.strerror or error})") from None
        try:
            yield marker.name
        finally:
            marker.unlink()
            for path in [folder, *folder.parents] if made else []:
                path.rmdir()
                if path == made:
                    break


def unreachable_reason(folder: str, marker: str) -> str | None:
    """Why this machine cannot keep a study in its ``folder``, where the study's driver wrote file ``marker``; None if it can.

    Run on each node of a cluster: a node sees the driver's folder only where the folder is
    shared, mounted at the same path; elsewhere it finds none, or a folder of its own.
    """
    path = Path(folder)
    if not path.is_dir():
        return "no such folder there"
    if not (path / marker).is_file():
        return "a folder of its own there, without the file that the driver wrote into its folder"
    probe = path / f"{_PROBE}{uuid.uuid4().hex}"
    try:
        probe.write_text(probe.name)
        read = probe.read_text()
        probe.unlink()
    except OSError as error:
        return f"cannot write there ({error.strerror or error})"
    return None if read == probe.name else "reads back other content than it wrote there"


class RecordLog:
    """A log of JSON records on a filesystem that cannot append to a file (an object store).

    Each append is an object of its own, named by the number of its first record, so the
    records read back in order; opening the log writes them all into object 0 and deletes
    the rest, so that the next open reads one object per append since. A reader skips an
    object that starts before the records it holds: one that a compaction covered before
    it could be deleted. One process writes the log (a study's driver) and keeps its
    records in memory.
    """

    _DIGITS = 12

    def __init__(self, storage: Storage, folder: str) -> None:
        self.storage, self.folder = storage, folder
        self.records: list[dict[str, Any]] = []
        names = self.storage.listdir(folder)
        for name in names:  # zero-padded numbers: in order
            start = int(name.split(".")[0])
            if start < len(self.records):
                continue
            if start > len(self.records):
                raise ConfigError(f"{storage.describe(folder)}: records {len(self.records)} to {start - 1} are missing")
            self.records += [json.loads(line) for line in self.storage.read_text(posixpath.join(folder, name)).splitlines()]
        if len(names) > 1:
            self._write(0, self.records)
            for name in names[1:]:
                self.storage.delete(posixpath.join(folder, name))

    def _write(self, start: int, records: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(record) + "\n" for record in records)
        self.storage.write_text(posixpath.join(self.folder, f"{start:0{self._DIGITS}d}.jsonl"), lines)

    def append(self, records: list[dict[str, Any]]) -> None:
        self._write(len(self.records), records)
        self.records += records
