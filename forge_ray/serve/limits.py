"""Request limits, checked on the raw JSON before vLLM parses or tokenises anything.

    raw = await read_body(request, cfg.max_body_bytes)      # 413 past the limit, read no further
    body = decode_json(raw, cfg.max_json_depth)            # 400: bad JSON, too deep, lone surrogates
    check_request(route, body, cfg)                        # 400: stop, n, seed, messages, prompts

Each failure is a `BadRequest` (an OpenAI error body with the parameter it names). The prompt's
length is bounded later by the replica (`prompt_too_long`), which knows the tokenizer: a prompt of
c characters needs at least c / (longest vocabulary entry) tokens, so a prompt that cannot fit the
context is refused without tokenising it.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from forge_ray.config.serve import LimitsConfig
from forge_ray.serve.protocol import BadRequest

SEED_RANGE = (-(2**63), 2**64)      # vLLM's SamplingParams takes a 64-bit seed


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with a 413 as soon as it passes `max_bytes` (by Content-Length, or while read)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> BadRequest:
    return BadRequest(f"request body larger than {max_bytes} bytes", code="request_too_large", status=413)


def decode_json(raw: bytes, max_depth: int) -> dict:
    """A JSON object, or a 400: malformed, nested deeper than `max_depth`, or a string with a lone
    surrogate (valid JSON escapes, but no UTF-8 exists for them and the tokenizer would raise)."""
    try:
        body = json.loads(raw)
    except RecursionError:      # the C scanner gives up past Python's recursion limit
        raise BadRequest(f"JSON nested deeper than {max_depth} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON body: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    _walk(body, max_depth)
    return body


def _walk(body: Any, max_depth: int) -> None:
    stack = [(body, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > max_depth:
            raise BadRequest(f"JSON nested deeper than {max_depth} levels", param=path or None)
        if isinstance(value, dict):
            stack += [(v, depth + 1, f"{path}.{k}" if path else str(k)) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, depth + 1, path) for v in value]
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest("string holds a lone UTF-16 surrogate (not valid Unicode text)",
                                 param=path or None) from None


def check_request(route: str, body: dict, cfg: LimitsConfig) -> None:
    """The field limits of /v1/completions and /v1/chat/completions (other routes: none here)."""
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    if len(stops) > cfg.max_stop:
        raise BadRequest(f"at most {cfg.max_stop} stop strings (got {len(stops)})", param="stop")
    for s in stops:
        if isinstance(s, str) and not 0 < len(s) <= cfg.max_stop_chars:
            raise BadRequest(f"each stop string must have 1 to {cfg.max_stop_chars} characters", param="stop")
    ids = body.get("stop_token_ids")
    if isinstance(ids, list) and len(ids) > cfg.max_stop:
        raise BadRequest(f"at most {cfg.max_stop} stop token ids (got {len(ids)})", param="stop_token_ids")
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > cfg.max_n:
        raise BadRequest(f"n must be at most {cfg.max_n} (got {n})", param="n")
    seed = body.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and not SEED_RANGE[0] <= seed < SEED_RANGE[1]:
        raise BadRequest("seed must fit in 64 bits", param="seed")
    if route == "/v1/chat/completions":
        messages = body.get("messages")
        if isinstance(messages, list) and len(messages) > cfg.max_messages:
            raise BadRequest(f"at most {cfg.max_messages} messages (got {len(messages)})", param="messages")
        tools = body.get("tools")
        if isinstance(tools, list) and len(tools) > cfg.max_tools:
            raise BadRequest(f"at most {cfg.max_tools} tools (got {len(tools)})", param="tools")
    elif route == "/v1/completions":
        prompts = prompt_list(body.get("prompt"))
        if len(prompts) > cfg.max_prompts:
            raise BadRequest(f"at most {cfg.max_prompts} prompts per request (got {len(prompts)})", param="prompt")


def prompt_list(prompt: Any) -> list:
    """A completion's prompts: a string, a list of ids, a list of strings or of id lists."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        return prompt
    return [] if prompt is None else [prompt]


def text_chars(route: str, body: dict) -> list[int]:
    """Characters of text per prompt that the tokenizer would see."""
    if route in ("/v1/completions", "/v1/tokenize") and "prompt" in body:
        return [len(p) for p in prompt_list(body.get("prompt")) if isinstance(p, str)]
    if "messages" in body:
        total = 0
        for m in body.get("messages") or []:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                total += len(content)
            elif isinstance(content, list):
                total += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
        return [total]
    return []


def prompt_too_long(route: str, body: dict, max_model_len: int, max_token_chars: int) -> BadRequest | None:
    """A 400 when a prompt must hold more than `max_model_len` tokens, judged without tokenising:
    no token covers more than `max_token_chars` characters (the tokenizer's longest vocabulary entry),
    and a list of token ids is its own length."""
    param = "messages" if "messages" in body else "prompt"
    ids = [p for p in prompt_list(body.get("prompt")) if isinstance(p, list)] if param == "prompt" else []
    if any(len(p) > max_model_len for p in ids):
        return BadRequest(f"this model's maximum context length is {max_model_len} tokens; the prompt has "
                          f"{max(map(len, ids))} token ids", param=param, code="context_length_exceeded")
    for chars in text_chars(route, body):
        if chars > max_model_len * max_token_chars:
            return BadRequest(f"this model's maximum context length is {max_model_len} tokens; the prompt "
                              f"({chars} characters) needs more", param=param, code="context_length_exceeded")
    return None
