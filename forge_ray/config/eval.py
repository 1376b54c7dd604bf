"""`eval`: what a version must show before it is promoted (filled in by the eval room)."""

from __future__ import annotations

from pydantic import Field

from forge_ray.config.base import Section


class EvalConfig(Section):
    """Held-out perplexity, KPI suites and the promotion gate."""

    max_eval_sequences: int = Field(
        256, ge=1, description="Held-out sequences per domain used for perplexity."
    )
