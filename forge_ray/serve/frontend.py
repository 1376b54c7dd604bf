"""The HTTP front: auth, request validation, OpenAI responses and server-sent events.

`Frontend.handle` takes a Starlette request and returns a response; the model replica deployment
(ModelServer, which is also the app's HTTP ingress) only forwards to it. The engine is reached
through `stream_fn(request) -> async iterator of events` (ModelReplica.generate, in the same
process; serve/contracts.py types both) and the swap watcher through `status_fn()`, so a unit test
can run the whole front over fakes.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from forge_ray.config.serve import ServeConfig
from forge_ray.serve import metrics
from forge_ray.serve.auth import KeyChecker
from forge_ray.serve.contracts import DeltaEvent, GenerateRequest, StartEvent, StreamEvent, WatcherStatus
from forge_ray.serve.protocol import (
    BadRequest,
    ChatRequest,
    CompletionRequest,
    completion_body,
    error_body,
    new_id,
    parse,
)

VERSION_HEADER = "x-forge-model-version"
StreamFn = Callable[[GenerateRequest], AsyncIterator[StreamEvent]]


def error_response(status: int, message: str, type_: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, None, code), status_code=status)


class Frontend:
    def __init__(self, cfg: ServeConfig, model: str, keys: KeyChecker, stream_fn: StreamFn,
                 status_fn: Callable[[], Awaitable[WatcherStatus]],
                 admin_fn: Callable[[str, dict], Awaitable[dict]]):
        self.cfg, self.model, self.keys = cfg, model, keys
        self.stream_fn, self.status_fn, self.admin_fn = stream_fn, status_fn, admin_fn

    async def handle(self, request: Request) -> Response:
        path, method = request.url.path.rstrip("/"), request.method
        admin = path.startswith("/admin/")
        if not (path.startswith("/v1/") or admin):
            return error_response(404, f"no route {path}", "not_found_error")
        if not self.keys.allows(request.headers.get("authorization"), admin=admin):
            kind = "an admin key" if admin else "an API key"
            return error_response(401, f"missing or invalid {kind} (Authorization: Bearer <key>)",
                                  "authentication_error", "invalid_api_key")
        routes = {("GET", "/v1/models"): self.models,
                  ("POST", "/v1/completions"): lambda r: self.complete(r, "completion"),
                  ("POST", "/v1/chat/completions"): lambda r: self.complete(r, "chat"),
                  ("GET", "/admin/status"): lambda r: self.admin(r, "status"),
                  ("POST", "/admin/reload"): lambda r: self.admin(r, "reload"),
                  ("POST", "/admin/promote"): lambda r: self.admin(r, "promote"),
                  ("POST", "/admin/rollback"): lambda r: self.admin(r, "rollback")}
        route = routes.get((method, path))
        if route is None:
            return error_response(404 if method == "GET" else 405, f"no route {method} {path}", "not_found_error")
        try:
            return await route(request)
        except BadRequest as e:
            metrics.error(path, "invalid_request_error")
            return JSONResponse(e.body(), status_code=e.status)
        except Exception as e:  # noqa: BLE001 - an OpenAI-style 500, not a bare traceback page
            metrics.error(path, "server_error")
            return error_response(500, f"internal error ({short(e)})", "server_error")

    async def models(self, request: Request) -> Response:
        status = await self.status_fn()
        served = sorted({r["version"] for r in status["replicas"].values() if r["version"]})
        return JSONResponse({"object": "list", "data": [{
            "id": self.model, "object": "model", "created": 0, "owned_by": "forge_ray",
            "version": status["target"], "generation": status["generation"], "versions_served": served}]},
            headers={VERSION_HEADER: status["target"] or ""})

    async def admin(self, request: Request, action: str) -> Response:
        body = {}
        if request.method == "POST":
            body = await _json(request, required=action == "promote")
        result = await self.admin_fn(action, body)
        if "error" in result:
            raise BadRequest(result["error"])
        return JSONResponse(result)

    async def complete(self, request: Request, kind: Literal["completion", "chat"]) -> Response:
        t0 = time.monotonic()
        route = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        req = parse(ChatRequest if kind == "chat" else CompletionRequest, await _json(request))
        if req.model != self.model:
            raise BadRequest(f"unknown model {req.model!r}; this endpoint serves {self.model!r}",
                             param="model", code="model_not_found")
        internal = GenerateRequest(kind=kind, stream=req.stream, sampling=req.sampling(self.cfg.default_max_tokens))
        if kind == "chat":
            internal["messages"] = [m.model_dump() for m in req.messages]
        else:
            internal["prompt"] = req.prompt
        events = self.stream_fn(internal)
        first = await anext(events)
        if first["type"] == "error":
            if hasattr(events, "aclose"):   # an in-process generator runs its cleanup now, not at GC
                await events.aclose()
            metrics.error(route, first["body"]["error"]["type"])
            metrics.request_done(route, first["status"], "", time.monotonic() - t0)
            return JSONResponse(first["body"], status_code=first["status"])
        # Not an error: a start, then only deltas (the replica's contract, serve/contracts.py).
        start, deltas = cast(StartEvent, first), cast("AsyncIterator[DeltaEvent]", events)
        version, rid = start["version"], new_id("chatcmpl" if kind == "chat" else "cmpl")
        usage = {"prompt_tokens": start["prompt_tokens"], "completion_tokens": 0}
        headers = {VERSION_HEADER: version}

        def done(status: int) -> None:
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            metrics.request_done(route, status, version, time.monotonic() - t0,
                                 usage["prompt_tokens"], usage["completion_tokens"])

        if not req.stream:
            text: list[str] = []
            ids: list[int] = []
            finish = None
            async for ev in deltas:
                text.append(ev["text"])
                ids += ev["token_ids"]
                finish = ev["finish_reason"] or finish
            usage["completion_tokens"] = len(ids)
            done(200)
            body = completion_body(kind, rid, self.model, version, "".join(text), finish, usage,
                                   token_ids=ids if req.return_token_ids else None)
            return JSONResponse(body, headers=headers)

        include_usage = bool((req.stream_options or {}).get("include_usage"))

        async def sse() -> AsyncIterator[str]:
            status = 200
            try:
                async for ev in deltas:
                    usage["completion_tokens"] += len(ev["token_ids"])
                    chunk = completion_body(kind, rid, self.model, version, ev["text"], ev["finish_reason"],
                                            None, delta=True,
                                            token_ids=ev["token_ids"] if req.return_token_ids else None)
                    yield f"data: {json.dumps(chunk)}\n\n"
                if include_usage:
                    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                    tail = completion_body(kind, rid, self.model, version, "", None, usage, delta=True)
                    tail["choices"] = []
                    yield f"data: {json.dumps(tail)}\n\n"
                yield "data: [DONE]\n\n"
            except Exception as e:  # noqa: BLE001 - the client gets an error event, not a cut stream
                status = 500
                metrics.error(route, "server_error")
                yield f"data: {json.dumps(error_body(f'internal error ({short(e)})', 'server_error'))}\n\n"
            finally:
                done(status)

        return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)


def short(e: BaseException) -> str:
    """The exception's type and last line: no traceback (or path) goes back to a client."""
    cause = getattr(e, "cause", None) or e
    lines = str(cause).strip().splitlines() or [""]
    return f"{type(cause).__name__}: {lines[-1][:200]}"


async def _json(request: Request, required: bool = True) -> dict:
    raw = await request.body()
    if not raw and not required:
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON body: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body
