"""The decoder-only transformer, dense or Mixture-of-Experts, from a `ModelConfig`.

- pre-norm blocks: x + attn(norm(x)), then x + mlp(norm(x))
- MLP: SwiGLU, or every `moe.every_n_layers` layers an MoE block: a router and SwiGLU experts
  that skip the empty slots of their capacity buffer, routed top-k >= 2 by DeepSpeed-MoE
- forward returns logits, the summed load-balancing loss and the tokens routed to each expert
- parameter names are forge's own (`forge_ray.models.names`), mapped to HF's in `models/hf.py`

Parallelism stays outside: an MoE model is handed its MoE layer factory (`MoELayerFactory`) by
its caller, with its expert-parallel size (how many experts are local). Training passes
DeepSpeed-MoE's (`forge_ray.train.deepspeed_adapter.moe_layer`, whose names stay out of ours, and
whose engine later gives it its process group); the model never imports a parallelism library.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from forge_ray.config.model import ModelConfig, MoEConfig
from forge_ray.models.layers import (
    Attention,
    Documents,
    ExpertSwiGLU,
    RMSNorm,
    Rotary,
    SwiGLU,
    causal_mask,
    document_mask,
)

# (hidden size, one expert to replicate, the MoE section, expert-parallel size) -> (the routing layer,
# its router, this rank's experts); the layer's forward(x_BTD) returns (out_BTD, aux loss, counts per expert)
MoELayerFactory = Callable[[int, nn.Module, MoEConfig, int], tuple[nn.Module, nn.Linear, nn.ModuleList]]


@dataclass
class DecoderOutput:
    logits: torch.Tensor  # B T V
    aux_loss: torch.Tensor  # scalar: sum over MoE layers of DeepSpeed's load-balancing loss
    expert_counts: torch.Tensor | None  # [MoE layers, experts]: routed tokens (this rank's batch)


class MoEMLP(nn.Module):
    """An MoE block: `router` scores the experts, `experts` are this rank's `num_experts / ep_size`
    SwiGLU experts; the caller's layer (`moe`, holding no parameters of its own) routes tokens to them."""

    def __init__(self, cfg: ModelConfig, ep_size: int, moe_layer: MoELayerFactory):
        super().__init__()
        self.num_experts = cfg.moe.num_experts
        self.moe, self.router, self.experts = moe_layer(
            cfg.hidden_size, ExpertSwiGLU(cfg.hidden_size, cfg.ffn_hidden_size), cfg.moe, ep_size
        )

    def forward(self, x_BTD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, l_aux, counts = self.moe(x_BTD)
        return out, l_aux, counts


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, ep_size: int, moe_layer: MoELayerFactory | None):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.self_attn = Attention(cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                                   bias=cfg.attention_bias, qk_norm=cfg.qk_norm, norm_eps=cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.is_moe = cfg.is_moe_layer(layer)
        self.mlp = MoEMLP(cfg, ep_size, moe_layer) if self.is_moe else SwiGLU(cfg.hidden_size, cfg.ffn_hidden_size)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        h = self.post_attention_layernorm(x)
        if self.is_moe:
            out, l_aux, counts = self.mlp(h)
            return x + out, l_aux, counts
        return x + self.mlp(h), None, None


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig, *, ep_size: int = 1, moe_layer: MoELayerFactory | None = None):
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("model.vocab_size is unset: resolve it from the tokenizer first")
        if moe_layer is None and any(cfg.is_moe_layer(i) for i in range(cfg.num_layers)):
            raise ValueError("an MoE model (model.family: moe) needs its MoE layer: pass moe_layer=, e.g. "
                             "forge_ray.train.deepspeed_adapter.moe_layer (DeepSpeed-MoE, what training uses)")
        self.cfg = cfg
        self.ep_size = ep_size
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i, ep_size, moe_layer) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        self.activation_checkpointing = False  # set by the trainer (`train.activation_checkpointing`)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, init_std) everywhere; output projections scaled by 1/sqrt(2 L) (GPT-2)."""
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * self.cfg.num_layers)
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
            elif p.dim() == 1:
                p.fill_(1.0)  # RMSNorm weights
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, out_std)
            else:
                p.normal_(0.0, std)

    def forward(
        self, input_ids_BT: torch.Tensor, position_ids_BT: torch.Tensor | None = None
    ) -> DecoderOutput:
        """Packed sequences pass `position_ids` (restarting at 0 per document): attention then
        stays within each document (per-document spans, or a [B, 1, T, T] mask with a sliding window
        or `model.document_attention: dense_mask`). Without them: one causal sequence per row."""
        B, T = input_ids_BT.shape
        x = self.embed_tokens(input_ids_BT)
        window = self.cfg.sliding_window if self.cfg.sliding_window and self.cfg.sliding_window < T else None
        if position_ids_BT is None:
            positions = torch.arange(T, device=input_ids_BT.device).expand(B, T)
            mask = causal_mask(T, input_ids_BT.device, window) if window else None
        elif self.cfg.document_attention == "spans" and window is None:
            positions, mask = position_ids_BT, Documents.from_positions(position_ids_BT)
        else:
            positions = position_ids_BT
            mask = document_mask(position_ids_BT, window)
        cos, sin = self.rotary(positions, x.dtype)
        aux = x.new_zeros((), dtype=torch.float32)
        counts = []
        for block in self.layers:
            if self.activation_checkpointing and torch.is_grad_enabled():
                # keep only the block's input; recompute its insides in the backward pass
                x, l_aux, c = checkpoint(block, x, cos, sin, mask, use_reentrant=False)
            else:
                x, l_aux, c = block(x, cos, sin, mask)
            if l_aux is not None:
                aux = aux + l_aux
                counts.append(c)
        logits = self.lm_head(self.norm(x))
        return DecoderOutput(logits, aux, torch.stack(counts) if counts else None)

    @property
    def num_moe_layers(self) -> int:
        return sum(b.is_moe for b in self.layers)


def build_model(cfg: ModelConfig, *, ep_size: int = 1, seed: int | None = None,
                moe_layer: MoELayerFactory | None = None) -> Decoder:
    """A fresh model; the same `seed` gives the same weights on every rank. An MoE model needs
    `moe_layer` (see `MoELayerFactory`); a dense one ignores it."""
    if seed is not None:
        torch.manual_seed(seed)
    return Decoder(cfg, ep_size=ep_size, moe_layer=moe_layer)
