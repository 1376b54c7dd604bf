"""The storage root: every artefact lives under one fsspec URI.

Artefacts become visible atomically: they are written into a temporary sibling folder,
a `_COMPLETE` marker is written last, and the folder is renamed into place. Readers use
`is_complete` and never pick up a half-written dataset, checkpoint or version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec

from forge_ray.errors import StorageError

COMPLETE_MARKER = "_COMPLETE"


class Storage:
    """An fsspec filesystem rooted at `uri`; paths given to its methods are relative to the root."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/") or uri
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)
        if self.fs.protocol in ("file", "local") or "file" in self.fs.protocol:
            self.root = self.fs._strip_protocol(self.root)

    def path(self, *parts: str) -> str:
        """The filesystem path of a relative path under the root."""
        return posixpath.join(self.root, *parts) if parts else self.root

    def url(self, *parts: str) -> str:
        """A full URI (with protocol) for a relative path, for handing to other libraries."""
        return self.fs.unstrip_protocol(self.path(*parts))

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def check_writable(self) -> None:
        """Fail before any work starts if the root cannot be created or written."""
        probe = self.path(f".forge-write-probe-{uuid.uuid4().hex}")
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            with self.fs.open(probe, "wb") as f:
                f.write(b"ok")
            self.fs.rm(probe)
        except Exception as e:  # noqa: BLE001 - any failure means the root is unusable
            raise StorageError(f"storage root {self.uri!r} cannot be written: {e}") from None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file atomically: to a temporary name, then renamed into place."""
        final = self.path(rel)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, final)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def read_json(self, rel: str) -> Any:
        try:
            with self.fs.open(self.path(rel), "rb") as f:
                return json.load(f)
        except FileNotFoundError:
            raise StorageError(f"missing file: {self.url(rel)}") from None

    def is_complete(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel, COMPLETE_MARKER))

    @contextlib.contextmanager
    def atomic_dir(self, rel: str) -> Iterator[str]:
        """Yield a temporary folder path to fill; on success it becomes `rel`, complete.

        If `rel` already exists and is complete, StorageError is raised (artefacts are
        immutable); an incomplete leftover from a crashed writer is replaced.
        On an exception the temporary folder is removed and nothing is visible.
        """
        final = self.path(rel)
        if self.is_complete(rel):
            raise StorageError(f"{self.url(rel)} already exists; artefacts are never overwritten")
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        self.fs.makedirs(tmp, exist_ok=True)
        try:
            yield tmp
            with self.fs.open(posixpath.join(tmp, COMPLETE_MARKER), "wb") as f:
                f.write(b"")
            if self.fs.exists(final):
                self.fs.rm(final, recursive=True)
            self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
            self.fs.mv(tmp, final, recursive=True)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm(tmp, recursive=True)
            raise


def sha256_file(fs: fsspec.AbstractFileSystem, path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
