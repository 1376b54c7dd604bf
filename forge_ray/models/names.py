"""The model's parameter names: forge's own, whichever library computes a layer.

    embed_tokens.weight   norm.weight   lm_head.weight
    layers.{i}.input_layernorm.weight   layers.{i}.post_attention_layernorm.weight
    layers.{i}.self_attn.{q,k,v,o}_proj.weight
    layers.{i}.mlp.{gate,up,down}_proj.weight                 a dense SwiGLU MLP
    layers.{i}.mlp.router.weight                               an MoE layer's router [experts, D]
    layers.{i}.mlp.experts.{e}.{gate,up,down}_proj.weight      its SwiGLU expert e

A model built for expert parallelism holds only its own experts, numbered from 0 on each rank;
checkpoints and exports number experts globally (`forge_ray.train.checkpoint` renumbers).
Other libraries' names are mapped in one table each: Hugging Face's in `models/hf.py`,
DeepSpeed's in `train/deepspeed_adapter.py`.
"""

from __future__ import annotations

import re

_EXPERT = re.compile(r"^(layers\.\d+\.mlp\.experts\.)(\d+)(\..+)$")


def expert_number(name: str) -> int | None:
    """The expert `e` of `layers.{i}.mlp.experts.{e}.*`, None for a parameter outside the experts."""
    m = _EXPERT.match(name)
    return int(m.group(2)) if m else None


def with_expert_number(name: str, expert: int) -> str:
    """An expert parameter's name with its expert number replaced."""
    m = _EXPERT.match(name)
    if not m:
        raise ValueError(f"{name!r} is not an expert parameter")
    return f"{m.group(1)}{expert}{m.group(3)}"
