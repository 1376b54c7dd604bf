"""Training objectives: what `StepTrainer.forward_backward` minimises on one micro batch.

    parts = loss_fn(out, batch)     # out: DecoderOutput; batch: the micro batch, on the device
    parts.loss                      # the scalar backward sees
    parts.token_loss_BT, parts.mask_BT, parts.aux_loss, parts.expert_counts   # what the metrics sum

Pre-training minimises next-token cross-entropy plus the MoE load-balancing loss
(`CausalLMLoss`); instruction tuning (`train.objective: sft`, docs/sft.md) is the same loss over the
assistant's tokens only: the stream's labels are IGNORE_INDEX elsewhere (the dataset's loss mask).
The mask rule when an SFT run mixes pre-training data in (`mixture.datasets`): a row without a loss
mask has every real token as a target (labels = input ids; padding is masked here by its id), so
one objective trains on both (`mixture.reader.read_samples` builds the labels). Another objective
(RL) is another callable of the same shape, reusing `StepTrainer.train_step` / `forward_backward`.

Shape legend: B batch, T sequence (T-1 targets), V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from forge_ray.models import DecoderOutput


@dataclass
class LossParts:
    loss: torch.Tensor  # scalar: what backward sees
    token_loss_BT: torch.Tensor  # [B, T-1] per-target loss (metrics: loss per token, per source)
    mask_BT: torch.Tensor  # [B, T-1] 1 where a position is a target (padding is not)
    aux_loss: torch.Tensor  # scalar MoE load-balancing loss (0 for a dense model)
    expert_counts: torch.Tensor | None  # [MoE layers, experts]: tokens routed on this rank


class Objective(Protocol):
    def __call__(self, out: DecoderOutput, batch: dict[str, torch.Tensor]) -> LossParts: ...


IGNORE_INDEX = -100  # a label that is not a target: instruction tuning's tokens outside the assistant turns


def lm_token_loss(logits_BTV: torch.Tensor, labels_BT: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token next-token cross-entropy [B, T-1] and its mask (padding and IGNORE_INDEX labels are
    not targets)."""
    B, T, V = logits_BTV.shape
    targets = labels_BT[:, 1:]
    loss = F.cross_entropy(logits_BTV[:, :-1].reshape(-1, V).float(), targets.reshape(-1), reduction="none",
                           ignore_index=IGNORE_INDEX)
    return loss.view(B, T - 1), ((targets != pad_id) & (targets != IGNORE_INDEX)).to(loss.dtype)


@dataclass(frozen=True)
class CausalLMLoss:
    """Mean next-token cross-entropy over the micro batch's real tokens + `aux_coef` x MoE aux loss."""

    pad_id: int
    aux_coef: float = 0.0

    def __call__(self, out: DecoderOutput, batch: dict[str, torch.Tensor]) -> LossParts:
        tok, mask = lm_token_loss(out.logits, batch["labels"], self.pad_id)
        lm = (tok * mask).sum() / mask.sum().clamp(min=1)
        return LossParts(lm + self.aux_coef * out.aux_loss, tok, mask, out.aux_loss, out.expert_counts)
