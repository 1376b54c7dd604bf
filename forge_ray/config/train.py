"""`train`: how the model is trained (filled in by the train room)."""

from __future__ import annotations

from pydantic import Field

from forge_ray.config.base import Section


class TrainConfig(Section):
    """Ray Train + DeepSpeed training run."""

    steps: int = Field(100, ge=1, description="Optimizer steps in the run.")
