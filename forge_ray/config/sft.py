"""`train.objective` and `train.lora`: instruction tuning (SFT) settings (docs/sft.md).

    train:
      objective: sft          # the loss counts the assistant's tokens only (the dataset's loss mask)
      lora: {rank: 8, alpha: 16, dropout: 0.0, targets: [q_proj, v_proj]}   # absent: full fine-tuning
"""

from __future__ import annotations

from pydantic import Field, field_validator

from forge_ray.config.base import Section

# The linear projections of forge's decoder (forge_ray/models/names.py) a LoRA adapter may wrap.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraConfig(Section):
    """Low-rank adapters on chosen projections; the base weights stay frozen, export merges them."""

    rank: int = Field(8, ge=1, le=1024, description="Rank r of each adapter's A [r, in] and B [out, r] (count).")
    alpha: float = Field(16.0, gt=0, description="Scale numerator: the update is (alpha / rank) x B A (ratio).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input in training (probability).")
    targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        min_length=1,
        description=f"Projection names to adapt, in every layer; one of {list(LORA_TARGETS)}. MoE experts are "
        "not adapted (their projections live inside DeepSpeed's expert layer).",
    )
    save_adapter: bool = Field(
        False, description="Export also writes the adapter alone (adapter.safetensors) beside the merged weights."
    )

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, targets: list[str]) -> list[str]:
        unknown = [t for t in targets if t not in LORA_TARGETS]
        if unknown:
            raise ValueError(f"train.lora.targets {unknown} name no module of the decoder; "
                             f"choose among {list(LORA_TARGETS)}")
        return list(dict.fromkeys(targets))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class SftRoundConfig(Section):
    """`forge demo`'s optional last round (docs/sft.md): the promoted version instruction-tuned on the
    embedded instruction set, the demo's pre-training data mixed in, gated against its base, hot-loaded,
    and the same chat requests answered by the base and by its SFT version side by side."""

    enabled: bool = Field(False, description="Run the SFT round after the pre-training rounds (adds minutes).")
    records: int = Field(1200, ge=50, description="Conversations of the embedded instruction set written (count).")
    steps: int = Field(120, ge=1, description="Optimizer steps of the SFT run.")
    lr: float = Field(3e-3, gt=0, description="Peak learning rate of the SFT run.")
    pretrain_share: float = Field(
        0.2, ge=0, lt=1, description="Share of the SFT run's samples drawn from the pre-training dataset's "
        "sources (by their sizes), a fraction; the rest from the instruction set.")
    kpi_cases: int = Field(20, ge=1, description="Held-out chat cases of the round's KPI suite (count).")
    show: int = Field(3, ge=1, description="Chat requests printed with both answers (count).")

