"""What each Ray Train worker runs: the model, its DeepSpeed engine, then `StepTrainer.train()`.

A (re)started worker group resumes from Ray Train's latest checkpoint at whatever world size it
now has: the checkpoint holds full per-parameter state (`checkpoint.py`) and the step, which is
the data cursor of the mixture plan (global batch k is the same samples at any world size).
The steps themselves are `step_trainer.py`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from forge_ray.config.model import ModelConfig
from forge_ray.config.train import TrainConfig

if TYPE_CHECKING:
    from forge_ray.mixture import MixturePlan


@dataclass
class WorkerJob:
    """Everything a worker needs, built on the driver and shipped (pickled) to each worker."""

    model: ModelConfig  # resolved: vocab size set, init_from's architecture applied
    train: TrainConfig
    plan: MixturePlan
    run_dir: str
    init_from: str | None  # HF folder (path or URI) for the initial weights (None: seeded random init)
    flops_per_token: float
    config_hash: str


def initial_weights(job: WorkerJob) -> dict[str, torch.Tensor]:
    """Full weights to start from: an HF checkpoint folder, or the seeded init (same on every rank)."""
    if job.init_from:
        from forge_ray.models.hf import load_hf_folder
        from forge_ray.registry import local_folder

        return load_hf_folder(local_folder(job.init_from), job.model)[1]  # a URI: copied to this node
    if job.model.upcycle_from:
        from forge_ray.models.upcycle import upcycle_folder

        return upcycle_folder(job.model.upcycle_from, job.model, seed=job.train.seed)
    from forge_ray.models import build_model
    from forge_ray.train.deepspeed_adapter import moe_layer

    return build_model(job.model, seed=job.train.seed, moe_layer=moe_layer).state_dict()


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's entry point: `config` is {"job": WorkerJob}."""
    run_worker(config["job"])


def run_worker(job: WorkerJob) -> None:
    import ray.train

    from forge_ray.models import build_model
    from forge_ray.train.checkpoint import load_local_weights, read_checkpoint, restore_optimizer
    from forge_ray.train.deepspeed_adapter import build_engine, moe_layer, zero_stage
    from forge_ray.train.step_trainer import StepTrainer

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    train, cfg = job.train, job.model
    threads = train.torch_threads or max(1, int(train.cpus_per_worker))
    torch.set_num_threads(threads)
    ep = cfg.moe.expert_parallel_size if cfg.family == "moe" else 1

    start_step, moments, state = 0, None, {}
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            weights, moments, state = read_checkpoint(d)
        start_step = int(state["step"])
        if state.get("plan_id") != job.plan.plan_id:
            raise RuntimeError(f"checkpoint was written for plan {state.get('plan_id')}, run has {job.plan.plan_id}")
    else:
        weights = initial_weights(job)
    model = build_model(cfg, ep_size=ep, moe_layer=moe_layer)  # the train room hands the model DeepSpeed-MoE
    model.activation_checkpointing = train.activation_checkpointing  # recompute blocks in backward
    if train.lora is not None:  # adapters on the chosen projections, the base frozen (docs/sft.md)
        from forge_ray.models.lora import apply_lora, lora_state

        torch.manual_seed(train.seed)  # the same adapter init on every rank
        apply_lora(model, train.lora)
        weights = {**lora_state(model), **weights}  # a checkpoint's adapters win over the fresh ones
    load_local_weights(model, weights)
    del weights
    engine, optimizer = build_engine(model, train, world)
    if moments is not None:
        restore_optimizer(engine, model, moments, adam_step=start_step)
        del moments
    if rank == 0:
        print(f"[train] rank 0 of {world}: {'resumed at step ' + str(start_step) if ckpt else 'fresh start'}"
              f", accumulation {train.accumulation(world)}, ep {ep}, ZeRO {zero_stage(train, world)}", flush=True)
    StepTrainer(job, engine, optimizer, model, rank=rank, world_size=world, start_step=start_step,
                tokens_seen=int(state.get("tokens_seen", 0)), threads=threads).train()
