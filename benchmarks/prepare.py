"""Prepare benchmark: forge side by side with datatrove on the same input, stages and cores.

    .venv/bin/python benchmarks/prepare.py [--quick]

Input: the embedded corpora (tickets, standard-library code, the Python reference docs) as eight
jsonl files {id, text}: ~30 MB (10x), and ~3 MB (1x, for the memory check); --quick: 3 and 0.3 MB.
One byte-level BPE is trained on a sample first (untimed); both tools reuse it.

Same stages: Gopher quality + Gopher repetition filters (forge's rules at datatrove's Gopher thresholds
where both have the rule, Gopher's English stop-word rule included), MinHash near-dedup with the same banding
(forge's bands x rows for its threshold, 5-word shingles), e-mail + IP redaction (datatrove's
`PIIFormatter`; forge with only EMAIL and IP_ADDRESS, no NER), tokenization with the reused
tokenizer, shards on disk. datatrove: `LocalPipelineExecutor(tasks=2, workers=2)` (the bucket stage
one task per band), words split on whitespace (a `WordTokenizer` passed as `language`; its default
English splitter is spaCy, ~80% of its time): datatrove at its fastest on the same work. It runs in
its own venv (`.bench-venv/`, created here with `datatrove==0.10.1`: its pins may differ from ours).

Wall clock of the whole command (`forge prepare -c FILE` in a fresh process: Python start, local Ray
cluster start and stop; datatrove's script likewise), MB of input text per second.
`ratio_vs_datatrove` = forge MB/s / datatrove MB/s (goal >= 1.0). Also: the full forge pipeline
(every entity, NER on, exact + near dedup) against the same datatrove run; MB/s per stage of each;
peak summed RSS (the command and all its children, Ray included) of forge at 10x over 1x (goal <= 1.5).

Writes benchmarks/results/prepare.json (prepare.quick.json with --quick); the last line printed is the ratio.
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
RESULTS = REPO / "benchmarks" / "results"
BENCH_VENV = REPO / ".bench-venv"
DATATROVE = "datatrove==0.10.1"
FILES = 8


def write_corpus(folder: Path, mb: float) -> dict:
    """About `mb` MB of text as FILES jsonl files; records interleaved so every file is alike."""
    from forge_ray.corpora.code import code_records
    from forge_ray.corpora.docs import docs_records
    from forge_ray.corpora.tickets import ticket_records

    f = mb / 1.75  # tickets, code and docs in about equal parts; the docs repeat (copies for the dedup)
    docs = list(docs_records())
    recs = list(code_records(max_bytes=int(0.6e6 * f)))  # capped by what the standard library holds
    recs += [dict(r, id=f"{r['id']}#{c}") for c in range(max(1, round(f))) for r in docs][: max(1, int(len(docs) * f))]
    have = sum(len(r["text"].encode()) for r in recs)
    per_ticket = 600  # bytes, about: tickets fill the rest of the target
    recs += ticket_records(n=max(10, int((mb * 1e6 - have) / per_ticket)), seed=1)[0]
    folder.mkdir(parents=True)
    outs = [open(folder / f"part-{i:02d}.jsonl", "w") for i in range(FILES)]
    for i, r in enumerate(recs):
        outs[i % FILES].write(json.dumps({"id": str(r["id"]), "text": r["text"]}) + "\n")
    for o in outs:
        o.close()
    return {"records": len(recs), "mb": round(sum(len(r["text"].encode()) for r in recs) / 1e6, 2), "files": FILES}


def train_tokenizer(corpus: Path, out: Path) -> None:
    from forge_ray.config.prepare import PiiConfig, TokenizerConfig
    from forge_ray.prepare.tokenizer import train_tokenizer as train

    texts = (json.loads(line)["text"] for line in open(corpus / "part-00.jsonl"))
    train(texts, TokenizerConfig(vocab_size=8192), PiiConfig(), str(out), max_bytes=2_000_000)


class PeakRss:
    """Samples the summed RSS of a process and all its descendants."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self.proc, self.interval, self.peak, self._stop = psutil.Process(pid), interval, 0, threading.Event()

    def _sample(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except Exception:  # noqa: BLE001 - a process may exit between listing and reading
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._sample())
            except Exception:  # noqa: BLE001 - the command has exited
                return
            time.sleep(self.interval)

    def __enter__(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of a command and everything it starts."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    with PeakRss(proc.pid) as rss:
        out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}):\n{err[-3000:]}")
    return wall, rss.peak / 2**20, out


# forge's quality rules at the thresholds of datatrove's GopherQualityFilter defaults (the rules both
# have), so both tools drop about the same records and the later stages get the same work.
GOPHER_AS_DATATROVE = {"min_words": 50, "max_words": 100_000, "min_mean_word_length": 3, "max_mean_word_length": 10,
                       "min_alpha_word_ratio": 0.8, "min_stop_words": 2,
                       "stop_words": ["the", "be", "to", "of", "and", "that", "have", "with"]}


def forge_config(root: Path, corpus: Path, tok: Path, full: bool) -> Path:
    import yaml

    prepare = {"dataset": "bench", "seq_len": 2048, "eval_fraction": 0.0, "shard_sequences": 4096,
               "tokenizer": {"mode": "reuse", "path": str(tok)}, "quality": GOPHER_AS_DATATROVE}
    if not full:
        prepare.update(pii={"entities": ["EMAIL", "IP_ADDRESS"], "ner_model": None}, dedup={"exact": False})
    raw = {"project": {"name": "bench", "storage_root": str(root)},
           "data": {"sources": [{"name": "corpus", "uri": str(corpus), "format": "jsonl", "id_field": "id",
                                 "license": "proprietary", "sensitivity": "internal"}]},
           "prepare": prepare}
    root.mkdir(parents=True, exist_ok=True)
    path = root / ("full.yaml" if full else "lean.yaml")
    path.write_text(yaml.safe_dump(raw))
    return path


def run_forge(root: Path, corpus: Path, tok: Path, full: bool, mb: float) -> dict:
    """`forge prepare -c FILE` in a fresh process (its own local Ray cluster)."""
    from forge_ray.prepare.dataset import open_dataset

    cfg = forge_config(root, corpus, tok, full)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    wall, peak, _ = timed([str(Path(sys.executable).parent / "forge"), "prepare", "-c", str(cfg)], env)
    ds = open_dataset(str(root), "bench")
    phases = ds.manifest.get("phase_seconds", {})
    import shutil

    shutil.rmtree(root / "datasets")  # the next run must not find this version complete
    return {"wall_s": round(wall, 2), "mb_s": round(mb / wall, 3), "peak_rss_mb": round(peak, 1),
            "phases_s": phases, "phases_mb_s": {k: round(mb / v, 2) for k, v in phases.items() if v > 0},
            "outside_phases_s": round(wall - sum(phases.values()), 2),
            "tokens": sum(ds.num_tokens(s, sp) for s in ds.sources for sp in ("train", "eval"))}


DATATROVE_SCRIPT = r'''
import json, sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.tokens import DocumentTokenizer
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.word_tokenizers import WordTokenizer


class SpaceWords(WordTokenizer):
    """Words split on whitespace (what forge's Gopher rules use), instead of spaCy."""

    def word_tokenize(self, text):
        return text.split()

    def sent_tokenize(self, text):
        return [s for s in text.split(". ") if s]

    def span_tokenize(self, text):
        spans, at = [], 0
        for s in self.sent_tokenize(text):
            at = text.find(s, at)
            spans.append((at, at + len(s)))
            at += len(s)
        return spans


if __name__ == "__main__":
    src, work, tok, bands, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    words = SpaceWords() if sys.argv[6] == "space" else "en"
    cfg = MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows)
    run = lambda name, pipeline, tasks: LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=2,
                                                              logging_dir=f"{work}/logs/{name}")
    stages = {
        "filter, redact, signatures": (lambda: [JsonlReader(src), GopherRepetitionFilter(language=words),
                                                GopherQualityFilter(language=words), PIIFormatter(),
                                                JsonlWriter(f"{work}/kept"),
                                                MinhashDedupSignature(f"{work}/sigs", config=cfg, language=words)], 2),
        "dedup buckets": (lambda: [MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=cfg)], bands),
        "dedup cluster": (lambda: [MinhashDedupCluster(f"{work}/buckets", f"{work}/remove", config=cfg)], 1),
        "dedup filter, tokenize": (lambda: [JsonlReader(f"{work}/kept"), MinhashDedupFilter(f"{work}/remove"),
                                            DocumentTokenizer(f"{work}/tokens", tokenizer_name_or_path=tok,
                                                              eos_token="<|endoftext|>")], 2),
    }
    seconds = {}
    for name, (pipeline, tasks) in stages.items():
        t = time.perf_counter()
        run(name, pipeline(), tasks).run()
        seconds[name] = round(time.perf_counter() - t, 2)
    print("RESULT " + json.dumps(seconds))
'''


def bench_python() -> Path:
    """The benchmark venv's python, with datatrove installed (once)."""
    py = BENCH_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    check = subprocess.run([str(py), "-c", "import datatrove"], capture_output=True)
    if check.returncode:
        # the extras its filters, dedup and tokenizer import (its "processing" extra, less the heavy parts)
        subprocess.run([str(py), "-m", "pip", "install", "-q", DATATROVE, "tokenizers", "regex", "xxhash<4", "orjson"], check=True)
    return py


def run_datatrove(root: Path, corpus: Path, tok: Path, bands: int, rows: int, mb: float, words: str) -> dict:
    script = root / "datatrove_bench.py"
    script.write_text(DATATROVE_SCRIPT)
    work = root / f"datatrove-{words}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    wall, peak, out = timed([str(bench_python()), str(script), str(corpus), str(work), str(tok / "tokenizer.json"),
                             str(bands), str(rows), words], env)
    stages = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
    return {"wall_s": round(wall, 2), "mb_s": round(mb / wall, 3), "peak_rss_mb": round(peak, 1), "words": words,
            "stages_s": stages, "stages_mb_s": {k: round(mb / v, 2) for k, v in stages.items() if v > 0}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="0.3 and 3 MB instead of 3 and 30 MB (smoke run)")
    p.add_argument("--no-full", action="store_true", help="skip the full forge pipeline (all entities, NER)")
    args = p.parse_args()
    from forge_ray.config.prepare import DedupConfig
    from forge_ray.prepare.dedup import lsh_params

    small = 0.3 if args.quick else 3.0
    dedup = DedupConfig()
    bands, rows = lsh_params(dedup.threshold, dedup.num_perm)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="forge-bench-") as tmp:
        root = Path(tmp)
        corpus1, corpus10 = root / "in1", root / "in10"
        c1, c10 = write_corpus(corpus1, small), write_corpus(corpus10, 10 * small)
        tok = root / "tok"
        train_tokenizer(corpus10, tok)
        print(f"corpus {c10['mb']} MB ({c10['records']} records), 1x {c1['mb']} MB; LSH {bands} bands x {rows} rows; "
              f"load average {load:.1f}", flush=True)
        dt = run_datatrove(root, corpus10, tok, bands, rows, c10["mb"], "space")
        print(f"datatrove (space-split words): {dt['wall_s']:6.1f} s  {dt['mb_s']:.2f} MB/s  {dt['stages_s']}", flush=True)
        lean = run_forge(root / "f10", corpus10, tok, False, c10["mb"])
        print(f"forge (same stages):           {lean['wall_s']:6.1f} s  {lean['mb_s']:.2f} MB/s  {lean['phases_s']}",
              flush=True)
        lean1 = run_forge(root / "f1", corpus1, tok, False, c1["mb"])
        full = None if args.no_full else run_forge(root / "full", corpus10, tok, True, c10["mb"])
        if full:
            print(f"forge (full: all entities, NER): {full['wall_s']:6.1f} s  {full['mb_s']:.2f} MB/s  {full['phases_s']}")
    memory = round(lean["peak_rss_mb"] / lean1["peak_rss_mb"], 3)
    result = {
        "quick": args.quick, "cpus": os.cpu_count(), "load_average_at_start": round(load, 2),
        "corpus": c10, "corpus_1x": c1, "lsh": {"bands": bands, "rows": rows},
        "datatrove": {**dt, "version": DATATROVE}, "forge": lean, "forge_1x": lean1, "forge_full": full,
        "ratio_vs_datatrove": round(lean["mb_s"] / dt["mb_s"], 3),
        "ratio_full_vs_datatrove": round(full["mb_s"] / dt["mb_s"], 3) if full else None,
        "peak_memory_ratio_10x_over_1x": memory,
        "goals": {"ratio_vs_datatrove": ">= 1.0", "peak_memory_ratio_10x_over_1x": "<= 1.5"},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ("prepare.quick.json" if args.quick else "prepare.json")).write_text(json.dumps(result, indent=2) + "\n")
    print(f"peak memory 10x / 1x: {memory:.2f}x (goal <= 1.5)")
    if full:
        print(f"full forge pipeline vs datatrove: {result['ratio_full_vs_datatrove']:.3f}x")
    print(f"ratio_vs_datatrove (MB/s forge / datatrove, same stages, whole command): {result['ratio_vs_datatrove']:.3f}x")


if __name__ == "__main__":
    main()
