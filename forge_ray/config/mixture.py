"""`mixture`: how prepared sources are mixed into one training stream (filled in by the mixture room)."""

from __future__ import annotations

from pydantic import Field

from forge_ray.config.base import Section


class MixtureConfig(Section):
    """Weights and the seed of the global sample order."""

    weights: dict[str, float] = Field(
        default_factory=dict,
        description="Relative weight per source name (empty: proportional to source size).",
    )
    seed: int = Field(0, description="Seed of the global sample order.")
