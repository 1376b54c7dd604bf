"""The OpenAI wire format: request models (validated, 400 on anything wrong) and response bodies."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from forge_ray.serve.contracts import Sampling


class BadRequest(Exception):
    """A client error: becomes a 400 (or `status`) with an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status

    def body(self) -> dict:
        return error_body(self.message, "invalid_request_error", self.param, self.code)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _Sampling(BaseModel):
    """Sampling fields shared by both endpoints; unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: Literal[1] = 1
    stream: bool = False
    stream_options: dict | None = None
    user: str | None = None
    return_token_ids: bool = False  # extension (as vLLM's server): the completion's token ids

    def sampling(self, default_max_tokens: int) -> Sampling:
        """Arguments for vllm.SamplingParams."""
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return Sampling(max_tokens=self.max_tokens or default_max_tokens, temperature=self.temperature,
                        top_p=self.top_p, presence_penalty=self.presence_penalty,
                        frequency_penalty=self.frequency_penalty, seed=self.seed, stop=stop)


class CompletionRequest(_Sampling):
    prompt: str | list[int] = Field(min_length=1)
    echo: bool = False
    logprobs: None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_max(self) -> ChatRequest:
        if self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self


def parse(model: type[BaseModel], raw: Any) -> Any:
    """Validate a decoded JSON body; raise BadRequest naming the first bad field."""
    if not isinstance(raw, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise BadRequest(f"{param}: {err['msg']}", param=param) from None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def completion_body(kind: str, rid: str, model: str, version: str, text: str, finish: str | None,
                    usage: dict | None, delta: bool = False, token_ids: list[int] | None = None) -> dict:
    """One OpenAI response (or, with `delta`, one streamed chunk) of either endpoint."""
    if kind == "chat":
        choice = {"index": 0, "finish_reason": finish}
        if delta:
            choice["delta"] = {"role": "assistant", "content": text}
        else:
            choice["message"] = {"role": "assistant", "content": text}
        obj = "chat.completion.chunk" if delta else "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    if token_ids is not None:
        choice["token_ids"] = token_ids
    body = {"id": rid, "object": obj, "created": int(time.time()), "model": model,
            "system_fingerprint": version, "choices": [choice]}
    if usage is not None:
        body["usage"] = usage
    return body
