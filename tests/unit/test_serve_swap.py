"""Swap logic around the fake engine (forge_ray.testing.fake_engine; nothing patched): paths chosen,
failures put the replica back, requests wait and none fail, the watcher refuses corrupted versions
and serialises replicas. (The real vLLM engine runs in tests/integration/test_serve.py.)"""

from __future__ import annotations

import asyncio
import os

import pytest

from forge_ray.config.serve import ServeConfig, ServeEngineConfig, SwapConfig
from forge_ray.registry import Registry, publish_version
from forge_ray.serve.contracts import SwapResult
from forge_ray.serve.coordinator import SwapCoordinator
from forge_ray.serve.replica import ModelReplica
from forge_ray.serve.versions import in_place_ok
from forge_ray.testing.fake_engine import FakeEngine
from tests.unit.test_registry import MANIFEST, fake_export


@pytest.fixture
def world(tmp_path):
    storage = str(tmp_path / "root")
    for v, arch in [("v1", "LlamaForCausalLM"), ("v2", "LlamaForCausalLM"), ("v3", "MixtralForCausalLM")]:
        publish_version(storage, "m", v, fake_export(tmp_path, v, v.encode()), {**MANIFEST, "architecture": arch})
    return Registry(storage, "m"), FakeEngine.fresh()


def request():
    return {"kind": "completion", "prompt": "hi", "sampling": {"max_tokens": 3}}


async def collect(replica):
    return [ev async for ev in replica.generate(request())]


def test_paths_in_place_for_same_dense_structure_surge_otherwise(world):
    reg, _ = world
    cfg = ServeEngineConfig()
    assert in_place_ok(reg.manifest("v1"), reg.manifest("v2"), cfg)
    assert not in_place_ok(reg.manifest("v1"), reg.manifest("v3"), cfg)          # architecture changes
    changed = {**reg.manifest("v2"), "files": {**reg.manifest("v2")["files"], "sub/tokenizer.json": "x"}}
    assert not in_place_ok(reg.manifest("v1"), changed, cfg)                      # tokenizer changes


def test_in_place_swap_under_requests_fails_none_and_serves_new(world):
    reg, engine_cls = world

    async def main():
        replica = ModelReplica(ServeConfig(), reg, "r1", engine_cls=engine_cls)
        await replica.load("v1")
        before = [asyncio.create_task(collect(replica)) for _ in range(5)]
        await asyncio.sleep(0.005)
        result = await replica.swap("v2")
        after = await collect(replica)
        return result, await asyncio.gather(*before), after, replica.current.engine.calls

    result, before, after, calls = asyncio.run(main())
    assert result.ok and result.path == "in_place"
    assert all(evs[0]["version"] == "v1" and evs[-1]["text"] == "v1" for evs in before)   # drained first
    assert after[0]["version"] == "v2" and after[-1]["text"] == "v2"
    assert calls == ["reload_weights v2", "reset_prefix_cache"]        # no stale KV of v1 reused


def test_failed_in_place_check_puts_the_replica_back(world):
    reg, engine_cls = world
    engine_cls.bad.add("v2")

    async def main():
        replica = ModelReplica(ServeConfig(), reg, "r1", engine_cls=engine_cls)
        await replica.load("v1")
        return await replica.swap("v2"), await collect(replica)

    result, events = asyncio.run(main())
    assert not result.ok and result.serving == "v1" and "differ" in result.detail
    assert events[0]["version"] == "v1" and events[-1]["text"] == "v1"
    assert engine_cls.started == ["v1"]   # the reload back was proven right: no fresh engine needed


def test_surge_starts_new_before_stopping_old_and_keeps_old_on_failure(world):
    reg, engine_cls = world

    async def main():
        replica = ModelReplica(ServeConfig(), reg, "r1", engine_cls=engine_cls)
        await replica.load("v1")
        old = replica.current
        engine_cls.bad.add("v3")
        failed = await replica.swap("v3")
        kept = replica.current is old and not old.engine.shut
        engine_cls.bad.discard("v3")
        ok = await replica.swap("v3")
        return failed, kept, ok, old.engine.shut, replica.version

    failed, kept, ok, old_shut, version = asyncio.run(main())
    assert failed.path == "surge" and not failed.ok and kept
    assert ok.ok and old_shut and version == "v3"
    assert engine_cls.started == ["v1", "v3", "v3"]
    assert engine_cls.stopped == ["v3", "v1"]     # the failed fresh engine, then the old one


def test_context_length_is_a_400_event(world):
    reg, engine_cls = world

    async def main():
        replica = ModelReplica(ServeConfig(engine=ServeEngineConfig(max_model_len=16)), reg, "r1",
                               engine_cls=engine_cls)
        await replica.load("v1")
        return [ev async for ev in replica.generate({**request(), "prompt": "x" * 20})]

    events = asyncio.run(main())
    assert events[0]["type"] == "error" and events[0]["status"] == 400
    assert events[0]["body"]["error"]["code"] == "context_length_exceeded"


def test_watcher_refuses_corrupted_version_and_rejects_on_failed_report(world):
    reg, _ = world
    reg.promote("v1")
    coord = SwapCoordinator(reg, SwapConfig())
    reg.promote("v2")
    with open(os.path.join(reg.version_path("v3"), "model.safetensors"), "ab") as f:
        f.write(b"!")
    coord.check()
    assert coord.target == "v2"
    assert coord.acquire("a", "v2") and not coord.acquire("b", "v2")   # one replica at a time
    assert not coord.acquire("a", "v1")                                 # only to the target
    coord.report("a", SwapResult(ok=False, to_version="v2", serving="v1", path="in_place", seconds=1.0,
                                 detail="canaries differ", from_version="v1"))
    assert reg.state("v2") == "rejected" and reg.promoted() == "v1" and coord.target == "v1"
    reg.promote("v3", verify=False)
    coord.check()
    assert reg.state("v3") == "rejected" and coord.target == "v1" and reg.promoted() == "v1"
    assert [e["event"] for e in coord.status()["events"]] == ["target", "swap_failed", "refused"]


def test_follow_answers_at_once_on_a_new_target_and_otherwise_after_its_wait(world):
    reg, _ = world
    reg.promote("v1")
    coord = SwapCoordinator(reg, SwapConfig())

    async def scenario():
        loop = asyncio.get_running_loop()
        t = loop.time()
        assert (await coord.follow("a", "v1", 0.3))["version"] == "v1"        # nothing new: a heartbeat
        waited = loop.time() - t
        assert 0.3 <= waited < 1.0
        seen = coord.status()["replicas"]["a"]                                # ... that is recorded
        assert (seen["version"], seen["swapping"]) == ("v1", False)
        waiting = asyncio.create_task(coord.follow("a", "v1", 30.0))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        reg.promote("v2")
        t = loop.time()
        coord.check()
        assert (await waiting)["version"] == "v2"                            # answered on the change
        assert loop.time() - t < 0.5
        assert (await coord.follow("a", "v1", 30.0))["version"] == "v2"      # behind already: at once

    asyncio.run(scenario())
