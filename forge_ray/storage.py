"""The storage root: every artefact lives under one fsspec URI (a local path or `s3://bucket/prefix`).

Artefacts become visible atomically, and a `_COMPLETE` marker written last is what every reader
checks (`is_complete`):
- local roots: written into a temporary sibling folder, marked, then renamed into place;
- object stores (no rename; a "move" is copy + delete): written in place, the marker last,
  created only if absent. A single object PUT is atomic by itself, so `write_bytes` is one PUT.
Small mutable records (the registry's pointer and states) use `read_tagged` / `write_if`:
compare-and-swap on a content tag (an S3 ETag with If-Match / If-None-Match; a sha256 under a
directory lock locally). docs/storage.md has the rules and what is not done yet.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import posixpath
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec

from forge_ray import storage_s3
from forge_ray.errors import ConflictError, StorageError

COMPLETE_MARKER = "_COMPLETE"
# Compare-and-swap for filesystems with neither a server-side condition nor a local lock (memory://):
# correct within one process only.
_PROCESS_CAS = threading.Lock()


def _kind(fs: fsspec.AbstractFileSystem) -> str:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & {"file", "local"}:
        return "local"
    return "s3" if protocols & set(storage_s3.PROTOCOLS) else "other"


class Storage:
    """An fsspec filesystem rooted at `uri`; paths given to its methods are relative to the root.

    Pickles as its URI alone: a Ray worker rebuilds it from its own environment, so credentials
    never travel in a pickle (or land in Ray's object spilling on disk).
    """

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/") or uri
        protocol = fsspec.core.split_protocol(self.uri)[0]
        if protocol and "@" in self.uri.split("://", 1)[1].split("/", 1)[0]:
            raise StorageError(f"storage root {self.uri.split('://')[0]}://...: credentials in the URI are "
                               "not allowed; set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (docs/storage.md)")
        self.fs, self.root = url_to_fs(self.uri)
        self.kind = _kind(self.fs)
        if self.kind == "local":
            self.root = self.fs._strip_protocol(self.root)

    def __reduce__(self):
        return (Storage, (self.uri,))

    def __repr__(self) -> str:
        return f"Storage({self.uri!r})"

    @property
    def is_local(self) -> bool:
        """True when the root is a POSIX path of this node (atomic rename, flock)."""
        return self.kind == "local"

    def path(self, *parts: str) -> str:
        """The filesystem path of a relative path under the root."""
        return posixpath.join(self.root, *parts) if parts else self.root

    def url(self, *parts: str) -> str:
        """A full URI (with protocol) for a relative path, for handing to other libraries."""
        return self.fs.unstrip_protocol(self.path(*parts))

    def location(self, *parts: str) -> str:
        """What to hand to another process (a Ray worker) that opens it with `url_to_fs`: the plain
        path on a local root (what local tools and older records expect), the full URI elsewhere."""
        return self.path(*parts) if self.is_local else self.url(*parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def pyarrow_fs(self, *parts: str):
        """(pyarrow filesystem, path) of a relative path: for Ray Data and Ray Train's storage_filesystem."""
        import pyarrow.fs as pafs

        if self.kind == "local":
            return pafs.LocalFileSystem(), self.path(*parts)
        if self.kind == "s3":
            return storage_s3.pyarrow_s3(self.fs), self.path(*parts)
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs)), self.path(*parts)

    def check_writable(self) -> None:
        """Fail before any work starts if the root cannot be reached, created or written.

        On S3 the bucket must exist (it is never created here) and the keys must be accepted;
        the error names the URI and the endpoint, never a secret.
        """
        if self.kind == "s3":
            storage_s3.check_bucket(self.uri, self.root, self.fs)
        probe = self.path(f".forge-write-probe-{uuid.uuid4().hex}")
        try:
            if self.kind != "s3":
                self.fs.makedirs(self.root, exist_ok=True)
            self.fs.pipe_file(probe, b"ok")
            self.fs.rm(probe)
        except Exception as e:  # noqa: BLE001 - any failure means the root is unusable
            msg = storage_s3.scrub(str(e), self.fs)
            raise StorageError(f"storage root {self.uri!r} cannot be written: {msg}") from None

    # -- whole files ---------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file atomically: locally to a temporary name then renamed; elsewhere one PUT."""
        final = self.path(rel)
        if self.kind != "local":
            self.fs.pipe_file(final, data)
            return
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, final)

    def read_bytes(self, rel: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(rel))
        except FileNotFoundError:
            raise StorageError(f"missing file: {self.url(rel)}") from None

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, dump_json(obj))

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(rel))

    # -- compare-and-swap ----------------------------------------------------------------------
    def read_tagged(self, rel: str) -> tuple[bytes, str] | None:
        """(content, tag) read together, or None if missing; pass the tag to `write_if`."""
        if self.kind == "s3":
            return storage_s3.get_tagged(self.fs, self.path(rel))
        try:
            data = self.fs.cat_file(self.path(rel))
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def write_if(self, rel: str, data: bytes, tag: str | None) -> str:
        """Replace `rel` only if it still has `tag` (None: only if it does not exist yet).

        Raises ConflictError when another writer got there first; returns the new tag.
        """
        if self.kind == "s3":
            return storage_s3.put_if(self.fs, self.path(rel), data, tag)
        with self._cas_lock(rel):
            current = self.read_tagged(rel)
            if (current[1] if current else None) != tag:
                raise ConflictError(f"{self.url(rel)} was changed by another writer")
            self.write_bytes(rel, data)
        return hashlib.sha256(data).hexdigest()

    def delete_if(self, rel: str, tag: str) -> bool:
        """Delete `rel` only if it still has `tag`; False if it changed or is gone."""
        if self.kind == "s3":
            return storage_s3.delete_if(self.fs, self.path(rel), tag)
        with self._cas_lock(rel):
            current = self.read_tagged(rel)
            if not current or current[1] != tag:
                return False
            self.remove(rel)
            return True

    @contextlib.contextmanager
    def _cas_lock(self, rel: str) -> Iterator[None]:
        """Locally: flock on the file's folder (held by every process of this node). Else: in-process."""
        if self.kind != "local":
            with _PROCESS_CAS:
                yield
            return
        folder = posixpath.dirname(self.path(rel))
        os.makedirs(folder, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- folders -------------------------------------------------------------------------------
    def is_complete(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel, COMPLETE_MARKER))

    @contextlib.contextmanager
    def atomic_dir(self, rel: str) -> Iterator[str]:
        """Yield a folder path to fill; on success it becomes `rel`, complete (marker written last).

        If `rel` already exists and is complete, StorageError is raised (artefacts are
        immutable); an incomplete leftover from a crashed writer is replaced. On an exception
        nothing is marked complete and what was written is removed. On object stores the
        folder is `rel` itself (there is no rename): readers must check `is_complete`, and
        one writer per artefact at a time is assumed (docs/storage.md).
        """
        final = self.path(rel)
        if self.is_complete(rel):
            raise StorageError(f"{self.url(rel)} already exists; artefacts are never overwritten")
        if self.kind == "local":
            work = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
            self.fs.makedirs(work, exist_ok=True)
        else:
            work = final
            if self.fs.exists(final):
                self.fs.rm(final, recursive=True)
        try:
            yield work
            self._mark_complete(rel, work)
            if self.kind == "local":
                if self.fs.exists(final):
                    self.fs.rm(final, recursive=True)
                self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
                self.fs.mv(work, final, recursive=True)
        except BaseException:
            with contextlib.suppress(Exception):
                # In place on an object store: never remove what another writer completed.
                if self.fs.exists(work) and (self.kind == "local" or not self.is_complete(rel)):
                    self.fs.rm(work, recursive=True)
            raise

    def _mark_complete(self, rel: str, work: str) -> None:
        marker = posixpath.join(work, COMPLETE_MARKER)
        if self.kind == "local":
            self.fs.pipe_file(marker, b"")
            return
        # Created only if absent: of two writers racing on one artefact, one completes it.
        try:
            self.write_if(posixpath.relpath(marker, self.root), b"", None)
        except ConflictError:
            raise StorageError(f"{self.url(rel)} was completed by another writer meanwhile") from None


def url_to_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """`fsspec.core.url_to_fs` with the same object-store settings as `Storage` (for any URI a
    config names: init_from, tokenizer, KPI suites), so every room reaches the store the same way."""
    protocol = fsspec.core.split_protocol(url)[0]
    options = storage_s3.s3_options() if protocol in storage_s3.PROTOCOLS else {}
    return fsspec.core.url_to_fs(url, **options)


def check_uris(named: dict[str, str]) -> None:
    """Fail with one StorageError if any URI a config names ({field: URI}) cannot be reached or is
    missing: the same up-front check as the storage root's, for init_from, tokenizers, suites."""
    problems = []
    for field, uri in named.items():
        fs, path = url_to_fs(uri)
        try:
            if _kind(fs) == "s3":
                storage_s3.check_bucket(uri, path, fs)
            if not fs.exists(path):
                problems.append(f"{field}: nothing at {uri}")
        except StorageError as e:
            problems.append(f"{field}: {e}")
        except Exception as e:  # noqa: BLE001 - any failure means the location is unusable
            problems.append(f"{field}: {uri}: {storage_s3.scrub(str(e), fs)}")
    if problems:
        raise StorageError("; ".join(problems))


def is_local_location(location: str) -> bool:
    """Is `location` (a path or URI, as `Storage.location` gives) on this node's filesystem?"""
    return fsspec.core.split_protocol(location)[0] in (None, "file", "local")


class LineLog:
    """A file that grows by whole lines (metrics, consumption records) on any filesystem.

    Locally it is appended to and fsynced per write. An object store has no append: the object is
    rewritten whole with each write (one PUT, so a reader never sees half a line), starting from
    what it already held, so a restarted writer continues it. Keep such files small (roll to a new
    name every few hundred lines): each write costs the size of the file.
    """

    def __init__(self, location: str):
        self.fs, self.path = url_to_fs(location)
        self.local = _kind(self.fs) == "local"
        if self.local:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self.held = b""
        else:
            try:
                self.held = self.fs.cat_file(self.path)
            except FileNotFoundError:
                self.held = b""
        self.lines = self.held.count(b"\n")

    def write(self, *lines: str) -> None:
        data = "".join(line.rstrip("\n") + "\n" for line in lines).encode()
        self.lines += len(lines)
        if self.local:
            with open(self.path, "ab") as f:  # reopened per write: a killed writer loses nothing written
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return
        self.held += data
        self.fs.pipe_file(self.path, self.held)


def read_lines(location: str) -> list[str]:
    """The non-empty lines of a file at a path or URI; [] if it does not exist."""
    fs, path = url_to_fs(location)
    try:
        text = fs.cat_file(path).decode()
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line.strip()]


def local_sizes(local_dir: str) -> dict[str, int]:
    """{relative path: size in bytes} of every regular file under a local folder."""
    out = {}
    for top, _, files in os.walk(local_dir):
        for name in files:
            full = os.path.join(top, name)
            out[os.path.relpath(full, local_dir).replace(os.sep, "/")] = os.path.getsize(full)
    return out


def verify_copy(expected: dict[str, int], location: str, filesystem=None) -> None:
    """Raise StorageError naming the first file of `expected` ({relative path: size}, as `local_sizes`
    gives) that is missing under `location` or has another size. `location` is a path or URI, or a
    path on `filesystem` (a pyarrow filesystem, as Ray Train's checkpoints have).

    An upload is checked, not trusted: pyarrow's `copy_files` (Ray Train's checkpoint upload) can
    return without an error when a part of a multi-file copy failed.
    """
    found = _sizes_under(location, filesystem)
    for rel, size in sorted(expected.items()):
        where = f"{location.rstrip('/')}/{rel}"
        if rel not in found:
            raise StorageError(f"upload incomplete: {where} is missing")
        if found[rel] != size:
            raise StorageError(f"upload incomplete: {where} has {found[rel]} bytes, expected {size}")


def _sizes_under(location: str, filesystem=None) -> dict[str, int]:
    """{relative path: size} of every file under a folder on the store ({} if there is none)."""
    if filesystem is not None:
        import pyarrow.fs as pafs

        root = location.rstrip("/")
        infos = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
        return {posixpath.relpath(i.path, root): i.size for i in infos if i.type == pafs.FileType.File}
    fs, root = url_to_fs(location)
    root = root.rstrip("/")
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    return {posixpath.relpath(p, root): info.get("size") for p, info in found.items()}


def dump_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def sha256_file(fs: fsspec.AbstractFileSystem, path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
