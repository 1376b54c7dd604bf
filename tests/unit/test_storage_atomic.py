"""Storage without rename: in-place folders with a marker, compare-and-swap, settings and secrets."""

from __future__ import annotations

import pickle
import threading
import uuid

import fsspec
import pytest

from forge_ray import storage_s3
from forge_ray.errors import ConflictError, StorageError
from forge_ray.storage import COMPLETE_MARKER, Storage

SECRET = "unit-secret-" + "x" * 20


def roots(tmp_path) -> list[Storage]:
    """A local root (rename path) and an in-memory one (the object-store path: no rename)."""
    return [Storage(str(tmp_path / "root")), Storage(f"memory://forge-{uuid.uuid4().hex[:8]}")]


def test_in_place_dir_is_unmarked_until_done_and_removed_on_crash(tmp_path):
    storage = Storage(f"memory://forge-{uuid.uuid4().hex[:8]}")
    assert storage.kind == "other"
    with storage.atomic_dir("d/v1") as work:
        assert work == storage.path("d/v1")  # no temporary sibling: nothing to rename
        storage.fs.pipe_file(f"{work}/a", b"1")
        assert storage.exists("d/v1/a") and not storage.is_complete("d/v1")
    assert storage.is_complete("d/v1")
    with pytest.raises(RuntimeError), storage.atomic_dir("d/v2") as work:
        storage.fs.pipe_file(f"{work}/a", b"half")
        raise RuntimeError("crash")
    assert not storage.exists("d/v2") and not storage.is_complete("d/v2")


def test_in_place_dir_replaces_a_crashed_writers_leftover(tmp_path):
    storage = Storage(f"memory://forge-{uuid.uuid4().hex[:8]}")
    storage.fs.pipe_file(storage.path("d/v1/stale"), b"old")  # a writer died before its marker
    with storage.atomic_dir("d/v1") as work:
        storage.fs.pipe_file(f"{work}/a", b"new")
    assert storage.is_complete("d/v1") and not storage.exists("d/v1/stale")


def test_marker_is_created_only_once(tmp_path):
    """Two writers racing on one in-place artefact: the second to finish fails, the first's stays."""
    storage = Storage(f"memory://forge-{uuid.uuid4().hex[:8]}")
    with pytest.raises(StorageError, match="completed by another writer"):
        with storage.atomic_dir("d/v1") as work:
            storage.fs.pipe_file(f"{work}/a", b"mine")
            storage.fs.pipe_file(f"{work}/{COMPLETE_MARKER}", b"")  # the other writer completes first
    assert storage.is_complete("d/v1") and storage.exists("d/v1/a")


@pytest.mark.parametrize("which", [0, 1], ids=["local", "memory"])
def test_write_if_is_compare_and_swap(tmp_path, which):
    storage = roots(tmp_path)[which]
    assert storage.read_tagged("x/p") is None
    tag = storage.write_if("x/p", b"1", None)
    with pytest.raises(ConflictError):
        storage.write_if("x/p", b"2", None)  # create-only: it exists
    assert storage.read_tagged("x/p") == (b"1", tag)
    tag2 = storage.write_if("x/p", b"2", tag)
    with pytest.raises(ConflictError):
        storage.write_if("x/p", b"3", tag)  # stale tag
    assert storage.read_bytes("x/p") == b"2"
    assert not storage.delete_if("x/p", tag) and storage.delete_if("x/p", tag2)
    assert storage.read_tagged("x/p") is None


@pytest.mark.parametrize("which", [0, 1], ids=["local", "memory"])
def test_concurrent_increments_lose_no_update(tmp_path, which):
    storage = roots(tmp_path)[which]
    storage.write_if("n", b"0", None)

    def bump(times: int) -> None:
        for _ in range(times):
            while True:
                data, tag = storage.read_tagged("n")
                try:
                    storage.write_if("n", str(int(data) + 1).encode(), tag)
                    break
                except ConflictError:
                    continue

    threads = [threading.Thread(target=bump, args=(25,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert storage.read_bytes("n") == b"100"


def test_s3_settings_come_from_the_environment_and_stay_out_of_pickles(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "forgekey")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    storage = Storage("s3://bucket/prefix/")  # builds a client; nothing is contacted yet
    assert storage.kind == "s3" and storage.root == "bucket/prefix" and storage.url("a") == "s3://bucket/prefix/a"
    assert storage.fs.endpoint_url == "http://127.0.0.1:9" and storage.fs.client_kwargs["region_name"] == "eu-west-3"
    assert SECRET.encode() not in pickle.dumps(storage) and SECRET not in repr(storage)
    assert pickle.loads(pickle.dumps(storage)).fs.secret == SECRET  # the worker's own env
    pa_fs, path = storage.pyarrow_fs("runs")
    assert path == "bucket/prefix/runs" and pa_fs.region == "eu-west-3"
    assert SECRET.encode() not in pickle.dumps(pa_fs)


def test_fsspec_config_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": "http://127.0.0.1:10"})
    assert "endpoint_url" not in storage_s3.s3_options()


def test_credentials_in_the_uri_are_refused():
    with pytest.raises(StorageError, match="credentials in the URI") as e:
        Storage(f"s3://key:{SECRET}@bucket/p")
    assert SECRET not in str(e.value)


def test_local_pyarrow_fs_and_check_writable(tmp_path):
    storage = Storage(str(tmp_path / "r"))
    storage.check_writable()
    pa_fs, path = storage.pyarrow_fs("a")
    with pa_fs.open_output_stream(path) as f:
        f.write(b"ok")
    assert storage.read_bytes("a") == b"ok"
    blocker = tmp_path / "file"  # root ignores permissions: a file in the way blocks anyone
    blocker.write_text("a file, not a folder")
    with pytest.raises(StorageError, match="cannot be written"):
        Storage(str(blocker / "root")).check_writable()


def test_object_store_keys_never_enter_a_jobs_runtime_env():
    from forge_ray.cluster import job_env_vars

    env = job_env_vars({"AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_ACCESS_KEY_ID": "k", "AWS_SESSION_TOKEN": "t",
                        "AWS_ENDPOINT_URL": "http://127.0.0.1:1", "X": "1"})
    assert not {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"} & set(env)
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1" and env["X"] == "1"
