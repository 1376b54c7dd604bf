"""Swap logic around a fake engine: paths chosen, failures put the replica back, requests wait and
none fail, the watcher refuses corrupted versions and serialises replicas. (The real vLLM engine
runs in tests/integration/test_serve.py.)"""

from __future__ import annotations

import asyncio
import os

import pytest

from forge_ray.config.serve import ServeConfig, ServeEngineConfig, SwapConfig
from forge_ray.registry import CanaryResult, Registry, publish_version
from forge_ray.serve import vllm_engine as eng
from forge_ray.serve.coordinator import SwapCoordinator
from forge_ray.serve.replica import ModelReplica
from tests.unit.test_registry import MANIFEST, fake_export


class FakeTokenizer:
    chat_template = None

    def __call__(self, text):
        return {"input_ids": [ord(c) % 50 for c in text]}

    def __len__(self):
        return 50


class FakeEngine:
    """Stands in for vLLM: 'generates' the weights' name; wrong for versions listed in `bad`."""

    def __init__(self, version, bad):
        self.weights, self.bad, self.shut = version, bad, False


@pytest.fixture
def world(tmp_path, monkeypatch):
    storage = str(tmp_path / "root")
    for v, arch in [("v1", "LlamaForCausalLM"), ("v2", "LlamaForCausalLM"), ("v3", "MixtralForCausalLM")]:
        publish_version(storage, "m", v, fake_export(tmp_path, v, v.encode()), {**MANIFEST, "architecture": arch})
    reg = Registry(storage, "m")
    bad: set[str] = set()
    started: list[str] = []

    async def start_engine(version, manifest, path, cfg):
        started.append(version)
        await asyncio.sleep(0.05)
        loaded = eng.LoadedVersion(version, manifest, path, FakeEngine(version, bad), FakeTokenizer())
        loaded.idle.set()
        return loaded

    async def reload_in_place(loaded, version, manifest, path):
        loaded.engine.weights = version
        loaded.version, loaded.manifest, loaded.path = version, manifest, path

    async def run_canaries(loaded, match):
        ok = loaded.engine.weights == loaded.version and loaded.version not in bad
        return CanaryResult(ok, 1, [] if ok else [{"prompt": "p", "expected": [1], "got": [2]}])

    async def stream(engine, ids, sampling, final_only=False):
        for _ in range(3):
            await asyncio.sleep(0.01)
            yield type("O", (), {"outputs": [type("C", (), {"text": engine.weights, "token_ids": [1],
                                                             "finish_reason": None})()]})()

    monkeypatch.setattr(eng, "start_engine", start_engine)
    monkeypatch.setattr(eng, "reload_in_place", reload_in_place)
    monkeypatch.setattr(eng, "run_canaries", run_canaries)
    monkeypatch.setattr(eng, "stream", stream)
    monkeypatch.setattr(eng, "shutdown", lambda loaded: setattr(loaded.engine, "shut", True))
    monkeypatch.setattr("forge_ray.serve.coordinator.metrics.swap_done", lambda *a: None)
    monkeypatch.setattr("forge_ray.serve.replica.metrics.version_served", lambda *a: None)
    return reg, bad, started


def request():
    return {"kind": "completion", "prompt": "hi", "sampling": {"max_tokens": 3}}


async def collect(replica):
    return [ev async for ev in replica.generate(request())]


def test_paths_in_place_for_same_dense_structure_surge_otherwise(world):
    reg, _, _ = world
    cfg = ServeEngineConfig()
    assert eng.in_place_ok(reg.manifest("v1"), reg.manifest("v2"), cfg)
    assert not eng.in_place_ok(reg.manifest("v1"), reg.manifest("v3"), cfg)      # architecture changes
    changed = {**reg.manifest("v2"), "files": {**reg.manifest("v2")["files"], "sub/tokenizer.json": "x"}}
    assert not eng.in_place_ok(reg.manifest("v1"), changed, cfg)                  # tokenizer changes


def test_in_place_swap_under_requests_fails_none_and_serves_new(world):
    reg, _, _ = world

    async def main():
        replica = ModelReplica(ServeConfig(), reg, "r1")
        await replica.load("v1")
        before = [asyncio.create_task(collect(replica)) for _ in range(5)]
        await asyncio.sleep(0.005)
        result = await replica.swap("v2")
        after = await collect(replica)
        return result, await asyncio.gather(*before), after

    result, before, after = asyncio.run(main())
    assert result["ok"] and result["path"] == "in_place"
    assert all(evs[0]["version"] == "v1" and evs[-1]["text"] == "v1" for evs in before)   # drained first
    assert after[0]["version"] == "v2" and after[-1]["text"] == "v2"


def test_failed_in_place_check_puts_the_replica_back(world):
    reg, bad, started = world
    bad.add("v2")

    async def main():
        replica = ModelReplica(ServeConfig(), reg, "r1")
        await replica.load("v1")
        return await replica.swap("v2"), await collect(replica)

    result, events = asyncio.run(main())
    assert not result["ok"] and result["serving"] == "v1" and "differ" in result["detail"]
    assert events[0]["version"] == "v1" and events[-1]["text"] == "v1"
    assert started == ["v1"]            # the reload back was proven right: no fresh engine needed


def test_surge_starts_new_before_stopping_old_and_keeps_old_on_failure(world):
    reg, bad, started = world

    async def main():
        replica = ModelReplica(ServeConfig(), reg, "r1")
        await replica.load("v1")
        old = replica.current
        bad.add("v3")
        failed = await replica.swap("v3")
        kept = replica.current is old and not old.engine.shut
        bad.discard("v3")
        ok = await replica.swap("v3")
        return failed, kept, ok, old.engine.shut, replica.version

    failed, kept, ok, old_shut, version = asyncio.run(main())
    assert failed["path"] == "surge" and not failed["ok"] and kept
    assert ok["ok"] and old_shut and version == "v3"
    assert started == ["v1", "v3", "v3"]


def test_context_length_is_a_400_event(world):
    reg, _, _ = world

    async def main():
        replica = ModelReplica(ServeConfig(engine=ServeEngineConfig(max_model_len=16)), reg, "r1")
        await replica.load("v1")
        return [ev async for ev in replica.generate({**request(), "prompt": "x" * 20})]

    events = asyncio.run(main())
    assert events[0]["type"] == "error" and events[0]["status"] == 400
    assert events[0]["body"]["error"]["code"] == "context_length_exceeded"


def test_watcher_refuses_corrupted_version_and_rejects_on_failed_report(world):
    reg, _, _ = world
    reg.promote("v1")
    coord = SwapCoordinator(reg, SwapConfig())
    reg.promote("v2")
    with open(os.path.join(reg.version_path("v3"), "model.safetensors"), "ab") as f:
        f.write(b"!")
    coord.check()
    assert coord.target == "v2"
    assert coord.acquire("a", "v2") and not coord.acquire("b", "v2")   # one replica at a time
    assert not coord.acquire("a", "v1")                                 # only to the target
    coord.report("a", {"ok": False, "to": "v2", "serving": "v1", "path": "in_place", "seconds": 1.0,
                       "detail": "canaries differ"})
    assert reg.state("v2") == "rejected" and reg.promoted() == "v1" and coord.target == "v1"
    reg.promote("v3", verify=False)
    coord.check()
    assert reg.state("v3") == "rejected" and coord.target == "v1" and reg.promoted() == "v1"
    assert [e["event"] for e in coord.status()["events"]] == ["target", "swap_failed", "refused"]


def test_follow_answers_at_once_on_a_new_target_and_otherwise_after_its_wait(world):
    reg, _, _ = world
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
