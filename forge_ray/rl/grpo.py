"""GRPO's arithmetic (Shao et al. 2024, DeepSeekMath): group-normalised advantages and the clipped
policy-gradient loss, with an optional KL penalty to a frozen reference.

    adv, valid = group_advantages(rewards, group_size, scale=True)    # [N], [N]
    logp = token_logprobs(logits, input_ids, temperature)             # [B, T-1]
    parts = policy_loss(logp, old_logp, adv, mask, cfg, norm, ref_logp=None)

Per completion token t of completion i, with ratio r = exp(logp - old_logp):
    l_it = -min(r A_i, clip(r, 1 - eps, 1 + eps) A_i) + beta * k3(ref, logp)
    k3 = exp(ref - logp) - (ref - logp) - 1        (Schulman's unbiased, positive KL estimator)
`aggregation` says how the l_it of a whole step (every micro batch of every rank) are averaged
(config/rl.py); the caller passes `norm`, that step-wide denominator, so that the gradients summed
over micro batches and ranks are exactly those of the step's loss.

Shape legend: N completions, B a micro batch of them, T tokens (prompt + completion), V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

STD_EPS = 1e-4  # as TRL: a group whose rewards are all equal gets advantage 0, not 0 / 0


def group_advantages(rewards: Sequence[float | None], group_size: int,
                     scale: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantage [N], valid [N]) for N = groups x group_size completions, a group's completions
    consecutive. A completion without a reward (None: its reward failed) is not valid: it has
    advantage 0, takes no part in its group's mean and std, and the loss skips it."""
    if len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards are not whole groups of {group_size}")
    valid = torch.tensor([r is not None for r in rewards])
    r = torch.tensor([0.0 if x is None else float(x) for x in rewards], dtype=torch.float64)
    r, v = r.view(-1, group_size), valid.view(-1, group_size).double()
    n = v.sum(1, keepdim=True)
    mean = (r * v).sum(1, keepdim=True) / n.clamp(min=1)
    adv = (r - mean) * v
    if scale:
        # the unbiased std of the valid members (as torch.std); a group of one valid member has none
        var = ((r - mean) ** 2 * v).sum(1, keepdim=True) / (n - 1).clamp(min=1)
        adv = adv / (var.sqrt() + STD_EPS)
    return adv.flatten().float(), valid


def token_logprobs(logits_BTV: torch.Tensor, input_ids_BT: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(token t+1 | tokens <= t) under softmax(logits / temperature): [B, T-1]."""
    logits = logits_BTV[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    return -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), input_ids_BT[:, 1:].reshape(-1),
                            reduction="none").view(input_ids_BT.shape[0], -1)


@dataclass
class PolicyLossParts:
    loss: torch.Tensor  # scalar: this micro batch's share of the step loss (backward sees it)
    sums: torch.Tensor  # [4] float64: tokens, clipped tokens, sum of k3 KL, sum of ratio (metrics)


def per_token_weights(mask_BT: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Each completion token's weight in the step's sum before `norm` divides it: 1, or (sequence)
    1 / the completion's length, so that each completion counts once whatever its length."""
    if aggregation == "sequence":
        return mask_BT / mask_BT.sum(1, keepdim=True).clamp(min=1)
    return mask_BT


def step_norm(masks: Sequence[torch.Tensor], aggregation: str, max_new_tokens: int) -> float:
    """The denominator of the step's loss from every completion mask of the step ([B, T-1] each)."""
    if aggregation == "token":
        return float(sum(m.sum() for m in masks))
    completions = sum(int((m.sum(1) > 0).sum()) for m in masks)
    return float(completions * (max_new_tokens if aggregation == "fixed" else 1))


def policy_loss(logp_BT: torch.Tensor, old_logp_BT: torch.Tensor, adv_B: torch.Tensor, mask_BT: torch.Tensor,
                *, clip_eps: float, kl_coef: float, aggregation: str, norm: float,
                ref_logp_BT: torch.Tensor | None = None) -> PolicyLossParts:
    """The clipped surrogate over this micro batch's completion tokens (`mask_BT`), divided by the
    step-wide `norm`."""
    ratio = torch.exp(logp_BT - old_logp_BT)
    adv = adv_B[:, None]
    unclipped, clipped = ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv
    per_token = -torch.minimum(unclipped, clipped)
    kl = torch.zeros_like(per_token)
    if kl_coef > 0 and ref_logp_BT is not None:
        d = ref_logp_BT - logp_BT
        kl = torch.exp(d) - d - 1
        per_token = per_token + kl_coef * kl
    weights = per_token_weights(mask_BT, aggregation)
    loss = (per_token * weights).sum() / max(norm, 1e-8)
    with torch.no_grad():
        was_clipped = ((clipped < unclipped) & (mask_BT > 0)).double()
        sums = torch.stack([mask_BT.sum().double(), was_clipped.sum(), (kl * mask_BT).sum().double(),
                            (ratio * mask_BT).sum().double()])
    return PolicyLossParts(loss, sums)
