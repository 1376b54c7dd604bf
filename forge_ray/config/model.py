"""`model`: the decoder to train: a Llama-layout dense model or a Mixtral-layout MoE model.

Sizes are in units of elements (hidden size, heads, ...); the dry run
(`forge train -c FILE --dry-run`) turns them into parameters, FLOPs per token and memory.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from forge_ray.config.base import Section


class MoEConfig(Section):
    """The Mixture-of-Experts layers (`deepspeed.moe.layer.MoE`); used when `model.family` is 'moe'."""

    num_experts: int = Field(8, ge=2, le=1024, description="Experts per MoE layer (count).")
    top_k: int = Field(
        2,
        ge=2,
        le=8,
        description="Experts each token is routed to (count). At least 2: DeepSpeed's top-1 gate "
        "does not renormalise the gate value, so only k >= 2 routes exactly like HF Mixtral.",
    )
    capacity_factor: float = Field(
        1.25,
        gt=0,
        description="Training capacity per expert, as a multiple of the even share of tokens (ratio); "
        "used only when drop_tokens is true.",
    )
    eval_capacity_factor: float = Field(
        2.0, gt=0, description="Capacity factor at evaluation time (ratio); only with drop_tokens."
    )
    min_capacity: int = Field(4, ge=0, description="Minimum tokens per expert whatever the factor (tokens).")
    drop_tokens: bool = Field(
        False,
        description="Drop tokens past an expert's capacity (faster, lossy). False routes every token, "
        "which is what HF Mixtral and vLLM do at inference: the exported model matches exactly.",
    )
    aux_loss_coef: float = Field(
        0.01, ge=0, description="Weight of the load-balancing loss added to the LM loss (ratio)."
    )
    expert_parallel_size: int = Field(
        1,
        ge=1,
        description="Ranks an MoE layer's experts are spread over (count); every world size "
        "in [train.min_workers, train.max_workers] must be a multiple of it.",
    )
    every_n_layers: int = Field(
        1,
        ge=1,
        description="An MoE layer every N decoder layers (count), the others dense (1: every layer, "
        "as in Mixtral). Dense layers are exported as N identical experts with a zero router, "
        "which computes the same function in the Mixtral layout.",
    )

    @model_validator(mode="after")
    def _divisible(self) -> MoEConfig:
        if self.num_experts % self.expert_parallel_size:
            raise ValueError(
                f"model.moe.num_experts ({self.num_experts}) must be divisible by "
                f"model.moe.expert_parallel_size ({self.expert_parallel_size})"
            )
        if self.top_k > self.num_experts:
            raise ValueError(f"model.moe.top_k ({self.top_k}) exceeds model.moe.num_experts ({self.num_experts})")
        return self


class ModelConfig(Section):
    """Architecture of the decoder-only transformer (RMSNorm, RoPE, grouped-query attention, SwiGLU)."""

    name: str = Field(
        "forge-lm",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="Model name: the registry folder <storage_root>/registry/<name>/.",
    )
    family: Literal["dense", "moe"] = Field(
        "dense", description="'dense' (exported as LlamaForCausalLM) or 'moe' (MixtralForCausalLM)."
    )
    init_from: str | None = Field(
        None,
        description="A Hugging Face checkpoint folder (Llama or Mixtral layout, local path) to start "
        "from: continued pre-training from open weights. Its config.json then sets the architecture "
        "(the size fields here are ignored) and the dataset must use its tokenizer.",
    )
    vocab_size: int | None = Field(
        None,
        ge=2,
        description="Vocabulary size (tokens); unset: the prepared dataset's tokenizer vocabulary.",
    )
    hidden_size: int = Field(256, ge=8, description="Model width d (elements).")
    num_layers: int = Field(4, ge=1, description="Decoder layers (count).")
    num_heads: int = Field(8, ge=1, description="Query heads per attention layer (count).")
    num_kv_heads: int = Field(
        4, ge=1, description="Key/value heads (count); fewer than num_heads is grouped-query attention."
    )
    ffn_hidden_size: int = Field(
        688, ge=8, description="SwiGLU inner width of a dense MLP and of each expert (elements)."
    )
    max_seq_len: int = Field(2048, ge=8, description="Longest sequence the positions cover (tokens).")
    rope_theta: float = Field(10000.0, gt=0, description="Rotary embedding base (dimensionless).")
    norm_eps: float = Field(1e-5, gt=0, description="RMSNorm epsilon (dimensionless).")
    tie_embeddings: bool = Field(
        False, description="Share the input embedding and the output projection weights."
    )
    init_std: float = Field(0.02, gt=0, description="Std of the normal weight initialisation (dimensionless).")
    moe: MoEConfig = Field(default_factory=MoEConfig, description="MoE layers (family 'moe' only).")

    @model_validator(mode="after")
    def _heads(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by model.num_heads ({self.num_heads})"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_heads ({self.num_heads}) must be divisible by model.num_kv_heads ({self.num_kv_heads})"
            )
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError("model.hidden_size / model.num_heads (the head size) must be even for RoPE")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def is_moe_layer(self, layer: int) -> bool:
        """Layer `layer` (0-based) holds an MoE block: layers N-1, 2N-1, ... (every layer for N=1)."""
        return self.family == "moe" and (layer + 1) % self.moe.every_n_layers == 0
