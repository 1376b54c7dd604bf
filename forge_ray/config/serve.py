"""`serve`: the OpenAI-compatible endpoint (filled in by the serve room)."""

from __future__ import annotations

from pydantic import Field

from forge_ray.config.base import Section


class ServeConfig(Section):
    """Ray Serve + vLLM endpoint."""

    port: int = Field(8000, ge=1, le=65535, description="HTTP port of the endpoint.")
