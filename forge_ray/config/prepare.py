"""`prepare`: how raw corpora become a prepared dataset (filled in by the prepare room)."""

from __future__ import annotations

from pydantic import Field

from forge_ray.config.base import Section


class PrepareConfig(Section):
    """Turning raw corpora into packed token shards."""

    dataset: str = Field(
        "default",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="Name of the prepared dataset, under <storage_root>/datasets/<dataset>/.",
    )
    seq_len: int = Field(256, ge=8, le=1 << 20, description="Tokens per packed sequence.")
    eval_fraction: float = Field(
        0.05, ge=0.0, lt=1.0, description="Fraction of documents per source held out for evaluation."
    )
    seed: int = Field(0, description="Seed for every random choice of the prepare stage.")
