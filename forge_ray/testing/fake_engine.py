"""A serving engine that stands in for vLLM in the replica's and the front's unit tests (as Ray Serve
LLM's `MockVLLMEngine` does for `LLMServer`): no model, no processes, milliseconds per call.

    Engine = FakeEngine.fresh(bad={"v3"})        # a class of its own: its own bad set and logs
    replica = ModelReplica(ServeConfig(), registry, "r1", engine_cls=Engine)
    ...
    Engine.started, Engine.stopped               # versions started / shut down, in order
    Engine.requests                              # (route, body) of every OpenAI request it answered

It "generates" the name of the version whose weights it holds, so a test sees which weights
answered; its canaries fail for the versions in `bad`, or when the weights are not the version it
was told it holds. Its start raises what `start_error` holds (then clears it), e.g.
EngineCapacityError for a surge with no room.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import ClassVar

from forge_ray.config.serve import ServeConfig
from forge_ray.registry import CanaryResult
from forge_ray.serve.contracts import OpenAIReply, Sampling
from forge_ray.serve.engine_interface import EngineOutput, ServingEngine
from forge_ray.serve.protocol import BadRequest

START_S = 0.05      # an engine start takes a moment: requests overlap it in the surge tests
STEP_S = 0.01       # per generated output


class FakeTokenizer:
    """One token per character (ids below 50); no chat template of its own."""

    chat_template = None

    def __call__(self, text: str) -> dict:
        return {"input_ids": [ord(c) % 50 for c in text]}

    def __len__(self) -> int:
        return 50

    def get_vocab(self) -> dict[str, int]:
        return {chr(48 + i): i for i in range(50)}


class FakeEngine(ServingEngine):
    bad: ClassVar[set[str]] = set()         # versions whose canaries fail
    started: ClassVar[list[str]] = []       # every start(), in order
    stopped: ClassVar[list[str]] = []       # every shutdown(), the version held then
    requests: ClassVar[list[tuple[str, dict]]] = []
    shares: ClassVar[list[float]] = []      # memory_share of every start()
    start_error: ClassVar[list[BaseException]] = []   # raised (once each) by the next start()s
    steps: ClassVar[int] = 3                # outputs per generated choice

    @classmethod
    def fresh(cls, bad: Iterable[str] = ()) -> type[FakeEngine]:
        """A subclass with its own state: tests share none."""
        return type(cls.__name__, (cls,), {"bad": set(bad), "started": [], "stopped": [], "requests": [],
                                           "start_error": [], "shares": []})

    def __init__(self, version: str, manifest: dict, path: str):
        self.version, self.manifest, self.path = version, manifest, path
        self.weights = version          # what it would generate with
        self.calls: list[str] = []      # reload_weights / reset_prefix_cache, in order
        self.shut = False

    @classmethod
    async def start(cls, version: str, manifest: dict, path: str, cfg: ServeConfig, model_name: str,
                    memory_share: float = 1.0) -> FakeEngine:
        cls.started.append(version)
        cls.shares.append(memory_share)
        await asyncio.sleep(START_S)
        if cls.start_error:
            raise cls.start_error.pop(0)
        return cls(version, manifest, path)

    @property
    def tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()

    @property
    def max_token_chars(self) -> int:
        return 1

    async def openai(self, route: str, body: dict, raw_request=None) -> OpenAIReply:
        """Completions and chat: each choice is the weights' version name, in `steps` outputs;
        tokenize: one id per character; embeddings: not served (as for a generative model)."""
        type(self).requests.append((route, body))
        if route == "/v1/embeddings":
            raise BadRequest("this model does not support embeddings", code="unsupported_endpoint")
        if route == "/v1/tokenize":
            ids = self.tokenizer(body.get("prompt") or "")["input_ids"]
            return OpenAIReply(200, {"count": len(ids), "tokens": ids, "max_model_len": 256}, version=self.version)
        if route == "/v1/detokenize":
            return OpenAIReply(200, {"prompt": "".join(chr(48 + t) for t in body.get("tokens", []))},
                               version=self.version)
        chat = route == "/v1/chat/completions"
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}"
        n = body.get("n") or 1
        if body.get("stream"):
            return OpenAIReply(200, stream=self._stream(rid, chat, n), version=self.version)
        outs = [o async for o in self.generate([], {})]
        text = "".join(o.text for o in outs)
        choices = [{"index": i, "finish_reason": "length",
                    **({"message": {"role": "assistant", "content": text}} if chat else {"text": text})}
                   for i in range(n)]
        usage = {"prompt_tokens": 3, "completion_tokens": len(outs) * n, "total_tokens": 3 + len(outs) * n}
        return OpenAIReply(200, {"id": rid, "object": "chat.completion" if chat else "text_completion",
                                 "created": int(time.time()), "model": body.get("model"), "choices": choices,
                                 "system_fingerprint": self.version, "usage": usage}, version=self.version)

    async def _stream(self, rid: str, chat: bool, n: int) -> AsyncIterator[str]:
        async for o in self.generate([], {}):
            for i in range(n):
                choice = {"index": i, **({"delta": {"content": o.text}} if chat else {"text": o.text})}
                yield f"data: {json.dumps({'id': rid, 'choices': [choice], 'system_fingerprint': self.version})}\n\n"
        yield "data: [DONE]\n\n"

    async def generate(self, prompt_ids: list[int], sampling: Sampling,
                       final_only: bool = False) -> AsyncIterator[EngineOutput]:
        """`steps` outputs, each the weights' version name and one token (final_only is ignored)."""
        for _ in range(self.steps):
            await asyncio.sleep(STEP_S)
            yield EngineOutput(self.weights, [1], None)

    async def reload_weights(self, version: str, manifest: dict, path: str) -> None:
        self.calls.append(f"reload_weights {version}")
        self.weights = version
        self.version, self.manifest, self.path = version, manifest, path

    async def reset_prefix_cache(self) -> None:
        self.calls.append("reset_prefix_cache")

    async def run_canaries(self, match_tokens: int | None) -> CanaryResult:
        ok = self.weights == self.version and self.version not in self.bad
        return CanaryResult(ok, 1, [] if ok else [{"prompt": "p", "expected": [1], "got": [2]}])

    def shutdown(self) -> None:
        self.shut = True
        self.stopped.append(self.version)
