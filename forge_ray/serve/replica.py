"""A model replica: serves requests from its loaded version and swaps versions without failing any.

Swap paths (docs/serving.md):
- in place: close the gate (new requests wait), drain, reload the weights, reset the prefix
  cache, check the canaries, open the gate. Only where `in_place_ok` (proven architecture, same
  config and tokenizer).
- surge: start a fresh engine with the new version beside the serving one, check its canaries,
  switch new requests to it, drain the old engine, stop it. On a GPU replica with
  `swap.surge_on_gpu: drain_first` the old engine is drained and stopped first (two engines would
  not fit), and brought back if the new one fails.
A checksum or canary failure leaves (or puts) the replica on the previous version and the
coordinator rejects the new one. Anything else (a drain that times out, no room for a surge engine,
a storage error) is `transient`: the replica stays where it was and retries later.

The engine is whatever `engine_cls` (a ServingEngine) the replica is given: VLLMEngine in
ModelServer, forge_ray.testing.fake_engine.FakeEngine in the unit tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

from forge_ray.config.serve import ServeConfig
from forge_ray.registry import CorruptVersionError, Registry
from forge_ray.serve import metrics
from forge_ray.serve.contracts import OpenAIReply, SwapResult
from forge_ray.serve.engine_interface import ServingEngine
from forge_ray.serve.limits import prompt_too_long
from forge_ray.serve.versions import in_place_ok, local_dir

log = logging.getLogger(__name__)


class Transient(Exception):
    """A swap failed for a reason that is not the version's: retried, the version stays promotable."""


@dataclass
class LoadedVersion:
    """An engine the replica serves from; `inflight` counts the requests using it (the drain waits
    for them)."""

    engine: ServingEngine
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def enter(self) -> None:
        self.inflight += 1
        self.idle.clear()

    def exit(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self.idle.set()

    async def drained(self, timeout: float) -> None:
        """Wait until no request uses this engine; Transient after `timeout` seconds."""
        if self.inflight:
            try:
                await asyncio.wait_for(self.idle.wait(), timeout)
            except TimeoutError:
                raise Transient(f"drain timed out after {timeout:.0f}s with {self.inflight} "
                                f"request(s) in flight") from None

    @property
    def version(self) -> str:
        return self.engine.version


class HeldStream:
    """A streamed reply that keeps its engine counted as busy (the drain waits) until the stream
    ends, is closed, or, never iterated (the client left before the response started), is
    collected: a request must not hold a swap's drain forever."""

    def __init__(self, loaded: LoadedVersion, stream: AsyncIterator[str]):
        self.loaded, self.stream, self.held = loaded, stream, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.loaded.exit()

    def __aiter__(self) -> HeldStream:
        return self

    async def __anext__(self) -> str:
        try:
            return await anext(self.stream)
        except BaseException:       # the end (StopAsyncIteration), an error or a cancellation
            await self.aclose()
            raise

    async def aclose(self) -> None:
        self.release()
        aclose: Callable | None = getattr(self.stream, "aclose", None)
        if aclose:
            await aclose()          # vLLM aborts the request in the engine

    def __del__(self) -> None:
        self.release()


class ModelReplica:
    """The logic of one Serve model replica (ModelServer wraps it in a deployment)."""

    def __init__(self, cfg: ServeConfig, registry: Registry, replica_id: str,
                 engine_cls: type[ServingEngine] | None = None):
        if engine_cls is None:
            from forge_ray.serve.vllm_engine import VLLMEngine as engine_cls
        self.cfg, self.registry, self.replica_id, self.engine_cls = cfg, registry, replica_id, engine_cls
        self.current: LoadedVersion | None = None
        self.gate = asyncio.Event()
        self.swapping = False
        gpu = cfg.replicas.num_gpus > 0
        self.drain_first = gpu and cfg.swap.surge_on_gpu == "drain_first"
        # Two engines on one GPU during a surge: each engine only ever takes half the memory.
        self.memory_share = 0.5 if gpu and not self.drain_first else 1.0

    async def load(self, version: str) -> None:
        """First load at replica start."""
        self.current = await self._start(version)
        self.gate.set()
        metrics.version_served(self.replica_id, None, version)

    async def _start(self, version: str) -> LoadedVersion:
        path = await asyncio.to_thread(local_dir, self.registry, version)
        engine = await self.engine_cls.start(version, self.registry.manifest(version), path, self.cfg,
                                             self.registry.model, self.memory_share)
        return LoadedVersion(engine)

    @property
    def version(self) -> str | None:
        return self.current.version if self.current else None

    # -- requests ------------------------------------------------------------------------------
    async def openai(self, route: str, body: dict, raw_request=None) -> OpenAIReply:
        """One OpenAI request, answered entirely by the engine serving when it passes the gate
        (a swap waits for it: the drain). A prompt that cannot fit the context is refused here,
        before any tokenisation."""
        await self.gate.wait()
        loaded = self.current
        too_long = prompt_too_long(route, body, self.cfg.engine.max_model_len, loaded.engine.max_token_chars)
        if too_long:
            raise too_long
        loaded.enter()
        try:
            reply = await loaded.engine.openai(route, body, raw_request)
        except BaseException:
            loaded.exit()
            raise
        if reply.stream is None:
            loaded.exit()
        else:
            reply.stream = HeldStream(loaded, reply.stream)
        return reply

    # -- swaps ---------------------------------------------------------------------------------
    async def swap(self, version: str) -> SwapResult:
        """Move this replica to `version`; a failure keeps (or puts back) the old one serving."""
        old = self.current
        manifest = self.registry.manifest(version)
        path: Literal["in_place", "surge"] = (
            "in_place" if in_place_ok(old.engine.manifest, manifest, self.cfg.engine) else "surge")
        t0 = time.monotonic()
        self.swapping = True
        transient = False
        try:
            if path == "in_place":
                ok, detail = await self._in_place(version, manifest)
            elif self.drain_first:
                ok, detail = await self._replace(version)
            else:
                ok, detail = await self._surge(version)
        except Transient as e:
            ok, detail, transient = False, f"transient: {e}", True
        except CorruptVersionError as e:
            ok, detail = False, f"checksum: {e}"
        except Exception as e:  # noqa: BLE001 - storage, capacity, engine start: not the version's fault
            log.exception("swap of %s to %s failed", self.replica_id, version)
            ok, detail, transient = False, f"transient: {type(e).__name__}: {e}", True
        finally:
            self.swapping = False
            self.gate.set()
        seconds = time.monotonic() - t0
        if ok:
            metrics.version_served(self.replica_id, old.version, version)
        log.info("replica %s: %s swap %s -> %s %s in %.2fs: %s", self.replica_id, path, old.version,
                 version, "ok" if ok else "FAILED", seconds, detail)
        return SwapResult(ok=ok, path=path, detail=detail, seconds=seconds, from_version=old.version,
                          to_version=version, serving=self.version, transient=transient)

    async def _reload(self, engine: ServingEngine, version: str, manifest: dict, path: str) -> None:
        """Drained engine only: new weights, then drop the KV cached with the old ones."""
        await engine.reload_weights(version, manifest, path)
        await engine.reset_prefix_cache()

    async def _in_place(self, version: str, manifest: dict) -> tuple[bool, str]:
        loaded = self.current
        engine = loaded.engine
        path = await asyncio.to_thread(local_dir, self.registry, version)
        self.gate.clear()
        await loaded.drained(self.cfg.swap.drain_timeout_s)    # Transient: nothing changed yet
        old = (engine.version, engine.manifest, engine.path)
        try:
            await self._reload(engine, version, manifest, path)
            check = await engine.run_canaries(self.cfg.swap.canary_match_tokens)
            if check.ok:
                return True, check.summary()
            detail, error = check.summary(), None
        except Exception as e:  # noqa: BLE001 - restore below, whatever went wrong
            log.exception("in-place reload of %s failed", version)
            detail, error = f"{type(e).__name__}: {e}", e
        await self._restore(loaded, old)
        if error is not None:
            raise Transient(f"reload failed ({detail}); back on {old[0]}")
        return False, detail

    async def _restore(self, loaded: LoadedVersion, old: tuple[str, dict, str]) -> None:
        """Back to the previous weights, proven by its canaries; else a fresh engine of it."""
        try:
            await self._reload(loaded.engine, *old)
            if (await loaded.engine.run_canaries(self.cfg.swap.canary_match_tokens)).ok:
                return
        except Exception:  # noqa: BLE001
            log.exception("reload back to %s failed", old[0])
        log.error("replica %s: restarting a fresh engine of %s", self.replica_id, old[0])
        loaded.engine.shutdown()
        self.current = await self._start(old[0])

    async def _surge(self, version: str) -> tuple[bool, str]:
        fresh = await self._start(version)
        check = await fresh.engine.run_canaries(self.cfg.swap.canary_match_tokens)
        if not check.ok:
            fresh.engine.shutdown()
            return False, check.summary()
        old, self.current = self.current, fresh
        try:
            await old.drained(self.cfg.swap.drain_timeout_s)
        except Transient as e:   # the new version serves already; the old one's stragglers are cut
            log.warning("replica %s: old engine %s stopped with requests in flight: %s",
                        self.replica_id, old.version, e)
        old.engine.shutdown()
        return True, check.summary()

    async def _replace(self, version: str) -> tuple[bool, str]:
        """Surge without room for two engines (GPU): drain and stop the old one, then start the new;
        on failure start the old version again. Requests wait at the closed gate meanwhile."""
        old = self.current
        await asyncio.to_thread(local_dir, self.registry, version)   # download before the pause
        self.gate.clear()
        await old.drained(self.cfg.swap.drain_timeout_s)
        old.engine.shutdown()
        try:
            fresh = await self._start(version)
        except BaseException:
            self.current = await self._start(old.version)
            raise
        check = await fresh.engine.run_canaries(self.cfg.swap.canary_match_tokens)
        if check.ok:
            self.current = fresh
            return True, check.summary()
        fresh.engine.shutdown()
        self.current = await self._start(old.version)
        return False, check.summary()

    def close(self) -> None:
        if self.current:
            self.current.engine.shutdown()
            self.current = None
