"""Swap logic around the fake engine (forge_ray.testing.fake_engine; nothing patched, failures are
injected): paths chosen, failures put the replica back, requests wait and none fail, transient
failures retried with the version still promotable, only checksum and canary failures reject, the
watcher refuses corrupted versions, never skips a promotion after a failed read, serialises replicas.
(The real vLLM engine runs in tests/integration/test_serve*.py.)"""

from __future__ import annotations

import asyncio
import gc
import os

import pytest

from forge_ray.config.serve import ServeConfig, ServeEngineConfig, SwapConfig
from forge_ray.registry import Registry, publish_version
from forge_ray.serve.contracts import SwapResult
from forge_ray.serve.coordinator import SwapCoordinator
from forge_ray.serve.engine_interface import EngineCapacityError
from forge_ray.serve.replica import ModelReplica
from forge_ray.serve.versions import in_place_ok
from forge_ray.testing.fake_engine import STEP_S, FakeEngine
from tests.unit.test_registry import MANIFEST, fake_export


class FlakyRegistry(Registry):
    """A registry whose store fails the next `failures` reads of a version (a storage hiccup)."""

    failures = 0

    def verify(self, version: str) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("connection reset by the object store")
        super().verify(version)


@pytest.fixture
def world(tmp_path):
    storage = str(tmp_path / "root")
    for v, arch in [("v1", "LlamaForCausalLM"), ("v2", "LlamaForCausalLM"), ("v3", "MixtralForCausalLM")]:
        publish_version(storage, "m", v, fake_export(tmp_path, v, v.encode()), {**MANIFEST, "architecture": arch})
    return FlakyRegistry(storage, "m"), FakeEngine.fresh()


BODY = {"model": "m", "prompt": "hi"}


async def complete(replica) -> tuple[str, str]:
    """(version header, text) of one non-streamed completion through the replica."""
    reply = await replica.openai("/v1/completions", dict(BODY))
    return reply.version, reply.body["choices"][0]["text"]


async def streamed(replica) -> tuple[str, str]:
    reply = await replica.openai("/v1/completions", {**BODY, "stream": True})
    chunks = [c async for c in reply.stream]
    return reply.version, "".join(chunks)


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
        before = [asyncio.create_task(complete(replica)) for _ in range(3)]
        before += [asyncio.create_task(streamed(replica)) for _ in range(3)]
        await asyncio.sleep(0.005)
        result = await replica.swap("v2")
        return result, await asyncio.gather(*before), await complete(replica), replica.current.engine.calls

    result, before, after, calls = asyncio.run(main())
    assert result.ok and result.path == "in_place"
    # Drained first: each request answered wholly by v1's weights, streams included.
    assert all(version == "v1" and "v2" not in text and "v1" in text for version, text in before)
    assert after == ("v2", "v2v2v2")
    assert calls == ["reload_weights v2", "reset_prefix_cache"]        # no stale KV of v1 reused


def test_a_stream_closed_early_or_never_read_does_not_hold_the_drain(world):
    reg, engine_cls = world

    async def main():
        replica = ModelReplica(ServeConfig(), reg, "r1", engine_cls=engine_cls)
        await replica.load("v1")
        loaded = replica.current
        reply = await replica.openai("/v1/completions", {**BODY, "stream": True})
        held = loaded.inflight
        await anext(reply.stream)
        await reply.stream.aclose()                  # the client went away mid-stream
        closed = loaded.inflight
        reply = await replica.openai("/v1/completions", {**BODY, "stream": True})
        del reply                                    # ... or before the response started
        gc.collect()
        return held, closed, loaded.inflight

    assert asyncio.run(main()) == (1, 0, 0)


def test_failed_in_place_check_puts_the_replica_back(world):
    reg, engine_cls = world
    engine_cls.bad.add("v2")

    async def main():
        replica = ModelReplica(ServeConfig(), reg, "r1", engine_cls=engine_cls)
        await replica.load("v1")
        return await replica.swap("v2"), await complete(replica)

    result, answer = asyncio.run(main())
    assert not result.ok and not result.transient and result.serving == "v1" and "differ" in result.detail
    assert answer == ("v1", "v1v1v1")
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
    assert failed.path == "surge" and not failed.ok and not failed.transient and kept
    assert ok.ok and old_shut and version == "v3"
    assert engine_cls.started == ["v1", "v3", "v3"]
    assert engine_cls.stopped == ["v3", "v1"]     # the failed fresh engine, then the old one


def test_drain_timeout_is_transient_and_the_version_stays_promotable(world):
    """A request that outlasts the drain: the swap gives up without touching the engine, the
    watcher keeps the target, and the retry once the request ends succeeds."""
    reg, engine_cls = world
    reg.promote("v1")
    coord = SwapCoordinator(reg, SwapConfig())
    engine_cls.steps = 30                                  # ~0.3 s per request
    cfg = ServeConfig(swap=SwapConfig(drain_timeout_s=0.05))

    async def main():
        replica = ModelReplica(cfg, reg, "r1", engine_cls=engine_cls)
        await replica.load("v1")
        reg.promote("v2")
        coord.check()
        slow = asyncio.create_task(complete(replica))
        await asyncio.sleep(2 * STEP_S)
        assert coord.acquire("r1", "v2")
        first = await replica.swap("v2")
        coord.report("r1", first)
        during = await complete(replica)                     # the gate is open again: v1 serves
        await slow
        assert coord.acquire("r1", coord.target)
        second = await replica.swap(coord.target)
        coord.report("r1", second)
        return first, during, second, replica.current.engine.calls

    first, during, second, calls = asyncio.run(main())
    assert not first.ok and first.transient and "drain timed out" in first.detail and first.serving == "v1"
    assert during[0] == "v1"
    assert second.ok and second.serving == "v2" and calls == ["reload_weights v2", "reset_prefix_cache"]
    assert reg.state("v2") == "promoted" and reg.promoted() == "v2" and coord.target == "v2"
    assert [e["event"] for e in coord.status()["events"]] == ["target", "swap_retry", "swapped"]


def test_surge_without_capacity_and_storage_errors_are_transient(world):
    reg, engine_cls = world
    reg.promote("v1")
    coord = SwapCoordinator(reg, SwapConfig())
    reg.promote("v3")
    coord.check()

    async def main():
        replica = ModelReplica(ServeConfig(), reg, "r1", engine_cls=engine_cls)
        await replica.load("v1")
        engine_cls.start_error.append(EngineCapacityError("no memory for a second engine"))
        results = [await replica.swap("v3")]
        reg.failures = 1                                     # the store drops the next read
        results.append(await replica.swap("v3"))
        results.append(await replica.swap("v3"))
        for r in results:
            coord.report("r1", r)
        return results, await complete(replica)

    (capacity, storage, ok), answer = asyncio.run(main())
    assert capacity.transient and "EngineCapacityError" in capacity.detail and capacity.serving == "v1"
    assert storage.transient and "OSError" in storage.detail and storage.serving == "v1"
    assert ok.ok and answer == ("v3", "v3v3v3")
    assert reg.state("v3") == "promoted" and coord.target == "v3"


def test_checksum_failure_at_the_replica_rejects(world):
    reg, engine_cls = world
    reg.promote("v1")
    coord = SwapCoordinator(reg, SwapConfig())
    reg.promote("v2")
    coord.check()
    with open(os.path.join(reg.version_path("v2"), "model.safetensors"), "ab") as f:
        f.write(b"!")                                        # goes bad after the watcher's check

    async def main():
        replica = ModelReplica(ServeConfig(), reg, "r1", engine_cls=engine_cls)
        await replica.load("v1")
        return await replica.swap("v2"), await complete(replica)

    result, answer = asyncio.run(main())
    coord.report("r1", result)
    assert not result.ok and not result.transient and result.detail.startswith("checksum")
    assert answer[0] == "v1" and reg.state("v2") == "rejected" and coord.target == "v1"


def test_gpu_surge_drains_first_or_halves_memory(world):
    reg, engine_cls = world

    async def main(surge_on_gpu):
        cfg = ServeConfig.model_validate({"replicas": {"num_gpus": 1}, "swap": {"surge_on_gpu": surge_on_gpu}})
        replica = ModelReplica(cfg, reg, "r1", engine_cls=engine_cls)
        await replica.load("v1")
        engine_cls.started.clear()
        engine_cls.stopped.clear()
        engine_cls.shares.clear()
        return await replica.swap("v3"), list(engine_cls.shares)

    result, shares = asyncio.run(main("drain_first"))
    assert result.ok and result.serving == "v3" and shares == [1.0]
    assert engine_cls.stopped == ["v1"] and engine_cls.started == ["v3"]      # the old one went first
    result, shares = asyncio.run(main("two_engines"))
    assert result.ok and shares == [0.5]


def test_gpu_drain_first_brings_the_old_version_back_on_failure(world):
    reg, engine_cls = world
    engine_cls.bad.add("v3")
    cfg = ServeConfig.model_validate({"replicas": {"num_gpus": 1}})

    async def main():
        replica = ModelReplica(cfg, reg, "r1", engine_cls=engine_cls)
        await replica.load("v1")
        return await replica.swap("v3"), await complete(replica)

    result, answer = asyncio.run(main())
    assert not result.ok and not result.transient and answer == ("v1", "v1v1v1")
    assert engine_cls.started == ["v1", "v3", "v1"] and engine_cls.stopped == ["v1", "v3"]


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


def test_watcher_does_not_skip_a_promotion_after_a_failed_read(world):
    reg, _ = world
    reg.promote("v1")
    coord = SwapCoordinator(reg, SwapConfig())
    reg.promote("v2")
    reg.failures = 1
    with pytest.raises(OSError):
        coord.check()
    assert coord.target == "v1"
    coord.check()                                           # the next poll sees the same promotion
    assert coord.target == "v2" and coord.generation == reg.pointer().generation


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
