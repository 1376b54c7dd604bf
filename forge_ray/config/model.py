"""`model`: the decoder to train: a dense model (Llama, Mistral, Qwen2 or Qwen3 layout) or a Mixtral-layout MoE.

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


class RopeScaling(Section):
    """Rotary-embedding frequency scaling of a long-context checkpoint (HF `rope_scaling`).

    'llama3': Llama 3.1+ (low frequencies divided by `factor`, high ones kept, a smooth ramp between);
    'linear': every frequency divided by `factor`. Other HF types are refused on import, never ignored."""

    type: Literal["llama3", "linear"] = Field(description="Scaling rule, as HF's `rope_type`.")
    factor: float = Field(gt=0, description="Context extension factor (ratio).")
    low_freq_factor: float = Field(1.0, gt=0, description="llama3: wavelengths past original/low_freq_factor are scaled (ratio).")
    high_freq_factor: float = Field(4.0, gt=0, description="llama3: wavelengths under original/high_freq_factor are kept (ratio).")
    original_max_position_embeddings: int = Field(
        8192, ge=1, description="llama3: context length the model was pre-trained at (tokens).")


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
    architecture: Literal["llama", "mistral", "qwen2", "qwen3", "mixtral"] | None = Field(
        None,
        description="Hugging Face layout written on export (LlamaForCausalLM, MistralForCausalLM, "
        "Qwen2ForCausalLM, Qwen3ForCausalLM, MixtralForCausalLM); unset: 'llama' for a dense model, "
        "'mixtral' for an MoE one. Set from init_from's config.json (docs/open_weights.md).",
    )
    init_from: str | None = Field(
        None,
        description="A Hugging Face checkpoint folder (Llama, Mistral, Qwen2, Qwen3 or Mixtral, local "
        "path) to start from: continued pre-training from open weights. Its config.json then sets the "
        "architecture (the size fields here are ignored), and the tokenizer defaults to the same folder.",
    )
    upcycle_from: str | None = Field(
        None,
        description="A dense Hugging Face checkpoint folder to upcycle into this MoE model (family 'moe'): "
        "every expert a copy of the dense MLP, so step 0 computes what the dense model computes.",
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
    head_dim_override: int | None = Field(
        None, ge=2, description="Attention head size (elements) when it is not hidden_size / num_heads (Qwen3).")
    attention_bias: bool = Field(False, description="Biases on the q, k and v projections (Qwen2).")
    qk_norm: bool = Field(False, description="RMSNorm over each head's queries and keys before RoPE (Qwen3).")
    sliding_window: int | None = Field(
        None, ge=1, description="Attention sees only the last N tokens (tokens); unset: the whole causal context (Mistral).")
    rope_scaling: RopeScaling | None = Field(None, description="RoPE frequency scaling (Llama 3.1+ long context).")
    document_attention: Literal["spans", "dense_mask"] = Field(
        "spans",
        description="How packed documents are kept apart in attention: 'spans' runs causal SDPA per "
        "document (no T x T mask, sum of squared document lengths of work); 'dense_mask' builds a "
        "[B, 1, T, T] boolean mask (the reference path). A sliding window always uses the mask.",
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
        if self.head_dim % 2:
            raise ValueError("the head size (model.hidden_size / model.num_heads, or model.head_dim_override) "
                             "must be even for RoPE")
        if self.architecture is not None and (self.architecture == "mixtral") != (self.family == "moe"):
            raise ValueError(f"model.architecture {self.architecture!r} does not fit model.family {self.family!r} "
                             "('mixtral' is the MoE layout; the others are dense)")
        if self.upcycle_from and self.family != "moe":
            raise ValueError("model.upcycle_from needs model.family 'moe' (a dense model is upcycled into an MoE)")
        if self.upcycle_from and self.init_from:
            raise ValueError("set model.init_from or model.upcycle_from, not both")
        return self

    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.hidden_size // self.num_heads

    @property
    def hf_architecture(self) -> str:
        """The layout export writes: `architecture`, or the family's default."""
        return self.architecture or ("mixtral" if self.family == "moe" else "llama")

    def is_moe_layer(self, layer: int) -> bool:
        """Layer `layer` (0-based) holds an MoE block: layers N-1, 2N-1, ... (every layer for N=1)."""
        return self.family == "moe" and (layer + 1) % self.moe.every_n_layers == 0
