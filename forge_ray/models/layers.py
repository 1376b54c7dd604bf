"""Decoder building blocks, in the Hugging Face Llama layout (so weights map one to one).

- RMSNorm (weight only, fp32 statistics)
- rotary positions (RoPE, "rotate half" convention as HF Llama/Mixtral), from explicit position ids
- grouped-query attention (num_kv_heads <= num_heads, kv head h // (H / KV) serves query head h),
  causal, optionally block-diagonal across packed documents
- SwiGLU MLP: down(silu(gate(x)) * up(x))

Shape legend: B batch, T sequence, D model width, H query heads, K kv heads, E head size, F ffn width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        x = x_BTD.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(x_BTD.dtype)


class Rotary(nn.Module):
    """cos/sin tables for RoPE, computed for the positions given (packed documents restart at 0)."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids_BT: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids_BT[..., None].float() * self.inv_freq  # B T E/2
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # B 1 T E
        return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x_BHTE: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x_BHTE * cos + _rotate_half(x_BHTE) * sin


def document_mask(position_ids_BT: torch.Tensor) -> torch.Tensor:
    """Boolean [B, 1, T, T]: causal, and a token sees only its own document (positions restart at 0)."""
    doc_BT = torch.cumsum((position_ids_BT == 0).int(), dim=1)
    T = position_ids_BT.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=position_ids_BT.device).tril()
    return ((doc_BT[:, :, None] == doc_BT[:, None, :]) & causal)[:, None]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int):
        super().__init__()
        self.H, self.K, self.E = num_heads, num_kv_heads, dim // num_heads
        self.q_proj = nn.Linear(dim, self.H * self.E, bias=False)
        self.k_proj = nn.Linear(dim, self.K * self.E, bias=False)
        self.v_proj = nn.Linear(dim, self.K * self.E, bias=False)
        self.o_proj = nn.Linear(self.H * self.E, dim, bias=False)

    def forward(self, x_BTD, cos, sin, mask_B1TT: torch.Tensor | None) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        q = self.q_proj(x_BTD).view(B, T, self.H, self.E).transpose(1, 2)
        k = self.k_proj(x_BTD).view(B, T, self.K, self.E).transpose(1, 2)
        v = self.v_proj(x_BTD).view(B, T, self.K, self.E).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.K != self.H:
            k = k.repeat_interleave(self.H // self.K, dim=1)
            v = v.repeat_interleave(self.H // self.K, dim=1)
        if mask_B1TT is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_B1TT)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.H * self.E))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class ExpertSwiGLU(SwiGLU):
    """A SwiGLU expert that computes only the rows of its capacity buffer that hold a token.

    DeepSpeed-MoE hands each expert its whole buffer, zero-padded past the tokens routed to it;
    with `drop_tokens: false` every buffer is as long as the busiest expert's load (about twice an
    even share at initialisation). A bias-free SwiGLU maps a zero row to zero with zero gradients,
    so skipping those rows computes the same function, forward and backward, for less work."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        used = rows.any(dim=-1).nonzero().squeeze(1)
        n, total = used.numel(), rows.shape[0]
        if n == total:
            return super().forward(x)
        if n == 0 or int(used[-1]) == n - 1:  # DeepSpeed fills a buffer from its start: slice, no gather
            y = super().forward(rows[:n])
            out = torch.cat([y, y.new_zeros(total - n, y.shape[-1])])
        else:
            out = rows.new_zeros(total, self.down_proj.out_features)
            out = out.index_copy(0, used, super().forward(rows.index_select(0, used)))
        return out.view(*x.shape[:-1], out.shape[-1])
