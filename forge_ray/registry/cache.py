"""Node-local copies of what lives on the store: a registry version (or any folder), copied atomically.

    path = cache_version(registry, "v3")      # a local folder vLLM / transformers load as it is
    path = local_folder("s3://bucket/tokenizers/base")   # any folder a config names (init_from, ...)

The copy goes to a temporary sibling folder, every file is checked against the manifest's
sha256 (or, for a folder without one, the sizes the store lists), a marker is written, and only
then is the folder renamed into place: a half-copied cache is never used, and of two processes
copying at once one rename wins and the other's copy is dropped. Cached folders are keyed by
the manifest's checksums, so a version name reused on another root never hits a stale copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import uuid

import fsspec

from forge_ray.registry.checksums import MANIFEST, CorruptVersionError, verify_checksums
from forge_ray.registry.store import Registry
from forge_ray.storage import COMPLETE_MARKER, is_local_location, url_to_fs

CACHE_ENV = "FORGE_CACHE_DIR"


def default_cache_root() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "forge_ray")


def cache_version(registry: Registry, version: str, cache_root: str | None = None) -> str:
    """A local folder holding `version`, complete and checksum-verified.

    On a local storage root the version's own folder is verified and returned (no copy).
    """
    if registry.storage.is_local:
        registry.verify(version)
        return registry.version_path(version)
    files = registry.manifest(version).get("files", {})
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
    dest = os.path.join(cache_root or default_cache_root(), "registry", registry.model, f"{version}-{digest}")
    return cache_folder(registry.storage.fs, registry.version_path(version), dest, files, extra=(MANIFEST,))


def local_folder(location: str, cache_root: str | None = None) -> str:
    """A local folder holding the folder at `location` (a path or URI a config names: `init_from`,
    a tokenizer). A local path is returned as it is; a folder on an object store is copied once per
    node into the cache, keyed by its URI and its listing (names, sizes, ETags), so a folder
    changed on the store is copied again."""
    if is_local_location(location):
        return _local_path(location)
    fs, path = url_to_fs(location)
    path = path.rstrip("/")
    listing = fs.find(path, detail=True)
    if not listing:
        raise FileNotFoundError(f"no folder at {location}")
    return cache_folder(fs, path, _uri_cache_dest(location, listing, cache_root))


def local_file(location: str, cache_root: str | None = None) -> str:
    """A local path of the file at `location` (a path or URI; a KPI suite), copied into the cache
    if remote: downloaded to a temporary name, checked against the store's size, renamed."""
    if is_local_location(location):
        return _local_path(location)
    fs, path = url_to_fs(location)
    info = fs.info(path)
    name = posixpath.basename(path)
    dest = os.path.join(_uri_cache_dest(location, {path: info}, cache_root), name)
    if os.path.exists(dest):
        return dest
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = f"{dest}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        fs.get_file(path, tmp)
        if info.get("size") is not None and os.path.getsize(tmp) != info["size"]:
            raise CorruptVersionError(f"{location}: the copy differs in size from the store")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def _local_path(location: str) -> str:
    return fsspec.core.strip_protocol(location) if "://" in location else location


def _uri_cache_dest(location: str, listing: dict, cache_root: str | None) -> str:
    key = json.dumps(sorted((p, i.get("size"), str(i.get("ETag") or i.get("mtime") or ""))
                            for p, i in listing.items()))
    digest = hashlib.sha256(f"{location}\n{key}".encode()).hexdigest()[:16]
    name = posixpath.basename(location.rstrip("/")) or "root"
    return os.path.join(cache_root or default_cache_root(), "uris", f"{name}-{digest}")


def cache_folder(fs: fsspec.AbstractFileSystem, src: str, dest: str, files: dict[str, str] | None = None,
                 extra: tuple[str, ...] = ()) -> str:
    """Copy folder `src` of `fs` to the local folder `dest` atomically; returns `dest`.

    `files` ({relpath: sha256}) lists what to copy and verify, `extra` names unverified files to
    bring along (a manifest). Without `files`, everything under `src` is copied and checked by size.
    A `dest` already complete is returned as it is.
    """
    if os.path.exists(os.path.join(dest, COMPLETE_MARKER)):
        return dest
    src = src.rstrip("/")
    listed = {posixpath.relpath(p, fs._strip_protocol(src)): info.get("size")
              for p, info in fs.find(src, detail=True).items()}
    wanted = sorted(files) if files is not None else sorted(r for r in listed if r != COMPLETE_MARKER)
    wanted += [r for r in extra if r in listed]
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = f"{dest}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        for rel in wanted:
            os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
        # One batched call: s3fs downloads the files concurrently.
        fs.get([posixpath.join(src, r) for r in wanted], [os.path.join(tmp, r) for r in wanted])
        if files is not None:
            verify_checksums(fsspec.filesystem("file"), tmp, files)
        else:
            _verify_sizes(tmp, {r: listed[r] for r in wanted}, src)
        open(os.path.join(tmp, COMPLETE_MARKER), "wb").close()
        _publish(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _verify_sizes(folder: str, sizes: dict[str, int | None], src: str) -> None:
    bad = [r for r, n in sizes.items() if n is not None and os.path.getsize(os.path.join(folder, r)) != n]
    if bad:
        raise CorruptVersionError(f"{src}: copied files differ in size from the store: {bad}")


def _publish(tmp: str, dest: str) -> None:
    """Rename `tmp` to `dest`; a complete `dest` from another process wins, an incomplete one is replaced."""
    try:
        os.rename(tmp, dest)
        return
    except OSError:
        if os.path.exists(os.path.join(dest, COMPLETE_MARKER)):
            return  # another process finished first; ours is removed by the caller
    # A folder without the marker (a copy made some other way, or by hand): moved aside, then ours.
    stale = f"{dest}.stale-{uuid.uuid4().hex[:6]}"
    os.rename(dest, stale)
    shutil.rmtree(stale, ignore_errors=True)
    os.rename(tmp, dest)
