"""The HTTP front over a real ModelReplica and the fake engine (nothing patched): auth before the
body, request limits before tokenisation, every client error a 4xx with an OpenAI body, the version
header, streaming, and a concurrent stream unaffected by refused requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient

from forge_ray.config.serve import AuthConfig, LimitsConfig, ServeConfig, ServeEngineConfig
from forge_ray.errors import ConfigError
from forge_ray.registry import Registry, publish_version
from forge_ray.serve.auth import KeyChecker, read_keys
from forge_ray.serve.frontend import Frontend
from forge_ray.serve.replica import ModelReplica
from forge_ray.testing.fake_engine import FakeEngine
from tests.unit.test_registry import MANIFEST, fake_export

KEY, ADMIN = "k-123", "adm-456"


async def admin_fn(action, body):
    return {"error": "no version 'zz'"} if body.get("version") == "zz" else {"action": action}


async def status_fn():
    return {"target": "v1", "generation": 4, "replicas": {"a": {"version": "v1", "swapping": False}}}


def make_client(tmp_path, monkeypatch, cfg: ServeConfig):
    monkeypatch.setenv("T_KEYS", f"{KEY}, other")
    storage = str(tmp_path / "root")
    publish_version(storage, "m", "v1", fake_export(tmp_path, "v1"), MANIFEST)
    engine_cls = FakeEngine.fresh()
    replica = ModelReplica(cfg, Registry(storage, "m"), "r1", engine_cls=engine_cls)
    front = Frontend(cfg, "m", KeyChecker(read_keys("T_KEYS", None), [ADMIN]), replica.openai, status_fn, admin_fn)
    @contextlib.asynccontextmanager
    async def lifespan(app):
        await replica.load("v1")     # on the test client's event loop, where the replica will serve
        yield

    app = Starlette(routes=[Route("/{path:path}", front.handle, methods=["GET", "POST", "PUT"])], lifespan=lifespan)
    client = TestClient(app)
    client.engine, client.front = engine_cls, front
    return client


@pytest.fixture
def client(tmp_path, monkeypatch):
    cfg = ServeConfig(engine=ServeEngineConfig(max_model_len=64))      # default limits: 1 MiB bodies
    with make_client(tmp_path, monkeypatch, cfg) as c:
        yield c


def auth(key=KEY):
    return {"Authorization": f"Bearer {key}"}


def test_completion_names_its_version_and_reaches_the_engine_as_sent(client):
    body = {"model": "m", "prompt": "hi", "n": 2, "logprobs": 2, "echo": True, "top_k": 5, "ignore_eos": True}
    r = client.post("/v1/completions", headers=auth(), json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-forge-model-version"] == "v1" and r.json()["system_fingerprint"] == "v1"
    assert [c["text"] for c in r.json()["choices"]] == ["v1v1v1", "v1v1v1"]
    assert client.engine.requests == [("/v1/completions", body)]   # vLLM's layer gets every field


def test_chat_stream_is_server_sent_events_ending_in_done(client):
    r = client.post("/v1/chat/completions", headers=auth(), json={
        "model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [ln.removeprefix("data: ") for ln in r.text.split("\n\n") if ln]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1]) == "v1v1v1"
    assert r.headers["x-forge-model-version"] == "v1"


def test_tokenize_detokenize_and_embeddings_on_a_generative_model(client):
    r = client.post("/v1/tokenize", headers=auth(), json={"model": "m", "prompt": "abc"})
    assert r.status_code == 200 and r.json()["count"] == 3
    assert client.post("/v1/detokenize", headers=auth(), json={"model": "m", "tokens": [1, 2]}).status_code == 200
    r = client.post("/v1/embeddings", headers=auth(), json={"model": "m", "input": "abc"})
    assert r.status_code == 400 and "does not support embeddings" in r.json()["error"]["message"]


NESTED_40 = json.loads("[" * 40 + "]" * 40)
DEEP = b'{"model": "m", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize("name,body,status,param", [
    ("seed beyond 64 bits", {"model": "m", "prompt": "x", "seed": 2**96}, 400, "seed"),
    ("empty stop string", {"model": "m", "prompt": "x", "stop": [""]}, 400, "stop"),
    ("2000 stop strings", {"model": "m", "prompt": "x", "stop": [f"s{i}" for i in range(2000)]}, 400, "stop"),
    ("long stop string", {"model": "m", "prompt": "x", "stop": "s" * 1000}, 400, "stop"),
    ("n too large", {"model": "m", "prompt": "x", "n": 1000}, 400, "n"),
    ("lone surrogate", b'{"model": "m", "prompt": "a\\ud800b"}', 400, "prompt"),
    ("JSON 100,000 deep", DEEP, 400, None),
    ("JSON deeper than the limit", {"model": "m", "prompt": "x", "a": NESTED_40}, 400, "a"),
    ("malformed JSON", b"{oops", 400, None),
    ("not an object", b"[1, 2]", 400, None),
    ("4 MB prompt", {"model": "m", "prompt": "word " * 800_000}, 413, None),
    ("prompt over the context, untokenised", {"model": "m", "prompt": "w" * 65_000}, 400, "prompt"),
    ("token ids over the context", {"model": "m", "prompt": list(range(65)) * 2}, 400, "prompt"),
    ("too many prompts", {"model": "m", "prompt": ["a"] * 17}, 400, "prompt"),
    ("too many messages", {"model": "m", "messages": [{"role": "user", "content": "a"}] * 300}, 400, "messages"),
    ("unknown model", {"model": "gpt-9", "prompt": "x"}, 404, "model"),
])
def test_malformed_requests_are_4xx_with_openai_bodies(client, name, body, status, param):
    path = "/v1/chat/completions" if isinstance(body, dict) and "messages" in body else "/v1/completions"
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = client.post(path, headers=auth(), **kwargs)
    assert r.status_code == status, (name, r.text[:300])
    err = r.json()["error"]
    assert err["message"] and err["type"] == "invalid_request_error" and err["param"] == param, (name, err)
    assert client.engine.requests == [], name      # refused before the engine (and its tokenizer)


def test_unauthenticated_body_is_never_read(client):
    """The 401 goes out before the body is read: an 8 MB upload costs the replica nothing."""
    sent = []

    def body():
        for _ in range(8):
            sent.append(1)
            yield b"x" * (1 << 20)

    r = client.post("/v1/completions", content=body(), headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert len(sent) <= 1        # the test client hands over at most the first chunk


def test_oversized_body_is_refused_while_read(client):
    def body():
        for _ in range(8):
            yield b"x" * (1 << 20)

    r = client.post("/v1/completions", headers={**auth(), "Content-Type": "application/json"}, content=body())
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def request(body: bytes, path: str = "/v1/completions", leaves_after_s: float | None = None) -> Request:
    """A Starlette request as the replica's HTTP server hands it to the front: the body, then (as
    uvicorn) nothing until the client disconnects, after `leaves_after_s` or never."""
    headers = [(b"authorization", f"Bearer {KEY}".encode()), (b"content-type", b"application/json")]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b"",
             "root_path": "", "scheme": "http", "server": ("test", 80)}
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        if leaves_after_s is None:
            await asyncio.Event().wait()
        await asyncio.sleep(leaves_after_s)
        return {"type": "http.disconnect"}

    return Request(scope, receive)


def test_a_client_that_leaves_stops_its_request_in_the_engine(tmp_path, monkeypatch):
    cfg = ServeConfig(engine=ServeEngineConfig(max_model_len=64))
    with make_client(tmp_path, monkeypatch, cfg) as c:
        c.engine.steps = 200                                 # ~2 s of generation

        async def scenario():
            t = time.monotonic()
            body = json.dumps({"model": "m", "prompt": "hi"}).encode()
            resp = await c.front.handle(request(body, leaves_after_s=0.1))
            return resp.status_code, time.monotonic() - t, resp.body

        status, seconds, text = c.portal.call(scenario)
    assert status == 499 and seconds < 1.0, text


def test_limits_hold_while_a_concurrent_stream_flows(tmp_path, monkeypatch):
    """Refused requests (a 4 MB prompt, JSON 100,000 deep, 2,000 stop strings) are answered on the
    replica's event loop in milliseconds and never stall a stream it serves meanwhile: the gaps
    between the stream's chunks stay near the engine's step."""
    cfg = ServeConfig(engine=ServeEngineConfig(max_model_len=64), limits=LimitsConfig(max_body_bytes=8 << 20))
    bad = [json.dumps({"model": "m", "prompt": "word " * 800_000}).encode(), DEEP,
           json.dumps({"model": "m", "prompt": "x", "stop": ["s"] * 2000}).encode()] * 3
    with make_client(tmp_path, monkeypatch, cfg) as c:
        c.engine.steps = 40
        front = c.front

        async def scenario():
            gaps: list[float] = []

            async def stream():
                resp = await front.handle(request(json.dumps({"model": "m", "prompt": "hi", "stream": True}).encode()))
                last = time.monotonic()
                async for _ in resp.body_iterator:
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now

            async def refuse():
                codes = []
                for body in bad:
                    codes.append((await front.handle(request(body))).status_code)
                    await asyncio.sleep(0.02)
                return codes

            _, codes = await asyncio.gather(stream(), refuse())
            return gaps, codes

        gaps, codes = c.portal.call(scenario)
    assert codes and all(400 <= code < 500 for code in codes), codes
    assert c.engine.requests == [("/v1/completions", {"model": "m", "prompt": "hi", "stream": True})]
    assert len(gaps) > 40 and max(gaps) < 0.1, max(gaps)


def test_keys_api_and_admin_are_separate(client):
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers=auth("nope")).status_code == 401
    assert client.get("/v1/models", headers=auth(ADMIN)).status_code == 401
    assert client.get("/v1/models", headers=auth("other")).status_code == 200   # second key in the env var
    assert client.get("/admin/status", headers=auth()).status_code == 401
    assert client.post("/admin/reload", headers=auth(ADMIN)).json() == {"action": "reload"}
    r = client.post("/admin/promote", headers=auth(ADMIN), json={"version": "zz"})
    assert r.status_code == 400 and "no version" in r.json()["error"]["message"]


def test_unknown_routes_and_methods_are_404_and_405(client):
    assert client.get("/v1/nothing", headers=auth()).status_code == 404
    r = client.put("/v1/completions", headers=auth())
    assert r.status_code == 405 and r.json()["error"]["message"]


def test_models_lists_the_served_version(client):
    data = client.get("/v1/models", headers=auth()).json()["data"]
    assert data[0]["id"] == "m" and data[0]["version"] == "v1" and data[0]["versions_served"] == ["v1"]
    assert data[0]["max_model_len"] == 64


def test_no_api_key_configured_refuses_to_start(tmp_path, monkeypatch):
    monkeypatch.delenv("FORGE_API_KEYS", raising=False)
    with pytest.raises(ConfigError, match="no API key configured"):
        KeyChecker.from_config(AuthConfig())
    keys = tmp_path / "keys"
    keys.write_text("# comment\n\nabc\n")
    assert read_keys("UNSET_VAR_X", str(keys)) == ["abc"]
    with pytest.raises(ConfigError, match="cannot be read"):
        read_keys("UNSET_VAR_X", str(tmp_path / "missing"))


def test_serve_section_rules():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"min_replicas \(3\) > max_replicas \(2\)"):
        ServeConfig.model_validate({"replicas": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}}})
    with pytest.raises(ValidationError, match="tensor_parallel_size 2 needs replicas.num_gpus >= 2"):
        ServeConfig.model_validate({"engine": {"tensor_parallel_size": 2}, "replicas": {"num_gpus": 1}})
