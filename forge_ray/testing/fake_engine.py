"""A serving engine that stands in for vLLM in the swap logic's unit tests (as Ray Serve LLM's
`MockVLLMEngine` does for `LLMServer`): no model, no processes, milliseconds per call.

    Engine = FakeEngine.fresh(bad={"v3"})        # a class of its own: its own bad set and logs
    replica = ModelReplica(ServeConfig(), registry, "r1", engine_cls=Engine)
    ...
    Engine.started, Engine.stopped               # versions started / shut down, in order

It "generates" the name of the version whose weights it holds, so a test sees which weights
answered; its canaries fail for the versions in `bad`, or when the weights are not the version it
was told it holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import ClassVar

from forge_ray.config.serve import ServeEngineConfig
from forge_ray.registry import CanaryResult
from forge_ray.serve.contracts import Sampling
from forge_ray.serve.engine_interface import EngineOutput, ServingEngine

START_S = 0.05      # an engine start takes a moment: requests overlap it in the surge tests
STEP_S = 0.01       # per generated output


class FakeTokenizer:
    """One token per character (ids below 50); no chat template of its own."""

    chat_template = None

    def __call__(self, text: str) -> dict:
        return {"input_ids": [ord(c) % 50 for c in text]}

    def __len__(self) -> int:
        return 50

    def apply_chat_template(self, messages, chat_template=None, add_generation_prompt=True, tokenize=False) -> str:
        lines = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return lines + ("assistant:" if add_generation_prompt else "")


class FakeEngine(ServingEngine):
    bad: ClassVar[set[str]] = set()         # versions whose canaries fail
    started: ClassVar[list[str]] = []       # every start(), in order
    stopped: ClassVar[list[str]] = []       # every shutdown(), the version held then

    @classmethod
    def fresh(cls, bad: Iterable[str] = ()) -> type[FakeEngine]:
        """A subclass with its own `bad`, `started` and `stopped`: tests share no state."""
        return type(cls.__name__, (cls,), {"bad": set(bad), "started": [], "stopped": []})

    def __init__(self, version: str, manifest: dict, path: str):
        self.version, self.manifest, self.path = version, manifest, path
        self.weights = version          # what it would generate with
        self.calls: list[str] = []      # reload_weights / reset_prefix_cache, in order
        self.shut = False

    @classmethod
    async def start(cls, version: str, manifest: dict, path: str, cfg: ServeEngineConfig) -> FakeEngine:
        cls.started.append(version)
        await asyncio.sleep(START_S)
        return cls(version, manifest, path)

    @property
    def tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()

    async def generate(self, prompt_ids: list[int], sampling: Sampling,
                       final_only: bool = False) -> AsyncIterator[EngineOutput]:
        """Three outputs, each the weights' version name and one token (final_only is ignored)."""
        for _ in range(3):
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
