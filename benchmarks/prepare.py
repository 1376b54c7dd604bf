"""Prepare benchmark: pipeline throughput against plain tokenization, and peak memory at 1x vs 10x.

    .venv/bin/python benchmarks/prepare.py [--quick]

Corpus: the embedded corpora's generators at two sizes, 1x and 10x (tickets: 10x as many
generated tickets; code: 10x the bytes of standard-library sources, capped by what the
standard library holds; docs: the reference topics, repeated 10x at 10x, so exact dedup removes
the copies). Each size runs in a fresh process with a fresh local Ray cluster:

1. `prepare_dataset` (every stage on Ray Data: validate, PII, quality, dedup, tokenizer
   training, tokenize, pack, write) over the corpus; wall time from the call to its return.
2. Baseline, same run: one process that only tokenizes the same raw texts with the same
   (trained) tokenizer, `tokenizers` batch encoding (its own thread pool on), no Ray.
   Throughput = tokens of the raw texts / wall time, for both; the ratio is pipeline / baseline.
3. Peak memory: the summed RSS of the driver and every process under it (raylet, GCS, Ray
   workers), sampled every 0.2 s during the prepare call.

Writes benchmarks/results/prepare.json (not with --quick); the last line printed is the throughput ratio at 10x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "benchmarks" / "results" / "prepare.json"
BASE = {"tickets": 1200, "code_bytes": 1_000_000, "docs_copies": 1}  # the 1x corpus (~2.4 MB)


def write_corpus(root: Path, factor: int, base: dict) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from forge_ray.corpora.code import code_records
    from forge_ray.corpora.docs import docs_records
    from forge_ray.corpora.tickets import ticket_records

    tickets, _ = ticket_records(n=base["tickets"] * factor, seed=1)
    code = list(code_records(max_bytes=base["code_bytes"] * factor))
    docs = [dict(r, id=f"{r['id']}#{c}") for c in range(base["docs_copies"] * factor) for r in docs_records()]
    for name, recs in (("tickets", tickets), ("docs", docs)):
        (root / "corpora" / name).mkdir(parents=True, exist_ok=True)
        with open(root / "corpora" / name / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in recs)
    (root / "corpora" / "code").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(code), root / "corpora" / "code" / "code.parquet")
    texts = [r["text"] for r in docs + code + tickets]
    return {"records": len(texts), "mb": round(sum(len(t.encode()) for t in texts) / 1e6, 2)}


class PeakRss:
    """Samples the summed RSS of this process and all its descendants."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self.proc, self.interval, self.peak, self._stop = psutil.Process(), interval, 0, threading.Event()

    def _sample(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except Exception:  # noqa: BLE001 - a worker may exit between listing and reading
                pass
        return total

    def __enter__(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def baseline(tokenizer_json: str, corpus: str) -> dict:
    """Single process: read the raw texts, then only batch-encode them (timed)."""
    code = f"""
import json, time, pyarrow.parquet as pq
from pathlib import Path
from tokenizers import Tokenizer
root = Path({corpus!r})
texts = [json.loads(l)["text"] for n in ("docs", "tickets") for l in open(root / n / (n + ".jsonl"))]
texts += pq.read_table(root / "code" / "code.parquet")["text"].to_pylist()
tok = Tokenizer.from_file({tokenizer_json!r})
start = time.perf_counter()
n = 0
for i in range(0, len(texts), 1000):
    n += sum(len(e.ids) for e in tok.encode_batch(texts[i:i + 1000], add_special_tokens=False))
print(json.dumps({{"tokens": n, "seconds": time.perf_counter() - start}}))
"""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true"}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_one(factor: int, base: dict) -> dict:
    """One size in this process: corpus, cluster, prepare (timed, memory sampled), baseline."""
    import yaml

    import forge_ray  # noqa: F401  (offline environment)
    from forge_ray.cluster import connect
    from forge_ray.config import validate_config
    from forge_ray.prepare.run import prepare_dataset

    with tempfile.TemporaryDirectory(prefix="forge-bench-") as tmp:
        root = Path(tmp)
        corpus = write_corpus(root, factor, base)
        raw = yaml.safe_load((REPO / "jobs" / "configs" / "demo.yaml").read_text())
        config = validate_config({"project": {**raw["project"], "storage_root": str(root)},
                                  "data": raw["data"], "prepare": raw["prepare"]})
        connect("local")  # a fresh cluster of its own (logical CPUs = cores), never a running one
        with PeakRss() as rss:
            start = time.perf_counter()
            ds = prepare_dataset(config)
            seconds = time.perf_counter() - start
        base_run = baseline(os.path.join(ds.tokenizer_path, "tokenizer.json"), str(root / "corpora"))
        out_tokens = sum(ds.num_tokens(s, sp) for s in ds.sources for sp in ("train", "eval"))
        return {
            "factor": factor, "corpus": corpus, "prepare_seconds": round(seconds, 2),
            "phases": ds.manifest.get("phase_seconds", {}),
            "raw_tokens": base_run["tokens"], "output_tokens": out_tokens,
            "pipeline_tokens_per_s": round(base_run["tokens"] / seconds),
            "baseline_seconds": round(base_run["seconds"], 3),
            "baseline_tokens_per_s": round(base_run["tokens"] / base_run["seconds"]),
            "ratio": round(base_run["seconds"] / seconds, 4),
            "peak_rss_mb": round(rss.peak / 2**20, 1),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a 10x smaller base corpus (smoke run)")
    p.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)  # internal: run one size
    args = p.parse_args()
    base = {"tickets": 120, "code_bytes": 100_000, "docs_copies": 1} if args.quick else BASE
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, base)))
        return
    runs = {}
    for factor in (1, 10):
        cmd = [sys.executable, __file__, "--one", str(factor)] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
        runs[factor] = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))[7:])
        r = runs[factor]
        print(f"{factor:3d}x: {r['corpus']['mb']:6.2f} MB, {r['raw_tokens']:9d} tokens  prepare {r['prepare_seconds']:7.1f}s "
              f"({r['pipeline_tokens_per_s']:8d} tok/s)  baseline {r['baseline_seconds']:6.2f}s "
              f"({r['baseline_tokens_per_s']:8d} tok/s)  ratio {r['ratio']:.3f}x  peak RSS {r['peak_rss_mb']:.0f} MB")
    memory_ratio = runs[10]["peak_rss_mb"] / runs[1]["peak_rss_mb"]
    result = {
        "quick": args.quick, "cpus": os.cpu_count(), "runs": {f"{k}x": v for k, v in runs.items()},
        "throughput_ratio_10x": runs[10]["ratio"], "throughput_ratio_1x": runs[1]["ratio"],
        "peak_memory_ratio_10x_over_1x": round(memory_ratio, 3),
        "goals": {"throughput_ratio": ">= 1.0", "peak_memory_ratio": "<= 1.5"},
    }
    if not args.quick:  # a smoke run does not replace the committed figures
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"peak memory 10x / 1x: {memory_ratio:.2f}x (goal <= 1.5)")
    print(f"ratio (prepare throughput / tokenize-only baseline, 10x corpus): {runs[10]['ratio']:.3f}x")


if __name__ == "__main__":
    main()
