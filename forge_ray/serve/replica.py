"""A model replica: serves requests from its loaded version and swaps versions without failing any.

Swap paths (docs/serving.md):
- in place: close the gate (new requests wait), drain, vLLM `reload_weights`, reset the prefix
  cache, check the canaries, open the gate. Only where `in_place_ok` (proven architecture, same
  config and tokenizer).
- surge: start a fresh engine with the new version beside the serving one, check its canaries,
  switch new requests to it, drain the old engine, stop it.
A failed check or an error leaves (or puts) the replica on the previous version; the coordinator
then marks the new version rejected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from forge_ray.config.serve import ServeConfig
from forge_ray.registry import Registry
from forge_ray.serve import metrics
from forge_ray.serve import vllm_engine as eng
from forge_ray.serve.protocol import BadRequest

log = logging.getLogger(__name__)


class ModelReplica:
    """The logic of one Serve model replica (serving/ wraps it in a deployment)."""

    def __init__(self, cfg: ServeConfig, registry: Registry, replica_id: str):
        self.cfg, self.registry, self.replica_id = cfg, registry, replica_id
        self.current: eng.LoadedVersion | None = None
        self.gate = asyncio.Event()
        self.swapping = False

    async def load(self, version: str) -> None:
        """First load at replica start."""
        self.current = await self._start(version)
        self.gate.set()
        metrics.version_served(self.replica_id, None, version)

    async def _start(self, version: str) -> eng.LoadedVersion:
        path = await asyncio.to_thread(eng.local_dir, self.registry, version)
        return await eng.start_engine(version, self.registry.manifest(version), path, self.cfg.engine)

    @property
    def version(self) -> str | None:
        return self.current.version if self.current else None

    # -- requests ------------------------------------------------------------------------------
    def prompt_ids(self, loaded: eng.LoadedVersion, req: dict) -> list[int]:
        tok = loaded.tokenizer
        if req["kind"] == "chat":
            template = self.cfg.chat_template or getattr(tok, "chat_template", None) or eng.DEFAULT_CHAT_TEMPLATE
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

    async def generate(self, req: dict) -> AsyncIterator[dict]:
        """Events for one request: {"start"} with the version, then {"delta"}s; or one {"error"}."""
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
            async for out in eng.stream(loaded.engine, ids, req["sampling"], final_only=not req.get("stream")):
                o = out.outputs[0]
                yield {"type": "delta", "text": o.text, "token_ids": list(o.token_ids),
                       "finish_reason": o.finish_reason}
        finally:
            loaded.exit()

    # -- swaps ---------------------------------------------------------------------------------
    async def swap(self, version: str) -> dict:
        """Move this replica to `version`; returns {"ok", "path", "detail", "seconds"}."""
        old = self.current
        manifest = self.registry.manifest(version)
        path = "in_place" if eng.in_place_ok(old.manifest, manifest, self.cfg.engine) else "surge"
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
        return {"ok": ok, "path": path, "detail": detail, "seconds": seconds, "from": old.version,
                "to": version, "serving": self.version}

    async def _in_place(self, version: str, manifest: dict) -> tuple[bool, str]:
        loaded = self.current
        path = await asyncio.to_thread(eng.local_dir, self.registry, version)
        self.gate.clear()
        await loaded.drained(self.cfg.swap.drain_timeout_s)
        old = (loaded.version, loaded.manifest, loaded.path)
        try:
            await eng.reload_in_place(loaded, version, manifest, path)
            check = await eng.run_canaries(loaded, self.cfg.swap.canary_match_tokens)
            if check.ok:
                return True, check.summary()
            detail = check.summary()
        except Exception as e:  # noqa: BLE001 - restore below, whatever went wrong
            log.exception("in-place reload of %s failed", version)
            detail = f"{type(e).__name__}: {e}"
        await self._restore(loaded, old)
        return False, detail

    async def _restore(self, loaded: eng.LoadedVersion, old: tuple[str, dict, str]) -> None:
        """Back to the previous weights, proven by its canaries; else a fresh engine of it."""
        try:
            await eng.reload_in_place(loaded, *old)
            if (await eng.run_canaries(loaded, self.cfg.swap.canary_match_tokens)).ok:
                return
        except Exception:  # noqa: BLE001
            log.exception("reload back to %s failed", old[0])
        log.error("replica %s: restarting a fresh engine of %s", self.replica_id, old[0])
        self.current = await self._start(old[0])
        eng.shutdown(loaded)

    async def _surge(self, version: str) -> tuple[bool, str]:
        fresh = await self._start(version)
        check = await eng.run_canaries(fresh, self.cfg.swap.canary_match_tokens)
        if not check.ok:
            eng.shutdown(fresh)
            return False, check.summary()
        old, self.current = self.current, fresh
        try:
            await old.drained(self.cfg.swap.drain_timeout_s)
        finally:
            eng.shutdown(old)
        return True, check.summary()

    def close(self) -> None:
        if self.current:
            eng.shutdown(self.current)
            self.current = None
