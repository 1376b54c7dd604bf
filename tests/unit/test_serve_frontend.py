"""The HTTP front over a fake backend: auth, validation (400 with OpenAI bodies), responses, SSE."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from forge_ray.config.serve import AuthConfig, ServeConfig
from forge_ray.errors import ConfigError
from forge_ray.serve.auth import KeyChecker, read_keys
from forge_ray.serve.frontend import Frontend

KEY, ADMIN = "k-123", "adm-456"


class FakeBackend:
    """Yields the events a model replica yields; records what it was asked."""

    def __init__(self):
        self.requests = []

    async def stream(self, req):
        self.requests.append(req)
        if req.get("prompt") == "boom":
            yield {"type": "error", "status": 400, "body": {"error": {
                "message": "too long", "type": "invalid_request_error", "param": "max_tokens", "code": None}}}
            return
        yield {"type": "start", "version": "v7", "prompt_tokens": 3}
        for i, word in enumerate(["Hello", " there"]):
            last = i == 1
            yield {"type": "delta", "text": word, "token_ids": [10 + i], "finish_reason": "length" if last else None}

    async def status(self):
        return {"target": "v7", "generation": 4, "replicas": {"a": {"version": "v7", "swapping": False}}}

    async def admin(self, action, body):
        return {"error": "no version 'zz'"} if body.get("version") == "zz" else {"action": action}


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setenv("T_KEYS", f"{KEY}, other")
    backend = FakeBackend()
    cfg = ServeConfig(default_max_tokens=7)
    front = Frontend(cfg, "m", KeyChecker(read_keys("T_KEYS", None), [ADMIN]), backend.stream,
                     backend.status, backend.admin)
    app = Starlette(routes=[Route("/{path:path}", front.handle, methods=["GET", "POST"])])
    c = TestClient(app)
    c.backend = backend
    return c


def auth(key=KEY):
    return {"Authorization": f"Bearer {key}"}


def test_completion_says_its_version_and_counts_tokens(client):
    r = client.post("/v1/completions", headers=auth(), json={"model": "m", "prompt": "hi", "return_token_ids": True})
    assert r.status_code == 200
    body = r.json()
    assert r.headers["x-forge-model-version"] == "v7" and body["system_fingerprint"] == "v7"
    assert body["choices"][0]["text"] == "Hello there" and body["choices"][0]["token_ids"] == [10, 11]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert client.backend.requests[0]["sampling"]["max_tokens"] == 7     # the configured default


def test_chat_stream_is_server_sent_events_ending_in_done(client):
    r = client.post("/v1/chat/completions", headers=auth(), json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "stream_options": {"include_usage": True}, "max_completion_tokens": 2})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [ln.removeprefix("data: ") for ln in r.text.split("\n\n") if ln]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks if c["choices"]) == "Hello there"
    assert chunks[-1]["usage"]["completion_tokens"] == 2
    assert client.backend.requests[0]["sampling"]["max_tokens"] == 2
    assert client.backend.requests[0]["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("body,param", [
    ({"model": "m", "prompt": "x", "temperature": 3}, "temperature"),
    ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "prompt": "x", "n": 2}, "n"),
    ({"model": "m"}, "prompt"),
    ({"model": "other", "prompt": "x"}, "model"),
    ({"model": "m", "prompt": "boom"}, "max_tokens"),          # the replica's own 400
])
def test_bad_requests_are_400_naming_the_parameter(client, body, param):
    r = client.post("/v1/completions", headers=auth(), json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"


def test_malformed_json_and_non_object_bodies_are_400(client):
    assert client.post("/v1/completions", headers=auth(), content=b"{oops").status_code == 400
    r = client.post("/v1/completions", headers=auth(), content=b"[1, 2]")
    assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]


def test_keys_api_and_admin_are_separate(client):
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers=auth("nope")).status_code == 401
    assert client.get("/v1/models", headers=auth(ADMIN)).status_code == 401
    assert client.get("/v1/models", headers=auth("other")).status_code == 200   # second key in the env var
    assert client.get("/admin/status", headers=auth()).status_code == 401
    assert client.post("/admin/reload", headers=auth(ADMIN)).json() == {"action": "reload"}
    r = client.post("/admin/promote", headers=auth(ADMIN), json={"version": "zz"})
    assert r.status_code == 400 and "no version" in r.json()["error"]["message"]


def test_models_lists_the_served_version(client):
    data = client.get("/v1/models", headers=auth()).json()["data"]
    assert data[0]["id"] == "m" and data[0]["version"] == "v7" and data[0]["versions_served"] == ["v7"]


def test_no_api_key_configured_refuses_to_start(tmp_path, monkeypatch):
    monkeypatch.delenv("FORGE_API_KEYS", raising=False)
    with pytest.raises(ConfigError, match="no API key configured"):
        KeyChecker.from_config(AuthConfig())
    keys = tmp_path / "keys"
    keys.write_text("# comment\n\nabc\n")
    assert read_keys("UNSET_VAR_X", str(keys)) == ["abc"]
    with pytest.raises(ConfigError, match="cannot be read"):
        read_keys("UNSET_VAR_X", str(tmp_path / "missing"))


def test_serve_section_rejects_inverted_autoscaling_bounds():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"min_replicas \(3\) > max_replicas \(2\)"):
        ServeConfig.model_validate({"replicas": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}}})
