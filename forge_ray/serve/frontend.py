"""The HTTP front: auth, request limits, then vLLM's OpenAI layer (in the replica), version header,
metrics.

`Frontend.handle` takes a Starlette request and returns a response; the model replica deployment
(ModelServer, which is also the app's HTTP ingress) only forwards to it. Order per request:
route known -> key checked (before a byte of the body is read) -> body read up to its limit ->
JSON decoded with its depth and text checks -> field limits -> the replica (`openai_fn`, which
holds the swap gate and the drain) -> the engine's vLLM handlers. The swap watcher is reached
through `status_fn()` / `admin_fn()`, so a unit test runs the whole front over fakes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from forge_ray.config.serve import ServeConfig
from forge_ray.serve import metrics
from forge_ray.serve.auth import KeyChecker
from forge_ray.serve.contracts import OpenAIReply, WatcherStatus
from forge_ray.serve.limits import check_request, decode_json, read_body
from forge_ray.serve.protocol import BadRequest, error_body

VERSION_HEADER = "x-forge-model-version"
OPENAI_ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/tokenize", "/v1/detokenize", "/v1/embeddings")
GENERATE_ROUTES = ("/v1/completions", "/v1/chat/completions")
OpenAIFn = Callable[[str, dict, Request], Awaitable[OpenAIReply]]


def error_response(status: int, message: str, type_: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, None, code), status_code=status)


class Frontend:
    def __init__(self, cfg: ServeConfig, model: str, keys: KeyChecker, openai_fn: OpenAIFn,
                 status_fn: Callable[[], Awaitable[WatcherStatus]],
                 admin_fn: Callable[[str, dict], Awaitable[dict]]):
        self.cfg, self.model, self.keys = cfg, model, keys
        self.openai_fn, self.status_fn, self.admin_fn = openai_fn, status_fn, admin_fn

    async def handle(self, request: Request) -> Response:
        t0 = time.monotonic()
        path, method = request.url.path.rstrip("/"), request.method
        admin = path.startswith("/admin/")
        if not (path.startswith("/v1/") or admin):
            return error_response(404, f"no route {path}", "not_found_error")
        if not self.keys.allows(request.headers.get("authorization"), admin=admin):
            kind = "an admin key" if admin else "an API key"
            return error_response(401, f"missing or invalid {kind} (Authorization: Bearer <key>)",
                                  "authentication_error", "invalid_api_key")
        if method == "POST" and path in OPENAI_ROUTES:
            route = lambda r: self.openai(r, path, t0)  # noqa: E731
        else:
            route = {("GET", "/v1/models"): self.models,
                     ("GET", "/admin/status"): lambda r: self.admin(r, "status"),
                     ("POST", "/admin/reload"): lambda r: self.admin(r, "reload"),
                     ("POST", "/admin/promote"): lambda r: self.admin(r, "promote"),
                     ("POST", "/admin/rollback"): lambda r: self.admin(r, "rollback")}.get((method, path))
        if route is None:
            known = path in OPENAI_ROUTES or path in ("/v1/models", "/admin/status")
            return error_response(405 if known else 404, f"no route {method} {path}",
                                  "invalid_request_error" if known else "not_found_error")
        try:
            return await route(request)
        except BadRequest as e:
            metrics.error(path, e.body()["error"]["type"])
            metrics.request_done(path, e.status, "", time.monotonic() - t0)
            return JSONResponse(e.body(), status_code=e.status)
        except Exception as e:  # noqa: BLE001 - an OpenAI-style 500, not a bare traceback page
            metrics.error(path, "server_error")
            return error_response(500, f"internal error ({short(e)})", "server_error")

    async def models(self, request: Request) -> Response:
        status = await self.status_fn()
        served = sorted({r["version"] for r in status["replicas"].values() if r["version"]})
        return JSONResponse({"object": "list", "data": [{
            "id": self.model, "object": "model", "created": 0, "owned_by": "forge_ray",
            "max_model_len": self.cfg.engine.max_model_len,
            "version": status["target"], "generation": status["generation"], "versions_served": served}]},
            headers={VERSION_HEADER: status["target"] or ""})

    async def admin(self, request: Request, action: str) -> Response:
        body = {}
        if request.method == "POST":
            raw = await read_body(request, self.cfg.limits.max_body_bytes)
            if raw or action == "promote":
                body = decode_json(raw, self.cfg.limits.max_json_depth)
        result = await self.admin_fn(action, body)
        if "error" in result:
            raise BadRequest(result["error"])
        return JSONResponse(result)

    async def openai(self, request: Request, route: str, t0: float) -> Response:
        limits = self.cfg.limits
        body = decode_json(await read_body(request, limits.max_body_bytes), limits.max_json_depth)
        check_request(route, body, limits)
        model = body.get("model")
        if model is not None and model != self.model:
            raise BadRequest(f"the model {model!r} does not exist; this endpoint serves {self.model!r}",
                             param="model", code="model_not_found", status=404)
        if (route in GENERATE_ROUTES and self.cfg.default_max_tokens
                and body.get("max_tokens") is None and body.get("max_completion_tokens") is None):
            body["max_tokens"] = self.cfg.default_max_tokens
        reply = await _unless_disconnected(self.openai_fn(route, body, request), request)
        if reply is None:           # the client left: the engine stopped its work (499, nginx's code)
            metrics.request_done(route, 499, "", time.monotonic() - t0)
            return Response(status_code=499)
        headers = {VERSION_HEADER: reply.version}
        if reply.stream is None:
            usage = (reply.body or {}).get("usage") or {}
            if reply.status >= 400:
                metrics.error(route, reply.body["error"]["type"])
            metrics.request_done(route, reply.status, reply.version, time.monotonic() - t0,
                                 usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
            return JSONResponse(reply.body, status_code=reply.status, headers=headers)
        return StreamingResponse(self._counted(reply, route, t0), media_type="text/event-stream",
                                 headers=headers)

    async def _counted(self, reply: OpenAIReply, route: str, t0: float) -> AsyncIterator[str]:
        """The stream as vLLM writes it; tokens are counted from its usage chunk (when the client
        asked for one: `stream_options.include_usage`)."""
        usage: dict = {}
        try:
            async for chunk in reply.stream:
                if '"usage":{' in chunk:
                    usage = json.loads(chunk.removeprefix("data: ")).get("usage") or usage
                yield chunk
        finally:   # also when the client goes away: close the stream, which frees the engine's slot
            aclose = getattr(reply.stream, "aclose", None)
            if aclose:
                await aclose()
            metrics.request_done(route, 200, reply.version, time.monotonic() - t0,
                                 usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)


async def _unless_disconnected(work, request: Request):
    """`work`'s result, or None once the client disconnects first; `work` is then cancelled, which
    aborts its request in the engine (vLLM's server does the same: `with_cancellation`). A stream
    returns at once; its disconnect is the streaming response's to notice."""
    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            await asyncio.sleep(0.1)    # a server that repeats body messages must not spin the loop

    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)   # let the engine abort it now
    return None if task.cancelled() else task.result()


def short(e: BaseException) -> str:
    """The exception's type and last line: no traceback (or path) goes back to a client."""
    cause = getattr(e, "cause", None) or e
    lines = str(cause).strip().splitlines() or [""]
    return f"{type(cause).__name__}: {lines[-1][:200]}"
