"""A minimal client for the endpoint (stdlib only): for the demo, tests and benchmarks."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from forge_ray.serve.frontend import VERSION_HEADER


def request(base_url: str, path: str, key: str | None, body: dict | None = None,
            timeout: float = 120.0, raw: bytes | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one call; HTTP errors are returned, not raised."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(base_url.rstrip("/") + path, data=data, headers=headers,
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), dict(e.headers)


def complete(base_url: str, key: str, model: str, prompt: str, max_tokens: int = 16,
             temperature: float = 0.0) -> dict:
    """One completion: {"text", "version", "tokens"}; raises RuntimeError on a non-200 answer."""
    status, body, headers = request(base_url, "/completions", key, {
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature})
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {body}")
    return {"text": body["choices"][0]["text"], "version": headers.get(VERSION_HEADER),
            "tokens": body["usage"]["completion_tokens"]}
