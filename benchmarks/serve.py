"""Serve benchmark: hot swap under load against a plain redeploy; endpoint throughput against bare vLLM.

    .venv/bin/python benchmarks/serve.py [--quick]

1. Swap under constant load (8 clients in a loop, 1 replica, dense Llama model, so the in-place
   path): failed requests, seconds from `promote` to the first response from the new version, and
   p50 / p99 latency during the swap window against steady state. The baseline, in the same run
   and on the same app: a plain Serve redeploy (`serve.run` with changed deployment arguments,
   i.e. Serve's rolling update, which replaces the replica) to the next version, same figures.
2. Throughput at 16 concurrent requests (64 tokens each, greedy): tokens/s through the endpoint
   (HTTP from a keep-alive aiohttp client, auth, Serve routing, one replica) against the bare vLLM
   AsyncLLM engine on the same model in this process, alternated over 8 rounds (3 with --quick;
   medians, since the machine is shared);
   and bare vLLM against `transformers` generate (batch of 16). Every engine runs with one
   OpenMP thread, as a replica with `num_cpus: 1` does.

Writes benchmarks/results/serve.json; the last line is the endpoint / bare-vLLM throughput ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import forge_ray  # noqa: F401  (offline environment)
from forge_ray.config import validate_config
from forge_ray.registry import Registry
from forge_ray.registry.tiny import publish_tiny
from forge_ray.serve import start_serving, stop_serving, wait_for_version
from forge_ray.serve.loadgen import Load, percentile

KEY = "bench-key"
RESULTS = Path(__file__).parent / "results" / "serve.json"
PROMPT = "The quick brown fox jumps over the lazy dog and"


def make_config(root: str, watch_interval_s: float):
    return validate_config({
        "project": {"name": "bench", "storage_root": root},
        "data": {"sources": [{"name": "docs", "uri": "/unused", "format": "jsonl", "license": "MIT",
                              "sensitivity": "public"}]},
        "serve": {"model": "bench", "app_name": "bench", "port": 8011, "replicas": {"num_replicas": 1},
                  "auth": {"api_keys_file": os.path.join(root, "keys")},
                  "swap": {"watch_interval_s": watch_interval_s}},
    }, "bench")


def window_stats(load: Load, t_change: float, version: str, t_end: float, steady: tuple[float, float]) -> dict:
    first = load.first(version, since=t_change)
    during = load.latencies(t_change, t_end)
    base = load.latencies(*steady)
    return {"failed_requests": len([r for r in load.failures if r.start >= steady[0]]),
            "requests": len([r for r in load.results if r.start >= steady[0]]),
            "seconds_to_first_new_response": None if first is None else round(first - t_change, 3),
            "p50_during_s": round(percentile(during, 50), 4), "p99_during_s": round(percentile(during, 99), 4),
            "p50_steady_s": round(percentile(base, 50), 4), "p99_steady_s": round(percentile(base, 99), 4)}


def bench_swaps(root: str, quick: bool) -> tuple[dict, dict]:
    from ray import serve

    from forge_ray.serve.app import build_app

    reg = Registry(root, "bench")
    cfg = make_config(root, 0.5)
    ep = start_serving(cfg)
    steady_s, settle_s = (4, 2) if quick else (15, 5)
    with Load(ep.base_url, KEY, "bench", clients=8, max_tokens=16) as load:
        t0 = time.monotonic()
        time.sleep(steady_s)
        t_swap = time.monotonic()
        reg.promote("v2")
        wait_for_version(ep, "v2", timeout_s=300)
        time.sleep(settle_s)
        t_swap_end = time.monotonic()
        swap = window_stats(load, t_swap, "v2", t_swap_end, (t0, t_swap))
        # Baseline: Serve's own rolling update. The watcher of the new app is told to look only
        # once at start (huge interval): the replacement replicas load v3 because it is promoted.
        time.sleep(steady_s)
        t_redeploy = time.monotonic()
        reg.promote("v3")
        new_cfg = make_config(root, 1e6).serve
        serve.run(build_app(new_cfg, root, "bench"), name=new_cfg.app_name, route_prefix="/", blocking=False)
        deadline = time.monotonic() + 600
        while load.first("v3", since=t_redeploy) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(settle_s)
        redeploy = window_stats(load, t_redeploy, "v3", time.monotonic(), (t_swap_end, t_redeploy))
    swap["failed_requests"] = len([r for r in load.failures if t0 <= r.start < t_swap_end])
    redeploy["failed_requests"] = len([r for r in load.failures if r.start >= t_swap_end])
    stop_serving(ep)
    return swap, redeploy


def endpoint_throughput(base_url: str, n: int, tokens: int) -> float:
    """n concurrent completions over one keep-alive connection pool (aiohttp), as an HTTP client
    library does (the openai SDK's httpx pool too): a new TCP connection and a Python thread per
    request measured the load generator as much as the endpoint."""
    import aiohttp

    body = {"model": "bench", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0}

    async def run() -> float:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n),
                                         headers={"Authorization": f"Bearer {KEY}"}) as session:
            async def one() -> int:
                async with session.post(base_url.rstrip("/") + "/completions", json=body) as resp:
                    out = await resp.json()
                    assert resp.status == 200, out
                    return out["usage"]["completion_tokens"]

            await asyncio.gather(*[one() for _ in range(n)])         # warm up (and open the connections)
            t = time.perf_counter()
            total = sum(await asyncio.gather(*[one() for _ in range(n)]))
            return total / (time.perf_counter() - t)

    return asyncio.run(run())


class BareEngine:
    """The same vLLM AsyncLLM the replicas run, in this process, on an event loop in a thread."""

    def __init__(self, path: str):
        import threading

        from forge_ray.config.serve import EngineConfig
        from forge_ray.serve import engine as eng

        self.eng = eng
        # A Serve replica with num_cpus=1 runs with OMP_NUM_THREADS=1 (Ray sets it), and so does its
        # engine; the bare engine gets the same, else it compares different thread counts.
        os.environ["OMP_NUM_THREADS"] = "1"
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.loaded = self._run(eng.start_engine("v", {"architecture": "", "files": {}}, path, EngineConfig()))

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def throughput(self, n: int, tokens: int) -> float:
        ids = list(self.loaded.tokenizer(PROMPT)["input_ids"])
        sampling = {"max_tokens": tokens, "temperature": 0.0}

        async def one():
            return sum([len(o.outputs[0].token_ids) async for o in self.eng.stream(self.loaded.engine, ids, sampling, final_only=True)])

        async def batch():
            t = time.perf_counter()
            total = sum(await asyncio.gather(*[one() for _ in range(n)]))
            return total / (time.perf_counter() - t)

        self._run(batch())                                 # warm up
        return self._run(batch())

    def close(self) -> None:
        self.eng.shutdown(self.loaded)
        self.loop.call_soon_threadsafe(self.loop.stop)


def transformers_throughput(path: str, n: int, tokens: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)                   # as the engines (see BareEngine)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.tensor([tok(PROMPT)["input_ids"]] * n)
    kwargs = {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        model.generate(ids, **kwargs)
        t = time.perf_counter()
        out = model.generate(ids, **kwargs)
    return (out.shape[1] - ids.shape[1]) * n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows, fewer tokens")
    args = parser.parse_args()
    tokens = 32 if args.quick else 64
    import ray

    from forge_ray.cluster import _bind_loopback
    from forge_ray.offline import OFFLINE_ENV

    with tempfile.TemporaryDirectory() as root:
        for v, seed in [("v1", 1), ("v2", 2), ("v3", 3)]:
            publish_tiny(root, "bench", v, "dense", seed, layers=4, hidden=512)
        Path(root, "keys").write_text(KEY + "\n")
        Registry(root, "bench").promote("v1")
        # A cluster of its own (address="local"): plain ray.init() joins any cluster another
        # process started on this machine, and the figures must not share one.
        _bind_loopback()
        ray.init(address="local", num_cpus=8, include_dashboard=False, runtime_env={"env_vars": OFFLINE_ENV})
        swap, redeploy = bench_swaps(root, args.quick)
        print(f"hot swap (in place) : {swap}")
        print(f"plain redeploy      : {redeploy}")

        ep = start_serving(make_config(root, 0.5))       # serves v3, the promoted version now
        path = Registry(root, "bench").version_path("v3")
        bare_engine = BareEngine(path)
        # Alternate the two, several rounds, medians: the machine's load changes under us.
        rounds = [(endpoint_throughput(ep.base_url, 16, tokens), bare_engine.throughput(16, tokens))
                  for _ in range(3 if args.quick else 8)]
        bare_engine.close()
        stop_serving(ep)
        served = statistics.median(r[0] for r in rounds)
        bare = statistics.median(r[1] for r in rounds)
        print(f"rounds (endpoint, bare) tokens/s: {[(round(a), round(b)) for a, b in rounds]}")
        hf = transformers_throughput(path, 16, tokens)
        ray.shutdown()
    result = {
        "model": "random-init LlamaForCausalLM, 4 layers, hidden 512, vocab 512 (float32, CPU)",
        "replicas": 1, "clients_during_swap": 8, "concurrency_throughput": 16, "tokens_per_request": tokens,
        "quick": args.quick, "swap_in_place": swap, "plain_redeploy": redeploy,
        "tokens_per_s": {"endpoint": round(served, 1), "bare_vllm": round(bare, 1), "transformers": round(hf, 1)},
        "throughput_rounds": [[round(a, 1), round(b, 1)] for a, b in rounds],
        "ratio_endpoint_over_bare_vllm": round(served / bare, 3),
        "ratio_vllm_over_transformers": round(bare / hf, 3),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"tokens/s: endpoint {served:.1f}, bare vLLM {bare:.1f}, transformers {hf:.1f}; "
          f"vLLM / transformers {bare / hf:.2f}")
    print(f"endpoint / bare vLLM throughput ratio: {served / bare:.3f}")


if __name__ == "__main__":
    main()
