"""The serving engine that serves: vLLM's AsyncLLM loaded with one registry version (ServingEngine),
with vLLM's own OpenAI serving layer over it (serve/vllm_openai.py)."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import uuid
from collections.abc import AsyncIterator

from forge_ray.config.serve import ServeConfig
from forge_ray.registry import CanaryResult, check_canaries
from forge_ray.serve.contracts import OpenAIReply, Sampling
from forge_ray.serve.engine_interface import EngineOutput, ServingEngine
from forge_ray.serve.vllm_openai import VLLMOpenAI

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


def engine_args(path: str, cfg: ServeConfig, model_name: str, share: float = 1.0):
    """vLLM's AsyncEngineArgs for one engine. On CPU the KV cache is sized in bytes; on GPU by
    `gpu_memory_utilization` times `share` (a surge with two engines on one GPU gives each half)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    e = cfg.engine
    tp = e.tensor_parallel_size
    memory = ({"gpu_memory_utilization": e.gpu_memory_utilization * share} if cfg.replicas.num_gpus > 0
              else {"kv_cache_memory_bytes": int(e.kv_cache_gib * 2**30)})
    return AsyncEngineArgs(model=path, tokenizer=path, served_model_name=[model_name],
                           max_model_len=e.max_model_len, dtype=e.dtype, max_num_seqs=e.max_num_seqs,
                           enforce_eager=e.enforce_eager, seed=0, disable_log_stats=True,
                           tensor_parallel_size=tp, distributed_executor_backend="uni" if tp == 1 else "mp",
                           **memory)


class VLLMEngine(ServingEngine):
    """A vllm.v1 AsyncLLM, its tokenizer and vLLM's OpenAI handlers over it (engine_interface.ServingEngine
    says what each method does)."""

    def __init__(self, version: str, manifest: dict, path: str, engine, api: VLLMOpenAI):
        self.version, self.manifest, self.path = version, manifest, path
        self.engine = engine            # vllm AsyncLLM
        self.api = api

    @classmethod
    async def start(cls, version: str, manifest: dict, path: str, cfg: ServeConfig, model_name: str,
                    memory_share: float = 1.0) -> VLLMEngine:
        """Start an AsyncLLM on `path` (in a thread: the engine core start blocks for seconds)."""
        from vllm.v1.engine.async_llm import AsyncLLM

        os.environ.update(engine_env())
        # The legacy VLLM_CPU_KVCACHE_SPACE (whole GiB) would override kv_cache_memory_bytes on CPU.
        os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
        args = engine_args(path, cfg, model_name, memory_share)
        engine = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
        try:
            api = await VLLMOpenAI.build(engine, args, cfg, model_name, version)
        except BaseException:
            engine.shutdown()
            raise
        return cls(version, manifest, path, engine, api)

    @property
    def tokenizer(self):
        return self.engine.get_tokenizer()

    @functools.cached_property
    def max_token_chars(self) -> int:
        return max((len(t) for t in self.tokenizer.get_vocab()), default=1)

    async def openai(self, route: str, body: dict, raw_request=None) -> OpenAIReply:
        return await self.api.call(route, body, raw_request)

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
        self.api.set_version(version)

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
