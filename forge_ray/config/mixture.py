"""`mixture`: how prepared sources are mixed into one training stream.

Two strategies pick each source's target share: explicit `weights`, or `temperature`
sampling (share proportional to the source's size to the power `alpha`). Caps on a source's
repetitions (`max_epochs`) and on its share (`max_share`) then bound what it may supply; the
excess goes to the other sources. `token_budget` bounds the run's length. The resolved plan
is `forge_ray.mixture.build_plan`'s (docs/mixture.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from forge_ray.config.base import Section


class MixtureConfig(Section):
    """Strategy, caps, budget and the seed of the global sample order."""

    strategy: Literal["weights", "temperature"] = Field(
        "weights",
        description="How target shares are chosen: 'weights' (the `weights` below; empty means "
        "proportional to each source's train sequences) or 'temperature' (share proportional to "
        "sequences ** alpha).",
    )
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="Relative weight per source name (strategy 'weights'); when given it must name "
        "every source (0 leaves one out). Empty: proportional to source size.",
    )
    alpha: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Temperature exponent (strategy 'temperature' only): 1 is proportional to size, "
        "0 is uniform across sources; values between up-weight the small sources.",
    )
    max_epochs: dict[str, float] = Field(
        default_factory=dict,
        description="Per-source cap on repetitions, in epochs over its train sequences (1.0: no "
        "sequence is seen twice). Sources not listed are uncapped.",
    )
    max_share: dict[str, float] = Field(
        default_factory=dict,
        description="Per-source cap on its share of the run's samples, a fraction in (0, 1]. "
        "What a capped source cannot take goes to the others in proportion to their weights.",
    )
    token_budget: int | None = Field(
        None,
        ge=1,
        description="Total training tokens of the run (tokens, = samples x seq_len). Unset: the "
        "length is train steps x global batch. Set: the run may not plan more, and a run given "
        "no step count gets floor(budget / (global batch x seq_len)) steps.",
    )
    seed: int = Field(0, ge=0, description="Seed of the global sample order (with the dataset version).")
    datasets: list[str] = Field(
        default_factory=list,
        description="Other prepared datasets whose train sources join this mix, each 'name' (its newest "
        "version) or 'name@version', e.g. pre-training data mixed into an SFT run to keep domain knowledge "
        "(docs/sft.md). They must share the tokenizer and seq_len; `weights` may name their sources.",
    )

    @field_validator("datasets")
    @classmethod
    def _dataset_refs(cls, refs: list[str]) -> list[str]:
        bad = [r for r in refs if not r or r.count("@") > 1 or r.startswith("@") or r.endswith("@")]
        if bad:
            raise ValueError(f"datasets are 'name' or 'name@version', got {bad}")
        if len(set(refs)) != len(refs):
            raise ValueError(f"a dataset is named twice: {refs}")
        return refs

    @field_validator("weights")
    @classmethod
    def _weights_non_negative(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = sorted(name for name, w in weights.items() if not w >= 0)
        if bad:
            raise ValueError(f"weights must be >= 0, got {[(n, weights[n]) for n in bad]}")
        if weights and not any(w > 0 for w in weights.values()):
            raise ValueError("at least one weight must be > 0")
        return weights

    @field_validator("max_epochs")
    @classmethod
    def _epochs_positive(cls, caps: dict[str, float]) -> dict[str, float]:
        bad = sorted(name for name, c in caps.items() if not c > 0)
        if bad:
            raise ValueError(f"max_epochs must be > 0 (epochs), got {[(n, caps[n]) for n in bad]}")
        return caps

    @field_validator("max_share")
    @classmethod
    def _share_is_fraction(cls, caps: dict[str, float]) -> dict[str, float]:
        bad = sorted(name for name, c in caps.items() if not 0 < c <= 1)
        if bad:
            raise ValueError(f"max_share must be in (0, 1], got {[(n, caps[n]) for n in bad]}")
        return caps

    @model_validator(mode="after")
    def _strategy_fields(self) -> MixtureConfig:
        if self.strategy == "temperature":
            if self.alpha is None:
                raise ValueError("strategy 'temperature' needs alpha (0 = uniform, 1 = by size)")
            if self.weights:
                raise ValueError("strategy 'temperature' takes no weights (they are sizes ** alpha)")
        elif self.alpha is not None:
            raise ValueError("alpha applies only to strategy 'temperature'")
        return self

    def named_sources(self) -> dict[str, list[str]]:
        """Source names each per-source field refers to (for the cross-section check)."""
        return {
            "weights": sorted(self.weights),
            "max_epochs": sorted(self.max_epochs),
            "max_share": sorted(self.max_share),
        }
