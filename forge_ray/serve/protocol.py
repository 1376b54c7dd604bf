"""The OpenAI wire format forge itself writes: error bodies (vLLM's serving layer writes the rest)."""

from __future__ import annotations

ERROR_TYPES = {401: "authentication_error", 403: "permission_error",
               413: "invalid_request_error", 429: "rate_limit_error"}


class BadRequest(Exception):
    """A client error: becomes a 400 (or `status`) with an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status

    def body(self) -> dict:
        return error_body(self.message, error_type(self.status), self.param, self.code)


def error_type(status: int) -> str:
    """OpenAI's error `type` for an HTTP status."""
    if status >= 500:
        return "server_error"
    return ERROR_TYPES.get(status, "invalid_request_error")


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
