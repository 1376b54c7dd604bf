"""Storage root atomicity and the offline environment."""

from __future__ import annotations

import os

import pytest

from forge_ray.errors import StorageError
from forge_ray.offline import OFFLINE_ENV
from forge_ray.storage import Storage


@pytest.mark.parametrize("uri", ["local", "memory://forge-test-atomic"])
def test_atomic_dir_is_visible_only_when_complete(tmp_path, uri):
    storage = Storage(str(tmp_path) if uri == "local" else uri)
    with pytest.raises(RuntimeError):
        with storage.atomic_dir("datasets/x/v1") as tmp:
            storage.fs.pipe(f"{tmp}/part-0", b"half")
            raise RuntimeError("crash while writing")
    assert not storage.exists("datasets/x/v1")
    with storage.atomic_dir("datasets/x/v1") as tmp:
        storage.fs.pipe(f"{tmp}/part-0", b"whole")
    assert storage.is_complete("datasets/x/v1")
    assert storage.fs.cat(storage.path("datasets/x/v1/part-0")) == b"whole"
    with pytest.raises(StorageError, match="never overwritten"):
        with storage.atomic_dir("datasets/x/v1"):
            pass
    assert storage.fs.cat(storage.path("datasets/x/v1/part-0")) == b"whole"


def test_write_json_roundtrip_and_missing(tmp_path):
    storage = Storage(str(tmp_path))
    storage.write_json("a/b.json", {"k": 1})
    assert storage.read_json("a/b.json") == {"k": 1}
    with pytest.raises(StorageError, match="missing file"):
        storage.read_json("a/none.json")


def test_offline_env_is_set_on_import():
    import forge_ray  # noqa: F401

    assert set(OFFLINE_ENV) <= set(os.environ)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
