"""vLLM's OpenAI serving layer inside the forge replica, on a real local endpoint (one replica, a
tiny dense model): the `openai` client with each parameter vLLM's own server takes (streaming too),
tokenize / detokenize, a 4xx for each bad request, and `vllm bench serve` run unpatched against it."""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from forge_ray.cluster import free_port
from forge_ray.config import validate_config
from forge_ray.registry import Registry
from forge_ray.serve import start_serving, stop_serving
from forge_ray.serve.client import request
from forge_ray.testing.loadgen import lm_eval_scores, vllm_bench_serve, write_mc_task
from forge_ray.testing.tiny_versions import publish_tiny

KEY = "openai-test-key"
PROMPT = "The quick brown fox"
TOOL = {"type": "function", "function": {"name": "lookup", "description": "Look a word up.", "parameters": {
    "type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}}}


@pytest.fixture(scope="module")
def endpoint(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_openai_root")
    publish_tiny(str(root), "tiny", "v1", "dense", 1, canary_tokens=8)
    Registry(str(root), "tiny").promote("v1")
    (root / "api_keys").write_text(f"{KEY}\n")
    config = validate_config({
        "project": {"name": "openaitest", "storage_root": str(root)},
        "data": {"sources": [{"name": "docs", "uri": "/unused", "format": "jsonl", "license": "MIT",
                              "sensitivity": "public"}]},
        "serve": {"model": "tiny", "port": free_port(), "app_name": "openaitest",
                  "auth": {"api_keys_file": str(root / "api_keys")},
                  "api": {"tool_call_parser": "pythonic", "enable_auto_tool_choice": True},
                  "engine": {"kv_cache_gib": 0.25}},
    }, "test")
    ep = start_serving(config)
    yield ep
    stop_serving(ep)


@pytest.fixture(scope="module")
def client(endpoint):
    import openai

    return openai.OpenAI(base_url=endpoint.base_url, api_key=KEY, max_retries=0)


def test_completions_logprobs_echo_n_stop_seed_penalties_and_vllm_extensions(client):
    c = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2, echo=True)
    choice = c.choices[0]
    assert c.system_fingerprint == "v1" and choice.text.startswith(PROMPT)           # echo
    assert len(choice.logprobs.tokens) == len(choice.logprobs.token_logprobs) >= 6
    assert all(len(t) <= 3 for t in choice.logprobs.top_logprobs[1:])                 # 2 (+ the sampled one)
    many = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0.9, n=3, seed=7)
    again = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0.9, n=3, seed=7)
    assert len(many.choices) == 3 and [x.text for x in many.choices] == [x.text for x in again.choices]
    extended = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=12, temperature=0.7, presence_penalty=0.5, frequency_penalty=0.5,
        extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.2, "ignore_eos": True})
    assert extended.usage.completion_tokens == 12
    greedy = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0).choices[0].text
    stop = greedy.strip()[:2]
    stopped = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop])
    assert stop not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"


def test_streaming_completion_and_chat_with_usage(client):
    full = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0).choices[0].text
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == full
    assert chunks[-1].usage.completion_tokens == 6
    parts = list(client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": [{"type": "text", "text": "Hello"}]}], max_tokens=5,
        n=2, temperature=0.8, seed=1, stream=True, stream_options={"include_usage": True}))
    assert parts[-1].usage.completion_tokens == 10 and {p.choices[0].index for p in parts if p.choices} == {0, 1}
    assert parts[-1].system_fingerprint == "v1"      # vLLM stamps the final chunk only


def test_chat_content_parts_logprobs_and_structured_outputs(client):
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}]}],
        max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
    assert len(r.choices[0].logprobs.content) == 4 and len(r.choices[0].logprobs.content[0].top_logprobs) == 2
    obj = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "json"}], max_tokens=24,
                                         temperature=0, response_format={"type": "json_object"})
    assert obj.choices[0].message.content.lstrip().startswith("{")
    schema = {"type": "object", "properties": {"a": {"type": "string", "enum": ["yes"]}}, "required": ["a"],
              "additionalProperties": False}
    s = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "json"}], max_tokens=48, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
    content = s.choices[0].message.content
    assert content.lstrip().startswith("{")
    if s.choices[0].finish_reason == "stop":
        assert json.loads(content) == {"a": "yes"}


def test_tools_named_and_auto(client):
    named = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "look up fox"}],
                                           tools=[TOOL], max_tokens=40, temperature=0,
                                           tool_choice={"type": "function", "function": {"name": "lookup"}})
    call = named.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and call.function.arguments.lstrip().startswith("{")
    auto = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                          tools=[TOOL], tool_choice="auto", max_tokens=4, temperature=0)
    assert auto.choices[0].finish_reason in ("length", "stop", "tool_calls")


def test_unsupported_parameters_and_endpoints_are_400(client, endpoint):
    import openai

    with pytest.raises(openai.BadRequestError, match="unsupported parameter"):
        client.completions.create(model="tiny", prompt="x", max_tokens=2, extra_body={"no_such_option": 1})
    with pytest.raises(openai.BadRequestError, match="does not support embeddings"):
        client.embeddings.create(model="tiny", input="x")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-9", prompt="x", max_tokens=2)


def test_tokenize_detokenize(endpoint):
    root = endpoint.base_url.removesuffix("/v1")
    code, tok, headers = request(root, "/v1/tokenize", KEY, {"model": "tiny", "prompt": PROMPT})
    assert code == 200 and tok["count"] == len(tok["tokens"]) > 0 and headers["x-forge-model-version"] == "v1"
    code, detok, _ = request(root, "/v1/detokenize", KEY, {"model": "tiny", "tokens": tok["tokens"]})
    assert code == 200 and detok["prompt"] == PROMPT


@pytest.mark.parametrize("raw", [
    json.dumps({"model": "tiny", "prompt": "x", "seed": 2**96}).encode(),
    json.dumps({"model": "tiny", "prompt": "x", "stop": [""]}).encode(),
    b'{"model": "tiny", "prompt": "a\\ud800"}',
    b'{"model": "tiny", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    json.dumps({"model": "tiny", "prompt": "x", "stop": ["s"] * 2000}).encode(),
    json.dumps({"model": "tiny", "prompt": "word " * 800_000}).encode(),
    json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 400}).encode(),
    json.dumps({"model": "tiny", "prompt": "hi", "n": 2, "temperature": 0}).encode(),
], ids=["seed", "empty stop", "surrogate", "deep", "many stops", "4 MB", "max_tokens", "n greedy"])
def test_bad_requests_are_4xx_on_the_real_endpoint(endpoint, raw):
    code, body, _ = request(endpoint.base_url, "/completions", KEY, raw=raw)
    assert 400 <= code < 500 and body["error"]["message"], (code, body)


def test_unauthenticated_request_is_refused_before_its_body_is_sent(endpoint):
    """Headers that announce 8 MB and no byte of the body: the 401 comes anyway (a server that read
    the body first would wait for it); with a key, the announced size alone is a 413."""
    url = urlsplit(endpoint.base_url)
    for auth, expected in ((b"", b"401"), (f"Authorization: Bearer {KEY}\r\n".encode(), b"413")):
        with socket.create_connection((url.hostname, url.port), timeout=10) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: forge\r\nContent-Type: application/json\r\n"
                      + auth + b"Content-Length: 8388608\r\n\r\n")
            head = s.recv(4096)
        assert head.split(b"\r\n")[0].split(b" ")[1] == expected, head[:200]


def test_limits_hold_while_a_concurrent_stream_flows(client, endpoint):
    """Requests refused by the limits (a 1 MB prompt, under the body limit but over the context;
    JSON 100,000 deep; 2,000 stop strings) while a stream runs: each a 4xx, and the stream's
    chunks keep flowing (tokenising the 1 MB prompt on the replica's loop stalled it for ~1 s)."""
    bad = [json.dumps({"model": "tiny", "prompt": "word " * 200_000}).encode(),
           b'{"model": "tiny", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
           json.dumps({"model": "tiny", "prompt": "x", "stop": ["s"] * 2000}).encode()] * 3
    codes: list[int] = []
    refused_at: list[float] = []

    def refuse() -> None:
        for raw in bad:
            codes.append(request(endpoint.base_url, "/completions", KEY, raw=raw)[0])
        refused_at.append(time.monotonic())

    stream = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=240, temperature=0, stream=True,
                                       extra_body={"ignore_eos": True})
    worker = threading.Thread(target=refuse)
    gaps, last = [], None
    for _ in stream:
        now = time.monotonic()
        if last is None:
            worker.start()          # the refusals run while the stream is under way
        else:
            gaps.append(now - last)
        last = now
    worker.join()
    assert codes and all(400 <= c < 500 for c in codes), codes
    assert refused_at[0] < last, "the refusals ended after the stream: they did not overlap it"
    assert len(gaps) >= 200 and max(gaps) < 0.5, max(gaps)


def test_vllm_bench_serve_runs_unpatched_with_no_failed_request(endpoint):
    tokenizer = Registry(endpoint.storage_root, "tiny").version_path("v1")
    root = endpoint.base_url.removesuffix("/v1")
    for chat in (False, True):
        result = vllm_bench_serve(root, "tiny", tokenizer, KEY, chat=chat, num_prompts=16, max_concurrency=4,
                                  input_len=32, output_len=8)
        assert result["failed"] == 0 and result["completed"] == 16, {k: result.get(k) for k in ("completed", "failed", "errors")}


def test_lm_eval_loglikelihood_task_runs_against_the_endpoint(endpoint, tmp_path):
    """The documented lm_eval command (docs/serving.md) with the endpoint's API key: a multiple-choice
    task scored by log-likelihoods (echo + logprobs + max_tokens). benchmarks/serve.py runs the same
    against vLLM's own server and compares every score."""
    tokenizer = Registry(endpoint.storage_root, "tiny").version_path("v1")
    write_mc_task(str(tmp_path))
    scores = lm_eval_scores(endpoint.base_url + "/completions", KEY, "tiny", tokenizer, str(tmp_path))
    assert 0.0 <= scores["acc"] <= 1.0 and len(scores["loglikelihoods"]) == 24
    assert all(len(doc) == 4 and all(ll < 0 for ll in doc) for doc in scores["loglikelihoods"])
