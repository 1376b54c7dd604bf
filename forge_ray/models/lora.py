"""LoRA: low-rank adapters on chosen linear projections of the decoder, the base frozen.

    names = apply_lora(model, lora_cfg)        # q_proj / v_proj ... of every layer -> LoRALinear
    merged = merge_lora_weights(model.state_dict(), lora_cfg.scale)   # plain forge weights, for export

- `LoRALinear` keeps the wrapped layer's `weight` under its own name (checkpoints, the HF name
  table and `load_local_weights` see the same base parameter) and adds `lora_A` [r, in] and
  `lora_B` [out, r]: y = x W^T + scale * dropout(x) A^T B^T, scale = alpha / r.
- B starts at zero, so an adapted model computes exactly its base at step 0.
- Merging folds scale * B A into W: the merged model's logits equal the adapted forward
  (a unit test), and vLLM / transformers load the result as a plain model.
- MoE experts are not adapted (their projections sit inside DeepSpeed's expert layer).

Shape legend: I input width, O output width, r rank.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from forge_ray.errors import ConfigError

LORA_A, LORA_B = "lora_A", "lora_B"


class LoRALinear(nn.Linear):
    """A bias-free linear layer plus a low-rank update; `weight` is the frozen base."""

    def __init__(self, base: nn.Linear, rank: int, scale: float, dropout: float):
        super().__init__(base.in_features, base.out_features, bias=False,
                         device=base.weight.device, dtype=base.weight.dtype)
        self.weight = base.weight  # the same Parameter: its name and value are the base's
        self.weight.requires_grad_(False)
        self.scale = scale
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype,
                                               device=base.weight.device))  # r I
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype,
                                               device=base.weight.device))  # O r
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear and peft

    def reset_parameters(self) -> None:  # nn.Linear.__init__ calls it before the adapter exists
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight) + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scale


def is_lora_name(name: str) -> bool:
    return name.endswith((f".{LORA_A}", f".{LORA_B}"))


def apply_lora(model: nn.Module, cfg) -> list[str]:
    """Wrap every `nn.Linear` whose last name is in `cfg.targets` (outside MoE experts) in a
    `LoRALinear`, freeze every other parameter; the adapted module names, in order.
    A ConfigError when the targets name no module of this model."""
    chosen = [(name, mod) for name, mod in model.named_modules()
              if isinstance(mod, nn.Linear) and not isinstance(mod, LoRALinear)
              and name.rsplit(".", 1)[-1] in cfg.targets and ".experts." not in name and mod.bias is None]
    if not chosen:
        raise ConfigError("train.lora.targets", [
            f"train.lora.targets {list(cfg.targets)} name no linear module of this model "
            f"(MoE experts are not adapted)"])
    for p in model.parameters():
        p.requires_grad_(False)
    for name, mod in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(mod, cfg.rank, cfg.scale, cfg.dropout))
    return [name for name, _ in chosen]


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors by name (their initial values fill a base checkpoint's gaps)."""
    return {k: v for k, v in model.state_dict().items() if is_lora_name(k)}


def merge_lora_weights(weights: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """Forge weights without adapters: each `<m>.weight` += scale * `<m>.lora_B` @ `<m>.lora_A`."""
    merged = {k: v for k, v in weights.items() if not is_lora_name(k)}
    for key in weights:
        if key.endswith(f".{LORA_A}"):
            module = key[: -len(LORA_A) - 1]
            a, b = weights[key].float(), weights[f"{module}.{LORA_B}"].float()
            base = merged[f"{module}.weight"]
            merged[f"{module}.weight"] = (base.float() + scale * (b @ a)).to(base.dtype)
    return merged


def adapter_only(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapters of a weight dict (what `train.lora.save_adapter` writes beside the merged model)."""
    return {k: v for k, v in weights.items() if is_lora_name(k)}


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
