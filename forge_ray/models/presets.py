"""Named model sizes, from CPU-test tiny to 7B dense and 8x7B MoE (`forge train --dry-run --preset NAME`).

The large ones copy published architectures (Llama-2-7B, Mixtral-8x7B, TinyLlama-1.1B) so the dry
run can be checked against their known parameter counts (6.74 B, 46.7 B total / 12.9 B active, 1.10 B).
"""

from __future__ import annotations

from forge_ray.config.model import ModelConfig

_V = 32000
PRESETS: dict[str, dict] = {
    "tiny-dense": dict(family="dense", hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, ffn_hidden_size=352),
    "tiny-moe": dict(family="moe", hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, ffn_hidden_size=176,
                     moe=dict(num_experts=4, top_k=2)),
    "dense-1b": dict(family="dense", vocab_size=_V, hidden_size=2048, num_layers=22, num_heads=32, num_kv_heads=4,
                     ffn_hidden_size=5632),
    "moe-small": dict(family="moe", vocab_size=_V, hidden_size=1024, num_layers=12, num_heads=16, num_kv_heads=4,
                      ffn_hidden_size=2816, moe=dict(num_experts=8, top_k=2)),
    "llama-7b": dict(family="dense", vocab_size=_V, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32,
                     ffn_hidden_size=11008, max_seq_len=4096),
    "mixtral-8x7b": dict(family="moe", vocab_size=_V, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8,
                         ffn_hidden_size=14336, max_seq_len=32768, rope_theta=1e6, moe=dict(num_experts=8, top_k=2)),
}


def preset(name: str, base: ModelConfig | None = None) -> ModelConfig:
    """`base` (default: a fresh ModelConfig) with the preset's architecture fields."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    data = (base or ModelConfig()).model_dump()
    spec = dict(PRESETS[name])
    data["moe"] = {**data["moe"], **spec.pop("moe", {})}
    data.update(spec)
    return ModelConfig.model_validate(data)
