"""Serve benchmark: hot swap under load against a plain redeploy; endpoint throughput against bare vLLM.

    .venv/bin/python benchmarks/serve.py [--quick] [--throughput-only]

1. Swap under constant load (8 clients in a loop, 1 replica, dense Llama model, so the in-place
   path): failed requests, seconds from `promote` to the first response from the new version, and
   p50 / p99 latency during the swap window against steady state. The baseline, in the same run
   and on the same app: a plain Serve redeploy (`serve.run` with changed deployment arguments,
   i.e. Serve's rolling update, which replaces the replica) to the next version, same figures.
2. Throughput at 16 concurrent requests (64 tokens each, greedy): tokens/s through the endpoint
   (HTTP from a keep-alive aiohttp client, auth, Serve routing, one replica) against the bare vLLM
   AsyncLLM engine on the same model in this process, alternated over 8 rounds (3 with --quick;
   medians, since the machine is shared). Each round measures two ways:
   - sustained (the headline figure): 16 clients, each sending its next request as soon as its
     last is answered, 8 requests each (4 with --quick), as vLLM's benchmark_serving does with
     --max-concurrency 16;
   - burst: a single wave of 16 requests, whose time is mostly that of the last one admitted.
   And bare vLLM against `transformers` generate (batch of 16). Every engine runs with one
   OpenMP thread, as a replica with `num_cpus: 1` does.

Writes benchmarks/results/serve.json (not with --throughput-only); the last line is the sustained
endpoint / bare-vLLM throughput ratio.
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
from forge_ray.serve import start_serving, stop_serving, wait_for_version
from forge_ray.testing.loadgen import Load, percentile
from forge_ray.testing.tiny_versions import publish_tiny

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


async def closed_loop(one, concurrency: int, total: int) -> float:
    """tokens/s of `total` requests sent by `concurrency` clients, each sending its next request as
    soon as its last one is answered (vLLM's benchmark_serving with --max-concurrency does the same).
    total == concurrency is a single burst: its figure is mostly the tail of the slowest admission."""
    left = [total]

    async def client() -> int:
        tokens = 0
        while left[0] > 0:
            left[0] -= 1
            tokens += await one()
        return tokens

    t = time.perf_counter()
    done = sum(await asyncio.gather(*[client() for _ in range(concurrency)]))
    return done / (time.perf_counter() - t)


def endpoint_throughput(base_url: str, n: int, tokens: int, per_client: int) -> tuple[float, float]:
    """(burst, sustained) tokens/s at n concurrent completions over one keep-alive connection pool
    (aiohttp), as an HTTP client library does (the openai SDK's httpx pool too): a new TCP
    connection and a Python thread per request measured the load generator as much as the endpoint."""
    import aiohttp

    body = {"model": "bench", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0}

    async def run() -> tuple[float, float]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n),
                                         headers={"Authorization": f"Bearer {KEY}"}) as session:
            async def one() -> int:
                async with session.post(base_url.rstrip("/") + "/completions", json=body) as resp:
                    out = await resp.json()
                    assert resp.status == 200, out
                    return out["usage"]["completion_tokens"]

            await closed_loop(one, n, n)                  # warm up (and open the connections)
            return await closed_loop(one, n, n), await closed_loop(one, n, n * per_client)

    return asyncio.run(run())


class BareEngine:
    """The same VLLMEngine (vLLM AsyncLLM) the replicas run, with nothing in front of it (no HTTP, auth or Serve),
    in this process, on an event loop in a thread."""

    def __init__(self, path: str):
        import threading

        from forge_ray.config.serve import ServeEngineConfig
        from forge_ray.serve.vllm_engine import VLLMEngine

        # A Serve replica with num_cpus=1 runs with OMP_NUM_THREADS=1 (Ray sets it), and so does its
        # engine; the bare engine gets the same, else it compares different thread counts.
        os.environ["OMP_NUM_THREADS"] = "1"
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.engine = self._run(VLLMEngine.start("v", {"architecture": "", "files": {}}, path, ServeEngineConfig()))

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def throughput(self, n: int, tokens: int, per_client: int) -> tuple[float, float]:
        """(burst, sustained) tokens/s, as endpoint_throughput measures them."""
        ids = list(self.engine.tokenizer(PROMPT)["input_ids"])
        sampling = {"max_tokens": tokens, "temperature": 0.0}

        async def one():
            outs = [o async for o in self.engine.generate(ids, sampling, final_only=True)]
            return sum(len(o.token_ids) for o in outs)

        self._run(closed_loop(one, n, n))                 # warm up
        return self._run(closed_loop(one, n, n)), self._run(closed_loop(one, n, n * per_client))

    def close(self) -> None:
        self.engine.shutdown()
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
    parser.add_argument("--throughput-only", action="store_true", help="no swap figures; writes no result")
    args = parser.parse_args()
    tokens = 32 if args.quick else 64
    import ray

    from forge_ray.cluster import _bind_loopback, job_env_vars

    swap = redeploy = None
    with tempfile.TemporaryDirectory() as root:
        for v, seed in [("v1", 1), ("v2", 2), ("v3", 3)]:
            publish_tiny(root, "bench", v, "dense", seed, layers=4, hidden=512)
        Path(root, "keys").write_text(KEY + "\n")
        Registry(root, "bench").promote("v1")
        # A cluster of its own (address="local"): plain ray.init() joins any cluster another
        # process started on this machine, and the figures must not share one.
        _bind_loopback()
        ray.init(address="local", num_cpus=8, include_dashboard=False, runtime_env={"env_vars": job_env_vars()})
        if not args.throughput_only:
            swap, redeploy = bench_swaps(root, args.quick)
            print(f"hot swap (in place) : {swap}")
            print(f"plain redeploy      : {redeploy}")
        else:
            Registry(root, "bench").promote("v3")

        ep = start_serving(make_config(root, 0.5))       # serves v3, the promoted version now
        path = Registry(root, "bench").version_path("v3")
        bare_engine = BareEngine(path)
        sides = {"endpoint": lambda *a: endpoint_throughput(ep.base_url, *a), "bare_vllm": bare_engine.throughput}
        # Alternate the sides, several rounds, medians: the machine's load changes under us.
        per_client = 4 if args.quick else 8
        rounds = [{side: f(16, tokens, per_client) for side, f in sides.items()}
                  for _ in range(3 if args.quick else 8)]
        bare_engine.close()
        stop_serving(ep)
        # rounds[i][side] = (burst tokens/s, sustained tokens/s)
        med = {mode: {side: statistics.median(r[side][i] for r in rounds) for side in sides}
               for i, mode in enumerate(("burst", "sustained"))}
        for i, mode in enumerate(med):
            print(f"{mode} rounds {tuple(sides)} tokens/s: {[tuple(round(r[s][i]) for s in sides) for r in rounds]}")
        hf = transformers_throughput(path, 16, tokens)
        ray.shutdown()
    sus, bur = med["sustained"], med["burst"]
    ratio = sus["endpoint"] / sus["bare_vllm"]
    result = {
        "model": "random-init LlamaForCausalLM, 4 layers, hidden 512, vocab 512 (float32, CPU)",
        "replicas": 1, "clients_during_swap": 8, "concurrency_throughput": 16, "tokens_per_request": tokens,
        "requests_per_client_sustained": per_client,
        "quick": args.quick, "swap_in_place": swap, "plain_redeploy": redeploy,
        "tokens_per_s": {**{k: round(v, 1) for k, v in sus.items()}, "transformers": round(hf, 1)},
        "tokens_per_s_burst": {k: round(v, 1) for k, v in bur.items()},
        "throughput_rounds": [{k: [round(x, 1) for x in v] for k, v in r.items()} for r in rounds],
        "ratio_endpoint_over_bare_vllm": round(ratio, 3),
        "ratio_endpoint_over_bare_vllm_burst": round(bur["endpoint"] / bur["bare_vllm"], 3),
        "ratio_vllm_over_transformers": round(sus["bare_vllm"] / hf, 3),
    }
    if not args.throughput_only:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for k in ("tokens_per_s", "tokens_per_s_burst"):
        print(k, json.dumps(result[k]))
    print({k: v for k, v in result.items() if k.startswith("ratio")})
    print(f"endpoint / bare vLLM throughput ratio (16 concurrent, sustained): {ratio:.3f}")


if __name__ == "__main__":
    main()
