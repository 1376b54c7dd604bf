"""A model replica: serves requests from its loaded version and swaps versions without failing any.

Swap paths (docs/serving.md):
- in place: close the gate (new requests wait), drain, reload the weights, reset the prefix
  cache, check the canaries, open the gate. Only where `in_place_ok` (proven architecture, same
  config and tokenizer).
- surge: start a fresh engine with the new version beside the serving one, check its canaries,
  switch new requests to it, drain the old engine, stop it.
A failed check or an error leaves (or puts) the replica on the previous version; the coordinator
then marks the new version rejected.

The engine is whatever `engine_cls` (a ServingEngine) the replica is given: VLLMEngine in
ModelServer, forge_ray.testing.fake_engine.FakeEngine in the unit tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from forge_ray.config.serve import ServeConfig
from forge_ray.registry import Registry
from forge_ray.serve import metrics
from forge_ray.serve.contracts import GenerateRequest, StreamEvent, SwapResult
from forge_ray.serve.engine_interface import ServingEngine
from forge_ray.serve.protocol import BadRequest
from forge_ray.serve.versions import in_place_ok, local_dir
from forge_ray.serve.vllm_engine import VLLMEngine

log = logging.getLogger(__name__)

DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


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
        if self.inflight:
            await asyncio.wait_for(self.idle.wait(), timeout)

    @property
    def version(self) -> str:
        return self.engine.version


class ModelReplica:
    """The logic of one Serve model replica (ModelServer wraps it in a deployment)."""

    def __init__(self, cfg: ServeConfig, registry: Registry, replica_id: str,
                 engine_cls: type[ServingEngine] = VLLMEngine):
        self.cfg, self.registry, self.replica_id, self.engine_cls = cfg, registry, replica_id, engine_cls
        self.current: LoadedVersion | None = None
        self.gate = asyncio.Event()
        self.swapping = False

    async def load(self, version: str) -> None:
        """First load at replica start."""
        self.current = await self._start(version)
        self.gate.set()
        metrics.version_served(self.replica_id, None, version)

    async def _start(self, version: str) -> LoadedVersion:
        path = await asyncio.to_thread(local_dir, self.registry, version)
        engine = await self.engine_cls.start(version, self.registry.manifest(version), path, self.cfg.engine)
        return LoadedVersion(engine)

    @property
    def version(self) -> str | None:
        return self.current.version if self.current else None

    # -- requests ------------------------------------------------------------------------------
    def prompt_ids(self, loaded: LoadedVersion, req: GenerateRequest) -> list[int]:
        tok = loaded.engine.tokenizer
        if req["kind"] == "chat":
            template = self.cfg.chat_template or getattr(tok, "chat_template", None) or DEFAULT_CHAT_TEMPLATE
            text = tok.apply_chat_template(req["messages"], chat_template=template,
                                           add_generation_prompt=True, tokenize=False)
            return list(tok(text)["input_ids"])
        prompt = req["prompt"]
        if isinstance(prompt, str):
            return list(tok(prompt)["input_ids"])
        vocab = len(tok)
        if any(not 0 <= t < vocab for t in prompt):
            raise BadRequest(f"prompt token ids must be in [0, {vocab})", param="prompt")
        return list(prompt)

    async def generate(self, req: GenerateRequest) -> AsyncIterator[StreamEvent]:
        """Events for one request: a "start" with the version, then "delta"s; or one "error"."""
        await self.gate.wait()
        loaded = self.current
        loaded.enter()
        try:
            try:
                ids = self.prompt_ids(loaded, req)
                limit, max_tokens = self.cfg.engine.max_model_len, req["sampling"]["max_tokens"]
                if len(ids) + max_tokens > limit:
                    raise BadRequest(f"this model's maximum context length is {limit} tokens; the prompt "
                                     f"has {len(ids)} and max_tokens is {max_tokens}",
                                     param="max_tokens", code="context_length_exceeded")
                if not ids:
                    raise BadRequest("the prompt is empty after tokenization", param="prompt")
            except BadRequest as e:
                yield {"type": "error", "status": e.status, "body": e.body()}
                return
            yield {"type": "start", "version": loaded.version, "prompt_tokens": len(ids)}
            # A non-streamed request gets one event, not one per token through Serve.
            async for o in loaded.engine.generate(ids, req["sampling"], final_only=not req.get("stream")):
                yield {"type": "delta", "text": o.text, "token_ids": o.token_ids, "finish_reason": o.finish_reason}
        finally:
            loaded.exit()

    # -- swaps ---------------------------------------------------------------------------------
    async def swap(self, version: str) -> SwapResult:
        """Move this replica to `version` (in place or surge); a failure keeps the old one serving."""
        old = self.current
        manifest = self.registry.manifest(version)
        path: Literal["in_place", "surge"] = (
            "in_place" if in_place_ok(old.engine.manifest, manifest, self.cfg.engine) else "surge")
        t0 = time.monotonic()
        self.swapping = True
        try:
            ok, detail = await (self._in_place(version, manifest) if path == "in_place" else self._surge(version))
        except Exception as e:  # noqa: BLE001 - any failure keeps the old version serving
            log.exception("swap of %s to %s failed", self.replica_id, version)
            ok, detail = False, f"{type(e).__name__}: {e}"
        finally:
            self.swapping = False
            self.gate.set()
        seconds = time.monotonic() - t0
        if ok:
            metrics.version_served(self.replica_id, old.version, version)
        log.info("replica %s: %s swap %s -> %s %s in %.2fs: %s", self.replica_id, path, old.version,
                 version, "ok" if ok else "FAILED", seconds, detail)
        return SwapResult(ok=ok, path=path, detail=detail, seconds=seconds, from_version=old.version,
                          to_version=version, serving=self.version)

    async def _reload(self, engine: ServingEngine, version: str, manifest: dict, path: str) -> None:
        """Drained engine only: new weights, then drop the KV cached with the old ones."""
        await engine.reload_weights(version, manifest, path)
        await engine.reset_prefix_cache()

    async def _in_place(self, version: str, manifest: dict) -> tuple[bool, str]:
        loaded = self.current
        engine = loaded.engine
        path = await asyncio.to_thread(local_dir, self.registry, version)
        self.gate.clear()
        await loaded.drained(self.cfg.swap.drain_timeout_s)
        old = (engine.version, engine.manifest, engine.path)
        try:
            await self._reload(engine, version, manifest, path)
            check = await engine.run_canaries(self.cfg.swap.canary_match_tokens)
            if check.ok:
                return True, check.summary()
            detail = check.summary()
        except Exception as e:  # noqa: BLE001 - restore below, whatever went wrong
            log.exception("in-place reload of %s failed", version)
            detail = f"{type(e).__name__}: {e}"
        await self._restore(loaded, old)
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
        self.current = await self._start(old[0])
        loaded.engine.shutdown()

    async def _surge(self, version: str) -> tuple[bool, str]:
        fresh = await self._start(version)
        check = await fresh.engine.run_canaries(self.cfg.swap.canary_match_tokens)
        if not check.ok:
            fresh.engine.shutdown()
            return False, check.summary()
        old, self.current = self.current, fresh
        try:
            await old.drained(self.cfg.swap.drain_timeout_s)
        finally:
            old.engine.shutdown()
        return True, check.summary()

    def close(self) -> None:
        if self.current:
            self.current.engine.shutdown()
            self.current = None
