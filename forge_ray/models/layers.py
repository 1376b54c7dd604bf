"""Decoder building blocks, in the Hugging Face Llama layout (so weights map one to one).

- RMSNorm (weight only, fp32 statistics)
- rotary positions (RoPE, "rotate half" convention as HF Llama/Mixtral), from explicit position ids,
  optionally frequency-scaled (Llama 3.1's 'llama3', 'linear')
- grouped-query attention (num_kv_heads <= num_heads, kv head h // (H / KV) serves query head h),
  causal, optionally block-diagonal across packed documents and limited to a sliding window;
  q/k/v biases (Qwen2) and per-head q/k RMSNorm (Qwen3) when the family has them
- SwiGLU MLP: down(silu(gate(x)) * up(x))

Shape legend: B batch, T sequence, D model width, H query heads, K kv heads, E head size, F ffn width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def rope_frequencies(head_dim: int, theta: float, scaling=None) -> torch.Tensor:
    """RoPE inverse frequencies [E/2]; `scaling` a `RopeScaling` (None: unscaled), as HF computes them."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    if scaling is None:
        return inv_freq
    if scaling.type == "linear":
        return inv_freq / scaling.factor
    # llama3: long wavelengths slowed by `factor`, short ones kept, a linear ramp in between
    old = scaling.original_max_position_embeddings
    low_wavelen, high_wavelen = old / scaling.low_freq_factor, old / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


class Rotary(nn.Module):
    """cos/sin tables for RoPE, computed for the positions given (packed documents restart at 0)."""

    def __init__(self, head_dim: int, theta: float, scaling=None):
        super().__init__()
        self.register_buffer("inv_freq", rope_frequencies(head_dim, theta, scaling), persistent=False)

    def forward(self, position_ids_BT: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids_BT[..., None].float() * self.inv_freq  # B T E/2
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # B 1 T E
        return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x_BHTE: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x_BHTE * cos + _rotate_half(x_BHTE) * sin


def causal_mask(T: int, device, window: int | None = None) -> torch.Tensor:
    """Boolean [T, T]: query i sees keys j <= i (and i - j < window with a sliding window)."""
    i = torch.arange(T, device=device)
    seen = i[None, :] <= i[:, None]
    return seen & (i[:, None] - i[None, :] < window) if window else seen


def document_mask(position_ids_BT: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Boolean [B, 1, T, T]: causal, and a token sees only its own document (positions restart at 0)."""
    doc_BT = torch.cumsum((position_ids_BT == 0).int(), dim=1)
    causal = causal_mask(position_ids_BT.shape[1], position_ids_BT.device, window)
    return ((doc_BT[:, :, None] == doc_BT[:, None, :]) & causal)[:, None]


@dataclass(frozen=True)
class Documents:
    """Packed documents as spans, instead of a [B, 1, T, T] mask: `spans[b]` lists the (start, end)
    of each document of row b. Attention then runs causal per document (`document_attention`),
    computing sum(L_i^2) scores instead of T^2 and building no T x T mask."""

    spans: tuple[tuple[tuple[int, int], ...], ...]

    @staticmethod
    def from_positions(position_ids_BT: torch.Tensor) -> Documents:
        starts = (position_ids_BT == 0).clone()
        starts[:, 0] = True  # a row that opens mid-document starts a span too
        T = position_ids_BT.shape[1]
        rows = []
        for row in starts.cpu().tolist():  # one host sync per forward
            first = [t for t, s in enumerate(row) if s]
            rows.append(tuple(zip(first, first[1:] + [T], strict=True)))
        return Documents(tuple(rows))


def document_attention(q_BHTE, k_BHTE, v_BHTE, docs: Documents) -> torch.Tensor:
    """Causal attention within each document span. Rows holding one document go through one
    `is_causal` SDPA call together; the others one call per document, concatenated (no in-place
    slice writes: their backward would copy the whole output once per document). A flash kernel
    on GPU would take the spans as cu_seqlens instead."""
    rows: list[torch.Tensor | None] = [None] * len(docs.spans)
    whole = [b for b, spans in enumerate(docs.spans) if len(spans) == 1]
    if whole:
        idx = torch.tensor(whole, device=q_BHTE.device)
        together = F.scaled_dot_product_attention(q_BHTE[idx], k_BHTE[idx], v_BHTE[idx], is_causal=True)
        for i, b in enumerate(whole):
            rows[b] = together[i]
    for b, spans in enumerate(docs.spans):
        if len(spans) > 1:
            q, k, v = q_BHTE[b], k_BHTE[b], v_BHTE[b]  # H T E
            # a token alone (padding is one per position) attends to itself only: its value
            rows[b] = torch.cat([v[:, s:e] if e - s == 1 else
                                 F.scaled_dot_product_attention(q[:, s:e], k[:, s:e], v[:, s:e], is_causal=True)
                                 for s, e in spans], dim=1)
    return torch.stack(rows)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, head_dim: int | None = None, *,
                 bias: bool = False, qk_norm: bool = False, norm_eps: float = 1e-6):
        super().__init__()
        self.H, self.K, self.E = num_heads, num_kv_heads, head_dim or dim // num_heads
        self.q_proj = nn.Linear(dim, self.H * self.E, bias=bias)
        self.k_proj = nn.Linear(dim, self.K * self.E, bias=bias)
        self.v_proj = nn.Linear(dim, self.K * self.E, bias=bias)
        self.o_proj = nn.Linear(self.H * self.E, dim, bias=False)
        self.q_norm = RMSNorm(self.E, norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(self.E, norm_eps) if qk_norm else None

    def forward(self, x_BTD, cos, sin, mask_B1TT: torch.Tensor | Documents | None) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        q = self.q_proj(x_BTD).view(B, T, self.H, self.E)
        k = self.k_proj(x_BTD).view(B, T, self.K, self.E)
        v = self.v_proj(x_BTD).view(B, T, self.K, self.E).transpose(1, 2)
        if self.q_norm is not None:  # Qwen3: per head, before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q.transpose(1, 2), cos, sin), apply_rotary(k.transpose(1, 2), cos, sin)
        if self.K != self.H:
            k = k.repeat_interleave(self.H // self.K, dim=1)
            v = v.repeat_interleave(self.H // self.K, dim=1)
        if mask_B1TT is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif isinstance(mask_B1TT, Documents):
            out = document_attention(q, k, v, mask_B1TT)
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
