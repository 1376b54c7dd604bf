"""The engines KPI suites and the memorisation check run on: vLLM offline, or a served endpoint.

    engine = OfflineEngine(model_dir, config.eval.engine)       # vllm.LLM in a Ray actor
    engine = EndpointEngine(url, model_name, tokenizer_dir, ...) # OpenAI-compatible /completions
    engine.generate([prompt, ...], max_tokens=[32, ...], stop=[[], ...])  -> [answer, ...]
                    # a prompt is a string, or chat messages rendered with the version's template
    engine.loglikelihood([(context, continuation), ...])               -> [sum log p, ...]
    engine.close()

Both take token ids built here with the version's own tokenizer, so a long prompt is cut from
the left to fit the context and the continuation's tokens are known exactly (lm-eval does the
same). Decoding is greedy: an evaluation must give the same answer twice.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor

from forge_ray.eval.model_files import EvalError, local_model_dir

log = logging.getLogger(__name__)


class EvalEngine(ABC):
    """Greedy generation and continuation log-likelihoods over token ids."""

    def __init__(self, tokenizer_dir: str, max_model_len: int):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.max_model_len = max_model_len

    def _prompt_ids(self, prompt: str | list[dict], room: int) -> list[int]:
        """A completion prompt's ids, or a chat's: its messages rendered with the version's chat template
        (the tokenizer's own, else forge's default, as SFT trained it) and the generation prompt; the
        rendering holds its special tokens, so none are added."""
        if isinstance(prompt, str):
            ids = list(self.tokenizer(prompt)["input_ids"])
        else:
            from forge_ray.prepare.chat import prompt_ids, template_of

            ids = list(prompt_ids(prompt, self.tokenizer, template_of(self.tokenizer)[0]))
        keep = max(1, self.max_model_len - room)
        return ids[-keep:]

    def generate(self, prompts: list[str | list[dict]], max_tokens: list[int], stop: list[list[str]]) -> list[str]:
        """Greedy answers, one per prompt: a string, or chat messages (a prompt is left-truncated to
        leave room for its answer)."""
        if not prompts:
            return []
        ids = [self._prompt_ids(p, m) for p, m in zip(prompts, max_tokens, strict=True)]
        return self._generate_ids(ids, max_tokens, stop)

    def loglikelihood(self, requests: list[tuple[str | list[dict], str]]) -> list[float]:
        """Sum of log p(continuation tokens | context) per (context, continuation); a context may be
        chat messages (the continuation then follows the generation prompt)."""
        if not requests:
            return []
        batch, starts = [], []
        for context, continuation in requests:
            cont = list(self.tokenizer(continuation, add_special_tokens=False)["input_ids"])
            if not cont:
                raise EvalError(f"continuation {continuation!r} tokenizes to nothing")
            ctx = self._prompt_ids(context, len(cont) + 1)
            batch.append(ctx + cont)
            starts.append(len(ctx))
        return self._prompt_logprob_sums(batch, starts)

    @abstractmethod
    def _generate_ids(self, prompts: list[list[int]], max_tokens: list[int], stop: list[list[str]]) -> list[str]: ...

    @abstractmethod
    def _prompt_logprob_sums(self, prompts: list[list[int]], starts: list[int]) -> list[float]: ...

    def close(self) -> None:  # noqa: B027 - optional hook: an endpoint holds nothing to release
        """Release the engine (a no-op for an endpoint)."""


class _VLLMWorker:
    """Holds one `vllm.LLM` inside a Ray actor (the engine's memory leaves with the actor)."""

    def __init__(self, model_url: str, max_model_len: int, dtype: str):
        from vllm import LLM

        self.error = None
        self._files = local_model_dir(model_url)
        try:
            path = self._files.__enter__()
            # "uni" executor and no engine-core process (VLLM_ENABLE_V1_MULTIPROCESSING=0 in the
            # actor's env): one process instead of three, ~30 s less start-up on a small CPU node.
            self.llm = LLM(model=path, max_model_len=max_model_len, dtype=dtype, enforce_eager=True,
                           seed=0, distributed_executor_backend="uni")
        except Exception as e:  # noqa: BLE001 - any failure to load means the version is unusable
            self.error = f"vLLM could not load the version: {type(e).__name__}: {e}"

    def ready(self) -> str | None:
        return self.error

    def release(self) -> None:
        self._files.__exit__(None, None, None)

    def generate(self, prompts: list[list[int]], max_tokens: list[int], stop: list[list[str]]) -> list[str]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(temperature=0.0, max_tokens=m, stop=s or None)
                  for m, s in zip(max_tokens, stop, strict=True)]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return [o.outputs[0].text for o in outs]

    def prompt_logprob_sums(self, prompts: list[list[int]], starts: list[int]) -> list[float]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        sums = []
        for out, ids, start in zip(outs, prompts, starts, strict=True):
            # prompt_logprobs[i] maps token id -> Logprob for position i (None at position 0);
            # with prompt_logprobs=0 it holds exactly the prompt's own token.
            sums.append(sum(out.prompt_logprobs[i][ids[i]].logprob for i in range(start, len(ids))))
        return sums


class OfflineEngine(EvalEngine):
    """vLLM's offline engine on the version's folder, in a Ray actor on the cluster."""

    def __init__(self, model_url: str, tokenizer_dir: str, config):
        import ray

        super().__init__(tokenizer_dir, config.max_model_len)
        env = {"VLLM_CPU_KVCACHE_SPACE": f"{config.kv_cache_gib:g}", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        actor = ray.remote(num_cpus=config.cpus, num_gpus=config.gpus)(_VLLMWorker)
        self._actor = actor.options(runtime_env={"env_vars": env}).remote(model_url, config.max_model_len, config.dtype)
        error = self._call("ready")
        if error:
            self.close()
            raise EvalError(error)

    def _call(self, method: str, *args):
        import ray

        try:
            return ray.get(getattr(self._actor, method).remote(*args))
        except ray.exceptions.RayActorError as e:
            raise EvalError(f"vLLM could not load or run the version: {_root_cause(e)}") from None
        except ray.exceptions.RayTaskError as e:  # e.g. a request vLLM refuses
            raise EvalError(f"vLLM failed in {method}: {type(e.cause).__name__}: {e.cause}") from None

    def _generate_ids(self, prompts, max_tokens, stop):
        return self._call("generate", prompts, max_tokens, stop)

    def _prompt_logprob_sums(self, prompts, starts):
        return self._call("prompt_logprob_sums", prompts, starts)

    def close(self) -> None:
        import ray

        try:
            ray.get(self._actor.release.remote())
        except ray.exceptions.RayActorError:
            pass
        ray.kill(self._actor)


def _root_cause(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    lines = [line.strip() for line in text if line.strip() and not line.startswith(" ")]
    return lines[-1] if lines else type(err).__name__


class EndpointEngine(EvalEngine):
    """An OpenAI-compatible completions endpoint (the served model, or `vllm serve`)."""

    def __init__(self, base_url: str, model: str, tokenizer_dir: str, max_model_len: int,
                 timeout_s: float = 120.0, concurrency: int = 4):
        super().__init__(tokenizer_dir, max_model_len)
        self.url = base_url.rstrip("/") + "/completions"
        self.model = model
        self.timeout_s = timeout_s
        self.concurrency = concurrency

    def _post(self, body: dict) -> dict:
        req = urllib.request.Request(self.url, data=json.dumps({"model": self.model, **body}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise EvalError(f"{self.url}: HTTP {e.code}: {e.read()[:300].decode(errors='replace')}") from None
        except (urllib.error.URLError, TimeoutError) as e:
            raise EvalError(f"{self.url}: {e}") from None

    def _map(self, fn, items):
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(fn, items))

    def _generate_ids(self, prompts, max_tokens, stop):
        def one(item):
            ids, m, s = item
            body = {"prompt": ids, "max_tokens": m, "temperature": 0.0}
            if s:
                body["stop"] = s
            return self._post(body)["choices"][0]["text"]

        return self._map(one, list(zip(prompts, max_tokens, stop, strict=True)))

    def _prompt_logprob_sums(self, prompts, starts):
        def one(item):
            ids, start = item
            out = self._post({"prompt": ids, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 0})
            logprobs = out["choices"][0]["logprobs"]["token_logprobs"]
            return float(sum(logprobs[start : len(ids)]))

        return self._map(one, list(zip(prompts, starts, strict=True)))
