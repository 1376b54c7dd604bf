"""The serving engine that serves: vLLM's AsyncLLM loaded with one registry version (ServingEngine)."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator

from forge_ray.config.serve import ServeEngineConfig
from forge_ray.registry import CanaryResult, check_canaries
from forge_ray.serve.contracts import Sampling
from forge_ray.serve.engine_interface import EngineOutput, ServingEngine

log = logging.getLogger(__name__)


def engine_env() -> dict[str, str]:
    """Environment the engine processes need (they inherit the replica's). Several engines share the
    cores (replicas, surge), so OpenMP threads are not pinned.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 lets the CPU platform keep the "uni" executor: the model runs
    in the engine-core process itself. Otherwise vLLM CPU forces its multiprocess executor, whose
    worker process and engine core busy-poll each other over shared memory: a whole second core
    per engine, spent waiting (measured: ~2 s of CPU per 2.5 s of generation). AsyncLLM keeps its
    engine core in a separate process either way."""
    return {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "TOKENIZERS_PARALLELISM": "false",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


class VLLMEngine(ServingEngine):
    """A vllm.v1 AsyncLLM and the version's tokenizer (engine_interface.ServingEngine says what each
    method does)."""

    def __init__(self, version: str, manifest: dict, path: str, engine, tokenizer):
        self.version, self.manifest, self.path = version, manifest, path
        self.engine = engine            # vllm AsyncLLM
        self._tokenizer = tokenizer

    @classmethod
    async def start(cls, version: str, manifest: dict, path: str, cfg: ServeEngineConfig) -> VLLMEngine:
        """Start an AsyncLLM on `path` (in a thread: the engine core start blocks for seconds)."""
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        os.environ.update(engine_env())
        # The legacy VLLM_CPU_KVCACHE_SPACE (whole GiB) would override kv_cache_memory_bytes on CPU.
        os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
        args = AsyncEngineArgs(model=path, tokenizer=path, max_model_len=cfg.max_model_len, dtype=cfg.dtype,
                               max_num_seqs=cfg.max_num_seqs, enforce_eager=cfg.enforce_eager, seed=0,
                               kv_cache_memory_bytes=int(cfg.kv_cache_gib * 2**30), disable_log_stats=True,
                               distributed_executor_backend="uni")
        engine = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
        tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, path)
        return cls(version, manifest, path, engine, tokenizer)

    @property
    def tokenizer(self):
        return self._tokenizer

    async def generate(self, prompt_ids: list[int], sampling: Sampling,
                       final_only: bool = False) -> AsyncIterator[EngineOutput]:
        """vLLM's RequestOutputs for one request: DELTA outputs, or (final_only) one FINAL_ONLY output."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        kind = RequestOutputKind.FINAL_ONLY if final_only else RequestOutputKind.DELTA
        params = SamplingParams(**sampling, output_kind=kind)
        async for out in self.engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), params, uuid.uuid4().hex):
            o = out.outputs[0]
            yield EngineOutput(o.text, list(o.token_ids), o.finish_reason)

    async def _greedy(self, prompt_ids: list[int], n: int) -> list[int]:
        tokens: list[int] = []
        async for out in self.generate(prompt_ids, {"temperature": 0.0, "max_tokens": n, "ignore_eos": True},
                                       final_only=True):
            tokens += out.token_ids
        return tokens

    async def reload_weights(self, version: str, manifest: dict, path: str) -> None:
        await self.engine.collective_rpc("reload_weights", kwargs={"weights_path": path})
        self.version, self.manifest, self.path = version, manifest, path

    async def reset_prefix_cache(self) -> None:
        await self.engine.reset_prefix_cache()

    async def run_canaries(self, match_tokens: int | None) -> CanaryResult:
        canaries = self.manifest.get("canaries", [])
        outputs = await asyncio.gather(*[
            self._greedy(c["prompt_token_ids"], len(c["greedy_token_ids"])) for c in canaries])
        return check_canaries(canaries, list(outputs), match_tokens)

    @property
    def errored(self) -> bool:
        return bool(getattr(self.engine, "errored", False))

    def shutdown(self) -> None:
        try:
            self.engine.shutdown()
        except Exception:  # noqa: BLE001 - a dying engine must not take the replica with it
            log.exception("engine shutdown of %s failed", self.version)
