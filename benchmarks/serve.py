"""Serve benchmark: the forge endpoint against vLLM's own OpenAI server, both loaded by vLLM's own
benchmark client, and a hot swap under that load.

    .venv/bin/python benchmarks/serve.py [--quick]

1. Throughput: `vllm bench serve` (random dataset, 64 input / 64 output tokens, ignore_eos,
   16 concurrent, closed loop) against the forge endpoint (HAProxy -> ModelServer replica ->
   vLLM's serving classes -> AsyncLLM, with auth, limits, the swap gate, metrics) and against
   `python -m vllm.entrypoints.openai.api_server` on the same vLLM, model, engine settings
   (float32, max_model_len 256, 16 sequences, 1 GiB KV, eager, uni executor, one OpenMP thread:
   what a `num_cpus: 1` replica gets) and API key. The sides alternate, 6 rounds (2 with --quick);
   `ratio_vs_vllm_server` is the median forge output tokens/s over the median vLLM server's.
2. lm-evaluation-harness, a loglikelihood multiple-choice task on a local dataset
   (forge_ray.testing.loadgen.write_mc_task), against both servers: accuracy and every per-choice
   log-likelihood compared.
3. Swap under load: `vllm bench serve` against the endpoint while v2 is promoted (in place):
   `failed_requests` must be 0.

Writes benchmarks/results/serve.json (full runs only); the last line is ratio_vs_vllm_server.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import forge_ray  # noqa: F401  (offline environment)
from forge_ray.config import validate_config
from forge_ray.registry import Registry
from forge_ray.serve import start_serving, status, stop_serving, wait_for_version
from forge_ray.serve.vllm_openai import DEFAULT_CHAT_TEMPLATE
from forge_ray.testing.loadgen import lm_eval_scores, vllm_bench_serve, write_mc_task
from forge_ray.testing.tiny_versions import publish_tiny

KEY = "bench-key"
RESULTS = Path(__file__).parent / "results" / "serve.json"
FORGE_PORT, VLLM_PORT = 8011, 8012
ENGINE = {"max_model_len": 256, "kv_cache_gib": 1.0, "max_num_seqs": 16, "dtype": "float32"}


def make_config(root: str):
    return validate_config({
        "project": {"name": "bench", "storage_root": root},
        "data": {"sources": [{"name": "docs", "uri": "/unused", "format": "jsonl", "license": "MIT",
                              "sensitivity": "public"}]},
        "serve": {"model": "bench", "app_name": "bench", "port": FORGE_PORT, "replicas": {"num_replicas": 1},
                  "auth": {"api_keys_file": os.path.join(root, "keys")}, "engine": ENGINE,
                  "swap": {"watch_interval_s": 0.5}},
    }, "bench")


def start_vllm_server(path: str, log_path: str) -> subprocess.Popen:
    """vLLM's own OpenAI server with the engine settings a forge replica uses (serve/vllm_engine.py)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", path, "--tokenizer", path,
           "--served-model-name", "bench", "--host", "127.0.0.1", "--port", str(VLLM_PORT), "--api-key", KEY,
           "--max-model-len", str(ENGINE["max_model_len"]), "--max-num-seqs", str(ENGINE["max_num_seqs"]),
           "--dtype", ENGINE["dtype"], "--kv-cache-memory-bytes", str(int(ENGINE["kv_cache_gib"] * 2**30)),
           "--enforce-eager", "--seed", "0", "--distributed-executor-backend", "uni", "--disable-log-stats",
           "--chat-template", DEFAULT_CHAT_TEMPLATE]
    log = open(log_path, "w")  # noqa: SIM115 - the server writes it until it stops
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 600.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM's server exited with {proc.returncode}")
        try:
            req = urllib.request.Request(url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
            with urllib.request.urlopen(req, timeout=5):
                return time.monotonic() - t0
        except OSError:
            time.sleep(2)
    raise TimeoutError(f"vLLM's server not ready after {timeout_s:.0f}s")


def bench(url: str, path: str, num_prompts: int, concurrency: int = 16) -> dict:
    r = vllm_bench_serve(url, "bench", path, KEY, num_prompts=num_prompts, max_concurrency=concurrency,
                         input_len=64, output_len=64)
    return {"output_tokens_per_s": round(r["output_throughput"], 1), "completed": r["completed"],
            "failed": r["failed"], "median_ttft_ms": round(r["median_ttft_ms"], 1),
            "median_tpot_ms": round(r["median_tpot_ms"], 2)}


def swap_under_load(root: str, ep, url: str, path: str, num_prompts: int) -> dict:
    """`vllm bench serve` against the endpoint while v2 is promoted: no request may fail."""
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(bench(url, path, num_prompts, concurrency=8)))
    worker.start()
    time.sleep(3)
    t = time.monotonic()
    Registry(root, "bench").promote("v2")
    st = wait_for_version(ep, "v2", timeout_s=300)
    swapped_s = time.monotonic() - t
    worker.join()
    swaps = [e["detail"] for e in st["events"] if e["event"] == "swapped" and e["version"] == "v2"]
    return {"failed_requests": out["failed"], "requests": out["completed"] + out["failed"],
            "promote_to_all_replicas_s": round(swapped_s, 2), "swaps": swaps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 32 prompts; writes no result")
    args = parser.parse_args()
    rounds, prompts = (2, 32) if args.quick else (6, 96)
    from forge_ray.cluster import connect

    with tempfile.TemporaryDirectory() as root:
        for v, seed in [("v1", 1), ("v2", 2)]:
            publish_tiny(root, "bench", v, "dense", seed, layers=4, hidden=512)
        Path(root, "keys").write_text(KEY + "\n")
        reg = Registry(root, "bench")
        reg.promote("v1")
        path = reg.version_path("v1")
        config = make_config(root)
        connect(num_cpus=8, serve_cfg=config.serve)
        ep = start_serving(config)
        forge_url = ep.base_url.removesuffix("/v1")
        server = start_vllm_server(path, os.path.join(root, "vllm_server.log"))
        try:
            started_s = wait_ready(f"http://127.0.0.1:{VLLM_PORT}", server)
            sides = {"forge": forge_url, "vllm_server": f"http://127.0.0.1:{VLLM_PORT}"}
            for url in sides.values():
                bench(url, path, 16)                      # warm up
            runs: list[dict] = []
            for i in range(rounds):                       # alternate which side goes first
                order = list(sides) if i % 2 == 0 else list(sides)[::-1]
                runs.append({side: bench(sides[side], path, prompts) for side in order})
                print(f"round {i + 1}: " + ", ".join(f"{s} {runs[-1][s]['output_tokens_per_s']}" for s in sides))
            task_dir = os.path.join(root, "lm_eval_task")
            write_mc_task(task_dir)
            lm = {side: lm_eval_scores(url + "/v1/completions", KEY, "bench", path, task_dir)
                  for side, url in sides.items()}
        finally:
            server.terminate()
            server.wait(60)
        swap = swap_under_load(root, ep, forge_url, path, 4 * prompts)
        events = status(ep)["events"]
        stop_serving(ep)

    med = {s: statistics.median(r[s]["output_tokens_per_s"] for r in runs) for s in sides}
    pairs = zip(lm["forge"]["loglikelihoods"], lm["vllm_server"]["loglikelihoods"], strict=True)
    diff = max(abs(a - b) for da, db in pairs for a, b in zip(da, db, strict=True))
    result = {
        "model": "random-init LlamaForCausalLM, 4 layers, hidden 512, vocab 512 (float32, CPU, 1 replica)",
        "load": f"vllm bench serve, random dataset, 64 in / 64 out tokens, ignore_eos, 16 concurrent, "
                f"{prompts} prompts per run",
        "quick": args.quick, "vllm_server_start_s": round(started_s, 1),
        "output_tokens_per_s": {s: round(v, 1) for s, v in med.items()},
        "ratio_vs_vllm_server": round(med["forge"] / med["vllm_server"], 3),
        "rounds": runs,
        "lm_eval": {"task": "forge_mc (24 local multiple-choice items, loglikelihood)",
                    **{s: {"acc": v["acc"], "acc_norm": v["acc_norm"]} for s, v in lm.items()},
                    "equal_scores": lm["forge"]["acc"] == lm["vllm_server"]["acc"]
                    and lm["forge"]["acc_norm"] == lm["vllm_server"]["acc_norm"],
                    "max_abs_loglikelihood_diff": round(diff, 4)},
        "swap_under_load": swap,
        "failed_requests": sum(r[s]["failed"] for r in runs for s in sides),
        "watcher_events": [e["event"] for e in events],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))
    if not args.quick:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"ratio_vs_vllm_server (output tokens/s, median of {rounds} alternated rounds): "
          f"{result['ratio_vs_vllm_server']:.3f}")


if __name__ == "__main__":
    main()
