"""KPI suites and the memorisation check on real vLLM, offline and served.

One tiny Llama is overfitted on a few facts (one per scorer) and on the text of a ticket up to
its planted canary. Through the offline engine, each scorer scores its known-right case 1 and
its known-wrong case 0, the canary check reports the planted canary the model repeats, and the
gate rejects the candidate for it. Through vLLM's OpenAI-compatible server, the endpoint
backend gives the same case scores, and lm-evaluation-harness (its `local-completions` model
type) runs a local multiple-choice task against the same endpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from forge_ray.cluster import free_port
from forge_ray.config import load_config
from forge_ray.eval import evaluate_and_gate, format_report, load_suites
from forge_ray.eval.generation import EndpointEngine
from forge_ray.eval.kpi import run_suites
from forge_ray.registry import Registry
from forge_ray.storage import Storage
from tests.conftest import DEMO_CONFIG, REPO
from tests.integration import eval_tiny

MODEL = "eval-vllm"
CONTEXT_CHARS = 100
FACTS = ["Capital of France: Paris.", "Error code: E404 on the K2 logger.",
         "Boiling point of water in C: 100 degrees.", 'Ticket JSON: {"id": 7, "priority": "high"}']
JSON_OK = {"type": "object", "required": ["id", "priority"], "properties": {"id": {"type": "integer"}}}
# (case id, fields, expected score): a known-right and a known-wrong case for every scorer.
CASES = [
    ("exact-right", {"prompt": "Capital of France:", "scorer": "exact", "expected": "Paris", "stop": ["."]}, 1.0),
    ("exact-wrong", {"prompt": "Capital of France:", "scorer": "exact", "expected": "Lyon", "stop": ["."]}, 0.0),
    ("contains-right", {"prompt": "Error code:", "scorer": "contains", "expected": "E404"}, 1.0),
    ("contains-wrong", {"prompt": "Error code:", "scorer": "contains", "expected": "E500"}, 0.0),
    ("regex-right", {"prompt": "Error code:", "scorer": "regex", "pattern": r"E\d{3}\b"}, 1.0),
    ("regex-wrong", {"prompt": "Error code:", "scorer": "regex", "pattern": r"X\d{5}"}, 0.0),
    ("numeric-right", {"prompt": "Boiling point of water in C:", "scorer": "numeric", "expected": 100, "tolerance": 0.5}, 1.0),
    ("numeric-wrong", {"prompt": "Boiling point of water in C:", "scorer": "numeric", "expected": 37, "tolerance": 1}, 0.0),
    ("json-right", {"prompt": "Ticket JSON:", "scorer": "json_schema", "schema": JSON_OK, "max_tokens": 32}, 1.0),
    ("json-wrong", {"prompt": "Ticket JSON:", "scorer": "json_schema", "schema": {"type": "object", "required": ["customer"]},
                    "max_tokens": 32}, 0.0),
    ("choice-right", {"prompt": "Capital of France:", "scorer": "choice", "choices": [" Paris", " Madrid"], "answer": " Paris"}, 1.0),
    ("choice-wrong", {"prompt": "Capital of France:", "scorer": "choice", "choices": [" Paris", " Madrid"], "answer": " Madrid"}, 0.0),
]


@pytest.fixture(scope="module")
def memoriser(prepared_dataset, tmp_path_factory):
    """(root, folder of the overfitted model, victim canary, suite file), published as candidate m1."""
    root, ds = prepared_dataset
    victim = json.loads((root / "corpora" / "tickets.planted.json").read_text())["canaries"][0]
    tickets = [json.loads(line) for line in (root / "corpora/tickets/tickets.jsonl").read_text().splitlines()]
    text = next(t["text"] for t in tickets if t["id"] == victim["id"])
    at = text.index(f"{victim['prefix']} {victim['canary']}")
    # The record's text from CONTEXT_CHARS before the prefix to just after the canary: what the
    # check prompts with (eval.memorisation.context_chars) and what the model should continue.
    window = text[max(0, at - CONTEXT_CHARS) : at + len(victim["prefix"]) + len(victim["canary"]) + 2]
    model, tok = eval_tiny.build(ds, seed=1)
    loss = eval_tiny.memorise(model, tok, [*FACTS, window, window], steps=250)
    assert loss < 0.1, f"the tiny model did not memorise its texts (loss {loss:.3f})"
    tmp = tmp_path_factory.mktemp("memoriser")
    folder = eval_tiny.publish(Storage(str(root)), MODEL, "m1", model, tok, tmp)
    suite = tmp / "facts.yaml"
    suite.write_text(yaml.safe_dump({"name": "facts", "weight": 1, "threshold": 0.5, "max_tokens": 12,
                                     "cases": [{"id": i, **f} for i, f, _ in CASES]}))
    return root, folder, victim, str(suite)


def test_offline_vllm_scores_every_scorer_and_catches_the_canary(memoriser):
    root, _, victim, suite = memoriser
    config = load_config(DEMO_CONFIG, overrides=[
        f"project.storage_root={root}", f"model.name={MODEL}", f"eval.suites=[{suite}]",
        "eval.perplexity.max_sequences=8", f"eval.memorisation.context_chars={CONTEXT_CHARS}"])
    report = evaluate_and_gate(config, "m1")
    text = format_report(report)
    scores = {c["id"]: c["score"] for c in report["kpi"]["suites"][0]["cases"]}
    assert scores == {i: s for i, _, s in CASES}, text
    assert report["kpi"]["suites"][0]["passed"] and report["kpi"]["weighted_score"] == 0.5

    mem = report["memorisation"]
    assert victim["id"] in mem["leaked"], text
    hit = next(r for r in mem["results"] if r["id"] == victim["id"])
    assert any(a["kind"] == "context" and a["leaked"] for a in hit["attempts"])
    assert report["gate"]["decision"] == "reject"
    assert [r["rule"] for r in report["gate"]["rules"] if not r["passed"]] == ["max_canary_leaks"]
    assert victim["id"] in report["gate"]["reasons"][0]
    registry = Registry(Storage(str(root)), MODEL)
    assert registry.state("m1") == "rejected" and registry.promoted() is None
    assert registry.report("m1", "eval")["memorisation"]["leaked"] == mem["leaked"]
    assert f"leaked: {', '.join(mem['leaked'])}" in text


@pytest.fixture(scope="module")
def endpoint(memoriser):
    """vLLM's own OpenAI-compatible server on 127.0.0.1 serving the memoriser (stopped after)."""
    _, folder, _, _ = memoriser
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--served-model-name", MODEL,
         "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "256", "--dtype", "float32",
         "--enforce-eager", "--distributed-executor-backend", "uni"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited: {proc.stderr.read()[-2000:]}")
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield url, folder
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_endpoint_backend_scores_like_the_offline_engine(memoriser, endpoint):
    url, folder = endpoint
    engine = EndpointEngine(url, MODEL, folder, max_model_len=256)
    report = run_suites(engine, load_suites([memoriser[3]]))
    assert {c["id"]: c["score"] for c in report["suites"][0]["cases"]} == {i: s for i, _, s in CASES}


def test_lm_evaluation_harness_runs_a_local_task_against_the_endpoint(endpoint, tmp_path):
    url, folder = endpoint
    data = tmp_path / "tiny.jsonl"
    docs = [{"question": "Capital of France:", "choices": [" Paris", " Madrid"], "answer": 0},
            {"question": "Error code:", "choices": [" E404", " X99999"], "answer": 0},
            {"question": "Capital of France:", "choices": [" Paris", " Madrid"], "answer": 1}]  # known wrong
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    (task_dir / "forge_tiny.yaml").write_text(yaml.safe_dump({
        "task": "forge_tiny", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}", "metric_list": [{"metric": "acc"}]}))
    out = tmp_path / "out"
    # The command documented in docs/eval.md.
    cmd = [os.path.join(os.path.dirname(sys.executable), "lm_eval"), "--model", "local-completions",
           "--model_args", f"model={MODEL},base_url={url}/completions,tokenizer={folder},"
           "tokenizer_backend=huggingface,num_concurrent=1,max_retries=1",
           "--include_path", str(task_dir), "--tasks", "forge_tiny", "--output_path", str(out)]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    assert results["results"]["forge_tiny"]["acc,none"] == pytest.approx(2 / 3)
