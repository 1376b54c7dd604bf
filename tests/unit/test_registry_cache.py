"""Node-local cache of a version: copied to a temporary folder, verified, renamed; never half-used."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from forge_ray.registry import CorruptVersionError, Registry, publish_version
from forge_ray.registry.cache import cache_folder, cache_version
from forge_ray.storage import COMPLETE_MARKER, Storage
from tests.unit.test_registry import MANIFEST, fake_export


@pytest.fixture
def remote(tmp_path):
    """A registry on a root that is not local (memory://), so versions must be copied."""
    storage = Storage(f"memory://forge-{uuid.uuid4().hex[:8]}")
    publish_version(storage, "m", "v1", fake_export(tmp_path, "v1", b"weights-1"), MANIFEST)
    return Registry(storage, "m")


def test_copies_verifies_and_reuses(remote, tmp_path):
    cache = str(tmp_path / "cache")
    path = cache_version(remote, "v1", cache)
    assert path.startswith(cache) and os.path.exists(os.path.join(path, COMPLETE_MARKER))
    with open(os.path.join(path, "model.safetensors"), "rb") as f:
        assert f.read() == b"weights-1"
    assert os.path.exists(os.path.join(path, "sub", "tokenizer.json"))
    assert os.path.exists(os.path.join(path, "manifest.json"))
    assert [n for n in os.listdir(os.path.dirname(path)) if ".tmp-" in n] == []
    assert cache_version(remote, "v1", cache) == path  # a hit: no second copy


def test_a_corrupt_copy_is_never_published(remote, tmp_path):
    remote.storage.fs.pipe_file(remote.version_path("v1") + "/model.safetensors", b"flipped")
    cache = tmp_path / "cache"
    with pytest.raises(CorruptVersionError, match="checksum mismatch in model.safetensors"):
        cache_version(remote, "v1", str(cache))
    left = [p for p in cache.rglob("*") if p.is_file()]
    assert left == [], f"a half-verified copy was left behind: {left}"


def test_concurrent_copies_end_in_one_complete_folder(tmp_path):
    # The source is a local folder: fsspec's memory filesystem shares one read position between
    # threads (the checksums catch that, as they should), so the race is tested on real files.
    storage = Storage(str(tmp_path / "root"))
    publish_version(storage, "m", "v1", fake_export(tmp_path, "v1", b"weights-1"), MANIFEST)
    reg, dest, paths = Registry(storage, "m"), str(tmp_path / "cache" / "v1"), []

    def copy():
        paths.append(cache_folder(storage.fs, reg.version_path("v1"), dest, reg.manifest("v1")["files"]))

    threads = [threading.Thread(target=copy) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert paths == [dest] * 4
    assert os.listdir(os.path.dirname(dest)) == ["v1"]
    with open(os.path.join(dest, "model.safetensors"), "rb") as f:
        assert f.read() == b"weights-1"


def test_an_unmarked_folder_in_the_way_is_replaced(remote, tmp_path):
    cache = str(tmp_path / "cache")
    path = cache_version(remote, "v1", cache)
    os.remove(os.path.join(path, COMPLETE_MARKER))
    os.remove(os.path.join(path, "model.safetensors"))  # as if an older, non-atomic copy died
    assert cache_version(remote, "v1", cache) == path
    assert os.path.exists(os.path.join(path, "model.safetensors"))


def test_any_folder_by_size(tmp_path):
    storage = Storage(f"memory://forge-{uuid.uuid4().hex[:8]}")
    storage.fs.pipe_file(storage.path("tok/tokenizer.json"), b"{}")
    storage.fs.pipe_file(storage.path("tok/nested/merges.txt"), b"a b")
    dest = cache_folder(storage.fs, storage.path("tok"), str(tmp_path / "tok"))
    assert sorted(os.path.relpath(os.path.join(d, f), dest) for d, _, fs in os.walk(dest) for f in fs) == [
        COMPLETE_MARKER, "nested/merges.txt", "tokenizer.json"]


def test_local_roots_are_used_in_place(tmp_path):
    storage = Storage(str(tmp_path / "root"))
    publish_version(storage, "m", "v1", fake_export(tmp_path, "v1"), MANIFEST)
    reg = Registry(storage, "m")
    assert cache_version(reg, "v1", str(tmp_path / "cache")) == reg.version_path("v1")
