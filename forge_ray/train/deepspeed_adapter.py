"""The DeepSpeed side of a worker: engine config, optimizer groups, learning-rate schedule.

Parallelism is applied here, not in the model: ZeRO stage 1/2 over the data-parallel ranks,
and DeepSpeed creates the expert-parallel groups (`ep_size_<n>`) for the MoE layers when the
engine is built. Optimizer state lives in flat fp32 partitions; `forge_ray.train.checkpoint`
reads and writes it per parameter, which is what makes checkpoints world-size independent.
"""

from __future__ import annotations

import math

import torch

from forge_ray.config.train import TrainConfig


def lr_at(step: int, train: TrainConfig) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay to `min_lr_ratio x lr` at the last step.

    A pure function of the step: a resumed run needs no scheduler state."""
    if train.warmup_steps and step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    span = max(1, train.steps - train.warmup_steps)
    progress = min(1.0, (step - train.warmup_steps) / span)
    floor = train.lr * train.min_lr_ratio
    return floor + (train.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def use_bf16(train: TrainConfig) -> bool:
    if train.precision == "bf16":
        return True
    return train.precision == "auto" and train.use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def zero_stage(train: TrainConfig, world_size: int) -> int:
    """The ZeRO stage the engine runs: `train.zero_stage`, but 0 on a single fp32 rank.

    ZeRO partitions over the data-parallel ranks; with one rank there is nothing to partition,
    and its flat fp32 copy of every parameter and gradient costs 10-20% of a step of the
    benchmark model on CPU. Stage 0 (fp32) steps the torch AdamW on the parameters themselves.
    Checkpoints are stage-independent (`checkpoint.py`), so an elastic run moving between 1 and
    2 workers switches stage at its restart and resumes the same. bf16 keeps stage 1, whose
    fp32 master weights the bf16 model needs."""
    if world_size > 1:
        return train.zero_stage
    return 1 if use_bf16(train) else 0


def deepspeed_config(train: TrainConfig, world_size: int) -> dict:
    return {
        "train_batch_size": train.global_batch_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.accumulation(world_size),
        "gradient_clipping": train.grad_clip,
        "bf16": {"enabled": use_bf16(train)},
        "zero_optimization": {
            "stage": zero_stage(train, world_size),
            "contiguous_gradients": True,
            "overlap_comm": False,
            "reduce_scatter": True,
        },
        # torch.optim.AdamW: DeepSpeed's fused/CPU Adam need compiled extensions; the torch one
        # runs everywhere and ZeRO wraps it the same way.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on norms; MoE expert parameters split into their own groups
    (DeepSpeed reduces them over the expert data-parallel group, not all ranks)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.dim() < 2 else decay).append(p)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    if any(getattr(p, "allreduce", True) is False for p in model.parameters()):
        from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer

        groups = split_params_into_different_moe_groups_for_optimizer(groups)
    return groups


def build_engine(model: torch.nn.Module, train: TrainConfig, world_size: int):
    """(engine, optimizer) for `model`; torch.distributed is already up (Ray Train's TorchConfig)."""
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if train.use_gpu else "gloo")
    b1, b2 = train.betas
    optimizer = torch.optim.AdamW(
        optimizer_groups(model, train.weight_decay), lr=lr_at(0, train), betas=(b1, b2), eps=train.adam_eps
    )
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(train, world_size)
    )
    if world_size == 1:
        # Alone, there is nothing to all-reduce; DeepSpeed would still flatten every gradient into
        # buckets, run the collective and copy them back (~4% of a CPU step of the benchmark model).
        engine.enable_backward_allreduce = False
    return engine, optimizer


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
