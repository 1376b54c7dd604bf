"""Concurrent promote / reject / rollback: no lost update, no repeated generation; the lock object."""

from __future__ import annotations

import json
import multiprocessing
import random
import threading
import time
import uuid

import pytest

from forge_ray.errors import ConflictError
from forge_ray.registry import Registry, RegistryError, publish_version
from forge_ray.registry.lock import registry_lock
from forge_ray.storage import Storage
from tests.unit.test_registry import MANIFEST, fake_export

VERSIONS = ["v1", "v2", "v3", "v4"]


def publish_all(storage: Storage, tmp_path) -> None:
    for i, v in enumerate(VERSIONS):
        publish_version(storage, "m", v, fake_export(tmp_path, v, f"w{i}".encode()), MANIFEST)


def churn(uri: str, seed: int, ops: int) -> list[int]:
    """Random promotes and rollbacks; the generations this worker's successful changes got."""
    rng, reg, got = random.Random(seed), Registry(Storage(uri), "m"), []
    for _ in range(ops):
        try:
            if rng.random() < 0.7:
                got.append(reg.promote(rng.choice(VERSIONS), reason=f"w{seed}", verify=False).generation)
            else:
                got.append(reg.rollback(reason=f"w{seed}").generation)
        except RegistryError:
            pass  # already promoted / nothing to roll back to: a refused change, not a lost one
    return got


def assert_consistent(reg: Registry, generations: list[int]) -> None:
    pointer = reg.pointer()
    assert sorted(generations) == list(range(1, len(generations) + 1)), "a generation repeated or went missing"
    assert pointer.generation == len(generations) == len(pointer.history)
    assert [e["generation"] for e in pointer.history] == list(range(1, pointer.generation + 1))
    assert pointer.version == pointer.history[-1]["version"]
    assert reg.state(pointer.version) == "promoted"


def test_processes_on_a_local_root(tmp_path):
    storage = Storage(str(tmp_path / "root"))
    publish_all(storage, tmp_path)
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.starmap(churn, [(storage.uri, seed, 12) for seed in range(4)])
    generations = [g for r in results for g in r]
    assert len(generations) > 10
    assert_consistent(Registry(storage, "m"), generations)


def test_threads_through_the_lock_object(tmp_path):
    """A root with no flock (memory://) takes the object-store path: lock object + pointer CAS."""
    storage = Storage(f"memory://forge-{uuid.uuid4().hex[:8]}")
    assert not storage.is_local
    publish_all(storage, tmp_path)
    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda s=s: results.append(churn(storage.uri, s, 12))) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert_consistent(Registry(storage, "m"), [g for r in results for g in r])
    assert not storage.exists("registry/m/.lock"), "the lock object is removed after each change"


def test_lock_object_excludes_waits_and_takes_over_a_dead_holder(tmp_path):
    storage = Storage(f"memory://forge-{uuid.uuid4().hex[:8]}")
    with registry_lock(storage, "L", wait_s=5):
        with pytest.raises(ConflictError, match="held by another registry change"):
            with registry_lock(storage, "L", wait_s=0.2):
                pass
    # A holder that died: its lock object stays, with a lease in the past.
    storage.write_json("L", {"owner": "dead", "expires": time.time() - 1})
    start = time.monotonic()
    with registry_lock(storage, "L", wait_s=5):
        assert json.loads(storage.read_bytes("L"))["owner"] != "dead"
    assert time.monotonic() - start < 2 and not storage.exists("L")


def test_a_stalled_holder_cannot_overwrite_a_newer_pointer(tmp_path):
    """If the pointer changed under a change (its lock lease ran out), the change fails, nothing is lost."""
    storage = Storage(str(tmp_path / "root"))
    publish_all(storage, tmp_path)
    reg = Registry(storage, "m")
    reg.promote("v1", verify=False)
    current, tag = reg._read_pointer()
    reg.promote("v2", verify=False)  # another writer, while the first one stalled
    with pytest.raises(RegistryError, match="pointer changed"):
        reg._move_pointer(current, tag, "v3", "promote", "stalled")
    assert reg.pointer().version == "v2" and reg.pointer().generation == 2
