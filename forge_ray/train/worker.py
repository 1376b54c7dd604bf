"""The loop each Ray Train worker runs: model -> DeepSpeed engine -> the mixture stream -> steps.

A (re)started worker group resumes from Ray Train's latest checkpoint at whatever world size it
now has: the checkpoint holds full per-parameter state (`checkpoint.py`) and the step, which is
the data cursor of the mixture plan (global batch k is the same samples at any world size).
"""

from __future__ import annotations

import tempfile
import time
import zlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from forge_ray.config.model import ModelConfig
from forge_ray.config.train import TrainConfig


@dataclass
class WorkerJob:
    """Everything a worker needs, built on the driver and shipped (pickled) to each worker."""

    model: ModelConfig  # resolved: vocab size set, init_from's architecture applied
    train: TrainConfig
    plan: Any  # forge_ray.mixture.MixturePlan
    run_dir: str
    init_from: str | None  # HF folder for the initial weights (None: seeded random init)
    flops_per_token: float
    config_hash: str


def lm_token_loss(logits_BTV: torch.Tensor, labels_BT: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token next-token cross-entropy [B, T-1] and its mask (padding is not a target)."""
    B, T, V = logits_BTV.shape
    targets = labels_BT[:, 1:]
    loss = F.cross_entropy(logits_BTV[:, :-1].reshape(-1, V).float(), targets.reshape(-1), reduction="none")
    return loss.view(B, T - 1), (targets != pad_id).to(loss.dtype)


def total_grad_norm(model: torch.nn.Module) -> float:
    """L2 norm of all gradients of a model on one rank (what clipping compares with its threshold)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def step_seed(seed: int, step: int, rank: int) -> int:
    return zlib.crc32(f"{seed}/{step}/{rank}".encode()) & 0x7FFFFFFF


def initial_weights(job: WorkerJob) -> dict[str, torch.Tensor]:
    """Full weights to start from: an HF checkpoint folder, or the seeded init (same on every rank)."""
    if job.init_from:
        from forge_ray.models.hf import load_hf_folder

        return load_hf_folder(job.init_from, job.model)[1]
    from forge_ray.models import build_model

    return build_model(job.model, seed=job.train.seed).state_dict()


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's entry point: `config` is {"job": WorkerJob}."""
    run_worker(config["job"])


def run_worker(job: WorkerJob) -> None:
    import ray.train

    from forge_ray.models import build_model
    from forge_ray.train.checkpoint import load_local_weights, read_checkpoint, restore_optimizer
    from forge_ray.train.deepspeed_adapter import build_engine, zero_stage

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
    model = build_model(cfg, ep_size=ep)
    load_local_weights(model, weights)
    del weights
    engine, optimizer = build_engine(model, train, world)
    if moments is not None:
        restore_optimizer(engine, model, moments, adam_step=start_step)
        del moments
    if rank == 0:
        print(f"[train] rank 0 of {world}: {'resumed at step ' + str(start_step) if ckpt else 'fresh start'}"
              f", accumulation {train.accumulation(world)}, ep {ep}, ZeRO {zero_stage(train, world)}", flush=True)
    _run_steps(job, engine, optimizer, model, rank, world, start_step, state, threads)


def _run_steps(job: WorkerJob, engine, optimizer, model, rank: int, world: int, start_step: int,
               state: dict, threads: int) -> None:
    import ray.train

    from forge_ray.mixture import ConsumptionRecord, TrainStream
    from forge_ray.train.checkpoint import gather_full_state, save_checkpoint
    from forge_ray.train.deepspeed_adapter import lr_at, set_lr
    from forge_ray.train.metrics import MetricsWriter, StepAccumulator, format_line, peak_tflops, step_record

    train, cfg, plan = job.train, job.model, job.plan
    sources = plan.sources
    moe_shape = (model.num_moe_layers, cfg.moe.num_experts) if cfg.family == "moe" else None
    aux_coef = cfg.moe.aux_loss_coef if cfg.family == "moe" else 0.0
    writer = MetricsWriter(job.run_dir, train.tensorboard) if rank == 0 else None
    peak = peak_tflops(train.peak_tflops_per_worker, train.use_gpu, threads) * 1e12
    device = engine.device
    tokens_seen = int(state.get("tokens_seen", 0))
    stream = TrainStream(plan, rank, world, train.micro_batch_size, start_step=start_step)
    # What each step trained on, per rank: `check_consumption(plan, run_dir)` proves the run read
    # exactly its plan across restarts and resizes.
    consumed = ConsumptionRecord(job.run_dir, rank=rank, world_size=world, start_step=start_step)
    # ZeRO computes the global gradient norm as it clips; DeepSpeed's stage 0 clips without keeping it
    own_grad_norm = engine.zero_optimization_stage() == 0
    it = iter(stream)
    engine.train()
    while True:
        t0 = time.perf_counter()
        try:
            step, micro_batches = next(it)
        except StopIteration:
            break
        t_data = time.perf_counter() - t0
        torch.manual_seed(step_seed(train.seed, step, rank))
        lr = lr_at(step, train)
        set_lr(optimizer, lr)
        acc = StepAccumulator(len(sources), moe_shape)
        grad_norm = None
        for i, batch in enumerate(micro_batches):
            ids = batch["input_ids"].to(device)
            out = engine(ids, batch["position_ids"].to(device))
            tok_loss, mask = lm_token_loss(out.logits, batch["labels"].to(device), plan.pad_token_id)
            lm = (tok_loss * mask).sum() / mask.sum().clamp(min=1)
            loss = lm + aux_coef * out.aux_loss
            engine.backward(loss)
            if own_grad_norm and i == len(micro_batches) - 1:
                grad_norm = total_grad_norm(model)
            engine.step()
            acc.add(tok_loss, mask, batch["source"], out.aux_loss, out.expert_counts)
        if not own_grad_norm:
            grad_norm = engine.get_global_grad_norm()
        consumed.add(step, micro_batches)
        reduced = acc.reduce(world, device)
        step_time = time.perf_counter() - t0
        step_tokens = plan.global_batch_size * plan.seq_len
        tokens_seen += step_tokens
        done = step + 1
        rec = step_record(reduced, sources, aux_coef)
        tps = step_tokens / step_time
        rec.update(
            step=step, lr=lr, grad_norm=float(grad_norm or 0.0), tokens_per_s=tps, step_time_s=step_time,
            data_wait_s=t_data, mfu=job.flops_per_token * tps / (peak * world), world_size=world,
            start_step=start_step, tokens_seen=tokens_seen, time=time.time(),
        )
        is_ckpt = done % train.checkpoint_every == 0 or done == plan.total_steps
        if writer is not None and (done % train.log_every == 0 or is_ckpt):
            print(format_line(rec, plan.total_steps), flush=True)
            writer.write(rec)
        report = {k: v for k, v in rec.items() if isinstance(v, int | float)}
        if is_ckpt:
            weights, moments = gather_full_state(engine, model)
            meta = {"step": done, "tokens_seen": tokens_seen, "plan_id": plan.plan_id, "seed": train.seed,
                    "world_size": world, "expert_parallel_size": model.ep_size, "config_hash": job.config_hash,
                    "metrics": report, "rng_torch_seed": step_seed(train.seed, step, 0)}
            with tempfile.TemporaryDirectory(prefix="forge-ckpt-") as tmp:
                checkpoint = None
                if rank == 0:
                    save_checkpoint(tmp, weights, moments, meta)
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(report, checkpoint=checkpoint)
            del weights, moments
        elif done % train.report_every == 0:
            # Not every step: Train V2's result queue holds one report until its controller polls.
            ray.train.report(report)
    if writer is not None:
        writer.close()
