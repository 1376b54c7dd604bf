"""vLLM's own OpenAI serving layer over one engine: the handlers vLLM's server (and Ray Serve LLM's
`VLLMEngine`) build, answering forge's routes.

    api = await VLLMOpenAI.build(async_llm, cfg, model_name, version)
    reply = await api.call("/v1/chat/completions", body, raw_request)     # OpenAIReply

`vllm.entrypoints.openai.api_server.init_app_state` builds the serving classes
(`OpenAIServingCompletion`, `OpenAIServingChat`, `OpenAIServingModels`, `ServingTokenization`,
`ServingEmbedding` when the model embeds) from the same argument namespace vLLM's CLI parses, so
sampling, logprobs, `n`, `echo`, structured outputs, tools and chat content parts behave as on vLLM's
own server. One VLLMOpenAI belongs to one engine: a surge swap builds a new one with the new engine;
an in-place reload keeps it (same tokenizer and config) and only renames the version it reports.
Fields vLLM's models do not define are a 400 here (vLLM's server logs and ignores them).
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from pydantic import TypeAdapter, ValidationError

from forge_ray.config.serve import ServeConfig
from forge_ray.serve.contracts import OpenAIReply
from forge_ray.serve.protocol import BadRequest, error_body, error_type

log = logging.getLogger(__name__)

DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for p in m['content'] %}{{ p['text'] }}{% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def _request_models() -> dict[str, Any]:
    """Route -> pydantic type of vLLM's request (imported late: vLLM's import is heavy)."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.pooling.embed.protocol import EmbeddingRequest
    from vllm.entrypoints.serve.tokenize.protocol import DetokenizeRequest, TokenizeRequest

    return {"/v1/completions": CompletionRequest, "/v1/chat/completions": ChatCompletionRequest,
            "/v1/tokenize": TokenizeRequest, "/v1/detokenize": DetokenizeRequest,
            "/v1/embeddings": EmbeddingRequest}


def parse(route: str, body: dict, models: dict[str, Any]):
    """vLLM's request object for `body`; a 400 naming the first bad field, or the unknown ones."""
    try:
        req = TypeAdapter(models[route]).validate_python(body)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise BadRequest(f"{param}: {err['msg']}" if param else err["msg"], param=param) from None
    extra = sorted(req.model_extra or {})
    if extra:
        raise BadRequest(f"unsupported parameter(s): {', '.join(extra)}", param=extra[0],
                         code="unsupported_parameter")
    return req


def vllm_args(engine_args, cfg: ServeConfig, model_name: str, chat_template: str | None) -> argparse.Namespace:
    """The namespace vLLM's server would parse from its CLI: FrontendArgs defaults + the engine's args,
    as Ray Serve LLM builds it."""
    from vllm.entrypoints.launchers.cli_args import FrontendArgs

    api = cfg.api
    front = FrontendArgs(chat_template=chat_template, tool_call_parser=api.tool_call_parser,
                         enable_auto_tool_choice=api.enable_auto_tool_choice,
                         chat_template_content_format=api.chat_template_content_format)
    args = argparse.Namespace(**(vars(front) | vars(engine_args)))
    args.served_model_name = [model_name]
    if api.reasoning_parser:
        args.structured_outputs_config.reasoning_parser = api.reasoning_parser
    return args


class VLLMOpenAI:
    def __init__(self, state, version: str):
        self.state = state
        self.models = _request_models()
        self.handlers = {
            "/v1/completions": getattr(state, "openai_serving_completion", None),
            "/v1/chat/completions": getattr(state, "openai_serving_chat", None),
            "/v1/tokenize": state.serving_tokenization, "/v1/detokenize": state.serving_tokenization,
            "/v1/embeddings": getattr(state, "serving_embedding", None),
        }
        self.set_version(version)

    @classmethod
    async def build(cls, engine, engine_args, cfg: ServeConfig, model_name: str, version: str) -> VLLMOpenAI:
        from starlette.datastructures import State
        from vllm.entrypoints.openai.api_server import init_app_state

        tok = engine.get_tokenizer()
        template = cfg.chat_template or (None if getattr(tok, "chat_template", None) else DEFAULT_CHAT_TEMPLATE)
        state = State()
        tasks = await engine.get_supported_tasks()
        await init_app_state(engine, state, vllm_args(engine_args, cfg, model_name, template), tasks)
        return cls(state, version)

    def set_version(self, version: str) -> None:
        """The version every response names (`system_fingerprint`): each serving class caches it."""
        self.version = version
        for h in self.handlers.values():
            if h is not None and hasattr(h, "system_fingerprint"):
                h.system_fingerprint = version

    async def call(self, route: str, body: dict, raw_request=None) -> OpenAIReply:
        """One request through vLLM's handler for `route`; vLLM's errors become OpenAI error bodies."""
        handler = self.handlers.get(route)
        if handler is None:
            what = "embeddings" if route == "/v1/embeddings" else route
            raise BadRequest(f"this model does not support {what} (it serves: "
                             f"{', '.join(r for r, h in self.handlers.items() if h)})", code="unsupported_endpoint")
        req = parse(route, body, self.models)
        try:
            if route == "/v1/completions":
                out = await handler.create_completion(req, raw_request)
            elif route == "/v1/chat/completions":
                out = await handler.create_chat_completion(req, raw_request)
            elif route == "/v1/tokenize":
                out = await handler.create_tokenize(req, raw_request)
            elif route == "/v1/detokenize":
                out = await handler.create_detokenize(req, raw_request)
            else:
                out = await handler(req, raw_request)   # ServingEmbedding answers a starlette Response
        except Exception as e:  # noqa: BLE001 - mapped as vLLM's server maps it (4xx for client errors)
            out = handler.create_error_response(e)
        return self._reply(out)

    def _reply(self, out) -> OpenAIReply:
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse

        if isinstance(out, ErrorResponse):
            status = int(out.error.code)
            if status >= 500:
                log.error("vLLM answered %s: %s", status, out.error.message)
            return OpenAIReply(status, error_body(out.error.message, error_type(status), out.error.param),
                               version=self.version)
        if hasattr(out, "__aiter__"):   # `data: {...}` lines; closing it aborts the request in the engine
            return OpenAIReply(200, stream=out, version=self.version)
        if hasattr(out, "model_dump"):
            return OpenAIReply(200, out.model_dump(exclude_none=False), version=self.version)
        return OpenAIReply(out.status_code, json.loads(out.body), version=self.version)

