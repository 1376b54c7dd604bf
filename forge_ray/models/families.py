"""Open-weights families: a Hugging Face `config.json` <-> `ModelConfig`, each family exported back
to its own architecture class (docs/open_weights.md has the table).

| family  | HF class            | what it adds to the Llama block                        |
|---------|---------------------|--------------------------------------------------------|
| llama   | LlamaForCausalLM    | rope_scaling 'llama3' / 'linear' (Llama 3.1+)          |
| mistral | MistralForCausalLM  | sliding_window (when set), head_dim                    |
| qwen2   | Qwen2ForCausalLM    | q/k/v projection biases                                |
| qwen3   | Qwen3ForCausalLM    | per-head q/k RMSNorm, head_dim != hidden / heads       |
| mixtral | MixtralForCausalLM  | MoE: router + SwiGLU experts in every layer            |

A config field the model cannot honour (an unknown rope type, Qwen's per-layer sliding windows,
MLP biases) is an error naming it, never a silent default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from forge_ray.config.model import ModelConfig, RopeScaling


@dataclass(frozen=True)
class Family:
    name: str  # ModelConfig.architecture
    hf_class: str  # config.json "architectures"[0]
    config_class: str  # transformers' config class
    moe: bool = False
    attention_bias: bool = False  # q/k/v biases, always present
    qk_norm: bool = False
    sliding_window: bool = False  # honours config.json "sliding_window"


FAMILIES = {f.name: f for f in (
    Family("llama", "LlamaForCausalLM", "LlamaConfig"),
    Family("mistral", "MistralForCausalLM", "MistralConfig", sliding_window=True),
    Family("qwen2", "Qwen2ForCausalLM", "Qwen2Config", attention_bias=True),
    Family("qwen3", "Qwen3ForCausalLM", "Qwen3Config", qk_norm=True),
    Family("mixtral", "MixtralForCausalLM", "MixtralConfig", moe=True, sliding_window=True),
)}
_BY_CLASS = {f.hf_class: f for f in FAMILIES.values()}
SUPPORTED = sorted(_BY_CLASS)


def family_of(cfg: ModelConfig) -> Family:
    return FAMILIES[cfg.hf_architecture]


def _rope(raw: dict, where: str) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) from transformers 5's `rope_parameters` or the older `rope_scaling`."""
    params = dict(raw.get("rope_parameters") or {})
    theta = raw.get("rope_theta") or params.get("rope_theta") or 10000.0
    scaling = raw.get("rope_scaling") or params
    kind = scaling.get("rope_type") or scaling.get("type") or "default"
    if kind == "default":
        return float(theta), None
    if kind not in ("llama3", "linear"):
        raise ValueError(f"{where}: rope scaling type {kind!r} is not supported (supported: 'llama3', 'linear', "
                         "none); training with it ignored would change the model")
    keep = {k: scaling[k] for k in RopeScaling.model_fields if k in scaling and k != "type"}
    return float(theta), RopeScaling(type=kind, **keep)


def model_config_from_hf(folder: str | Path, base: ModelConfig) -> ModelConfig:
    """`base` with the architecture of the HF checkpoint in `folder` (name and MoE extras kept)."""
    raw = json.loads((Path(folder) / "config.json").read_text())
    arch = (raw.get("architectures") or [""])[0]
    if arch not in _BY_CLASS:
        raise ValueError(f"{folder}: architecture {arch!r} is not supported; supported: {SUPPORTED}")
    fam = _BY_CLASS[arch]
    for key in ("mlp_bias", "use_sliding_window"):
        if raw.get(key):
            raise ValueError(f"{folder}: config.json sets {key}, which forge's {fam.name} model does not implement")
    if raw.get("attention_bias") and not fam.attention_bias:
        raise ValueError(f"{folder}: config.json sets attention_bias, which forge's {fam.name} model does not implement")
    if raw.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{folder}: hidden_act {raw['hidden_act']!r} is not supported (SwiGLU uses 'silu')")
    theta, scaling = _rope(raw, str(folder))
    heads = raw["num_attention_heads"]
    head_dim = raw.get("head_dim")
    window = raw.get("sliding_window") if fam.sliding_window else None
    fields = dict(
        family="moe" if fam.moe else "dense",
        architecture=fam.name,
        vocab_size=raw["vocab_size"],
        hidden_size=raw["hidden_size"],
        num_layers=raw["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=raw.get("num_key_value_heads") or heads,
        ffn_hidden_size=raw["intermediate_size"],
        max_seq_len=raw.get("max_position_embeddings", base.max_seq_len),
        rope_theta=theta,
        rope_scaling=scaling,
        norm_eps=raw.get("rms_norm_eps", base.norm_eps),
        tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
        head_dim_override=head_dim if head_dim and head_dim != raw["hidden_size"] // heads else None,
        attention_bias=fam.attention_bias,
        qk_norm=fam.qk_norm,
        sliding_window=window or None,
    )
    data = base.model_dump()
    data.update(fields)
    if fam.moe:
        data["moe"] = {**data["moe"], "num_experts": raw["num_local_experts"],
                       "top_k": raw["num_experts_per_tok"], "every_n_layers": 1}
    return ModelConfig.model_validate(data)


def hf_config(cfg: ModelConfig, *, bos: int | None, eos: int, pad: int | None, dtype: torch.dtype):
    """The transformers config of `cfg`'s family (LlamaConfig, MistralConfig, ...)."""
    import transformers

    fam = family_of(cfg)
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling is not None:
        s = cfg.rope_scaling
        rope = {"rope_type": s.type, "rope_theta": cfg.rope_theta, "factor": s.factor}
        if s.type == "llama3":
            rope.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor,
                        original_max_position_embeddings=s.original_max_position_embeddings)
    common = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.ffn_hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters=rope,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        initializer_range=cfg.init_std,
        dtype=dtype,
    )
    if fam.name == "llama":
        common.update(attention_bias=False, mlp_bias=False)
    if fam.sliding_window:
        common["sliding_window"] = cfg.sliding_window
    if fam.moe:
        common.update(num_local_experts=cfg.moe.num_experts, num_experts_per_tok=cfg.moe.top_k,
                      router_aux_loss_coef=cfg.moe.aux_loss_coef)
    c = getattr(transformers, fam.config_class)(**common)
    c.architectures = [fam.hf_class]
    return c
