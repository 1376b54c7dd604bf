"""Sparse upcycling (Komatsuzaki et al. 2022): a dense checkpoint -> an MoE model that computes,
at step 0, exactly what the dense model computes.

    cfg = upcycled_config("open/llama", config.model)     # family 'moe', architecture 'mixtral'
    state = upcycle_folder("open/llama", cfg, seed=0)      # forge names, all experts

Every expert starts as a copy of its layer's dense MLP, and every other tensor is the dense one.
The router starts random (normal, `init_std`), so tokens spread over the experts from the first
step and their copies can drift apart; the function is unchanged whatever the router says because
the top-k gate weights (k >= 2, renormalised) sum to 1 over identical experts. That holds while no
token is dropped (`model.moe.drop_tokens: false`, the default). Exported as Mixtral.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from forge_ray.config.model import ModelConfig
from forge_ray.models.families import model_config_from_hf

_DENSE_MLP = re.compile(r"^layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight$")


def upcycled_config(folder: str | Path, base: ModelConfig) -> ModelConfig:
    """The MoE that `folder`'s dense model upcycles into: its architecture, `base`'s experts."""
    dense = model_config_from_hf(folder, base.model_copy(update={"family": "dense", "architecture": None,
                                                                 "upcycle_from": None}))
    if dense.family != "dense":
        raise ValueError(f"{folder}: model.upcycle_from needs a dense checkpoint, not {dense.hf_architecture}")
    if dense.attention_bias or dense.qk_norm:
        raise ValueError(f"{folder}: a {dense.hf_architecture} model has q/k/v biases or q/k norms, which the "
                         "Mixtral layout the upcycled MoE is exported in cannot hold; upcycle a Llama or Mistral model")
    data = dense.model_dump()
    data.update(family="moe", architecture="mixtral", upcycle_from=str(folder), moe=base.moe.model_dump())
    return ModelConfig.model_validate(data)


def upcycle_state(dense: dict[str, torch.Tensor], cfg: ModelConfig, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """A dense forge state dict -> the MoE `cfg`'s (global expert numbers): experts copied from the
    MLP of each MoE layer, routers random; the rest, and the MLPs of dense layers, as they are."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, t in dense.items():
        m = _DENSE_MLP.match(name)
        if m is None or not cfg.is_moe_layer(int(m.group(1))):
            out[name] = t
            continue
        layer, proj = m.groups()
        for e in range(cfg.moe.num_experts):
            out[f"layers.{layer}.mlp.experts.{e}.{proj}_proj.weight"] = t.clone()
        router = f"layers.{layer}.mlp.router.weight"
        if router not in out:
            out[router] = torch.randn(cfg.moe.num_experts, cfg.hidden_size, generator=gen, dtype=torch.float32
                                      ).mul_(cfg.init_std).to(t.dtype)
    return out


def upcycle_folder(folder: str | Path, cfg: ModelConfig, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """The upcycled MoE's initial weights (forge names) from the dense HF folder."""
    from forge_ray.models.hf import from_hf_state, read_hf_state

    dense_cfg = cfg.model_copy(update={"family": "dense", "architecture": None, "upcycle_from": None})
    return upcycle_state(from_hf_state(read_hf_state(folder), dense_cfg), cfg, seed=seed)
