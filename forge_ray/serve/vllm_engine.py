"""One vLLM async engine loaded with one registry version: start, generate, reload, check, stop."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import fsspec

from forge_ray.config.serve import ServeEngineConfig
from forge_ray.registry import CanaryResult, Registry, check_canaries
from forge_ray.registry.checksums import verify_checksums

log = logging.getLogger(__name__)

DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")


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


def structure(manifest: dict) -> dict[str, str]:
    """Checksums of everything but the weights: equal structure means same config and tokenizer."""
    return {k: v for k, v in manifest["files"].items() if not k.endswith(WEIGHT_SUFFIXES)}


def in_place_ok(old: dict, new: dict, cfg: ServeEngineConfig) -> bool:
    """In-place reload only for a proven architecture whose config and tokenizer did not change."""
    return (old["architecture"] == new["architecture"] and new["architecture"] in cfg.in_place_architectures
            and structure(old) == structure(new))


def local_dir(registry: Registry, version: str, cache_root: str | None = None) -> str:
    """A local folder with the version, checksums verified (downloaded when storage is remote)."""
    registry.verify(version)
    fs = registry.storage.fs
    if "file" in fs.protocol or "local" in fs.protocol:
        return registry.version_path(version)
    cache_root = cache_root or os.path.expanduser("~/.cache/forge_ray/registry")
    dest = os.path.join(cache_root, registry.model, version)
    if not os.path.exists(os.path.join(dest, "_COMPLETE")):
        fs.get(registry.version_path(version).rstrip("/") + "/", dest, recursive=True)
    verify_checksums(fsspec.filesystem("file"), dest, registry.manifest(version)["files"])
    return dest


@dataclass
class LoadedVersion:
    """An engine plus what it was loaded with; `inflight` counts requests using it."""

    version: str
    manifest: dict
    path: str
    engine: object          # vllm AsyncLLM
    tokenizer: object
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

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
    def architecture(self) -> str:
        return self.manifest["architecture"]


async def start_engine(version: str, manifest: dict, path: str, cfg: ServeEngineConfig) -> LoadedVersion:
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
    loaded = LoadedVersion(version, manifest, path, engine, tokenizer)
    loaded.idle.set()
    return loaded


async def stream(engine, prompt_ids: list[int], sampling: dict, final_only: bool = False) -> AsyncIterator:
    """vLLM RequestOutputs for one request: deltas, or (final_only) one output with everything."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    kind = RequestOutputKind.FINAL_ONLY if final_only else RequestOutputKind.DELTA
    params = SamplingParams(**sampling, output_kind=kind)
    async for out in engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), params, uuid.uuid4().hex):
        yield out


async def greedy(engine, prompt_ids: list[int], n: int) -> list[int]:
    tokens: list[int] = []
    sampling = {"temperature": 0.0, "max_tokens": n, "ignore_eos": True}
    async for out in stream(engine, prompt_ids, sampling, final_only=True):
        tokens += out.outputs[0].token_ids
    return tokens


async def run_canaries(loaded: LoadedVersion, match_tokens: int | None) -> CanaryResult:
    """Greedy tokens of the engine on the version's canaries, compared with those recorded at export."""
    canaries = loaded.manifest.get("canaries", [])
    outputs = await asyncio.gather(*[
        greedy(loaded.engine, c["prompt_token_ids"], len(c["greedy_token_ids"])) for c in canaries])
    return check_canaries(canaries, list(outputs), match_tokens)


async def reload_in_place(loaded: LoadedVersion, version: str, manifest: dict, path: str) -> None:
    """Drained engine only: load new weights into the running engine, then drop cached KV."""
    await loaded.engine.collective_rpc("reload_weights", kwargs={"weights_path": path})
    await loaded.engine.reset_prefix_cache()
    loaded.version, loaded.manifest, loaded.path = version, manifest, path


def shutdown(loaded: LoadedVersion) -> None:
    try:
        loaded.engine.shutdown()
    except Exception:  # noqa: BLE001 - a dying engine must not take the replica with it
        log.exception("engine shutdown of %s failed", loaded.version)
