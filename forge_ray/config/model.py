"""`model`: the decoder to train (filled in by the model room)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from forge_ray.config.base import Section


class ModelConfig(Section):
    """Architecture of the decoder-only transformer."""

    name: str = Field(
        "forge-lm",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="Model name: the registry folder <storage_root>/registry/<name>/.",
    )
    family: Literal["dense", "moe"] = Field("dense", description="Dense or Mixture-of-Experts.")
