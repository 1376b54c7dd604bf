"""One worker's training loop in named steps (the shape of torchtitan's `Trainer`).

    trainer = StepTrainer(job, engine, optimizer, model, rank=r, world_size=w, start_step=k, ...)
    trainer.train()        # every step from k to the plan's end, with logs, reports, checkpoints

- `train()` reads top to bottom: next batch -> `train_step` -> consumption record -> metrics ->
  log / checkpoint / report, each on its cadence (`should_log`, `should_checkpoint`, `should_report`)
- `train_step(step, micro_batches)`: reseed from (seed, step, rank), set the learning rate,
  accumulate over the micro batches (DeepSpeed clips and steps the optimizer after the last), the
  gradient norm, the step's metrics summed over ranks
- `forward_backward(batch) -> LossParts`: one micro batch; the loss is `loss_fn` (`train/loss.py`),
  which instruction tuning and RL replace while reusing these two methods
"""

from __future__ import annotations

import tempfile
import time
import zlib
from dataclasses import dataclass

import ray.train
import torch

from forge_ray.mixture import ConsumptionRecord, TrainStream
from forge_ray.train import deepspeed_adapter as ds
from forge_ray.train.checkpoint import CheckpointState, gather_full_state, write_checkpoint
from forge_ray.train.loss import CausalLMLoss, LossParts, Objective
from forge_ray.train.metrics import (
    MetricsWriter,
    StepAccumulator,
    StepRecord,
    format_line,
    loss_record,
    numeric_metrics,
    peak_tflops,
)
from forge_ray.train.schedule import lr_at, set_lr
from forge_ray.train.worker import WorkerJob


def step_seed(seed: int, step: int, rank: int) -> int:
    return zlib.crc32(f"{seed}/{step}/{rank}".encode()) & 0x7FFFFFFF


def total_grad_norm(model: torch.nn.Module) -> float:
    """L2 norm of all gradients of a model on one rank (what clipping compares with its threshold)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def _timed(stream):
    """(start, seconds waited for the batch, step, micro batches) per step: a step's time counts its wait."""
    batches = iter(stream)
    while True:
        t0 = time.perf_counter()
        try:
            step, micro_batches = next(batches)
        except StopIteration:
            return
        yield t0, time.perf_counter() - t0, step, micro_batches


@dataclass
class StepOutcome:
    sums: dict[str, torch.Tensor]  # the step's loss / token / expert sums over all ranks
    lr: float
    grad_norm: float  # before clipping


class StepTrainer:
    """The steps of one Ray Train worker over a DeepSpeed engine (built by `worker.run_worker`)."""

    def __init__(self, job: WorkerJob, engine, optimizer, model, *, rank: int, world_size: int,
                 start_step: int, tokens_seen: int, threads: int, loss_fn: Objective | None = None):
        self.job, self.cfg, self.plan = job, job.train, job.plan
        self.engine, self.optimizer, self.model = engine, optimizer, model
        self.rank, self.world_size, self.start_step, self.tokens_seen = rank, world_size, start_step, tokens_seen
        self.device = engine.device
        moe = job.model.family == "moe"
        self.aux_coef = job.model.moe.aux_loss_coef if moe else 0.0
        self.moe_shape = (model.num_moe_layers, job.model.moe.num_experts) if moe else None
        self.loss_fn = loss_fn or CausalLMLoss(self.plan.pad_token_id, self.aux_coef)
        # ZeRO computes the global gradient norm as it clips; DeepSpeed's stage 0 clips without keeping it
        self.own_grad_norm = not ds.keeps_grad_norm(engine)
        self.peak_flops = peak_tflops(self.cfg.peak_tflops_per_worker, self.cfg.use_gpu, threads) * 1e12
        self.step_tokens = self.plan.global_batch_size * self.plan.seq_len
        self.writer = MetricsWriter(job.run_dir, self.cfg.tensorboard) if rank == 0 else None

    def train(self) -> None:
        """Every step of the plan from the start step, then the metrics sinks closed."""
        stream = TrainStream(self.plan, self.rank, self.world_size, self.cfg.micro_batch_size,
                             start_step=self.start_step)
        # What each step trained on, per rank: `check_consumption(plan, run_dir)` proves the run read
        # exactly its plan across restarts and resizes.
        consumed = ConsumptionRecord(self.job.run_dir, rank=self.rank, world_size=self.world_size,
                                     start_step=self.start_step)
        self.engine.train()
        for t0, data_wait, step, micro_batches in _timed(stream):
            outcome = self.train_step(step, micro_batches)
            consumed.add(step, micro_batches)
            self.tokens_seen += self.step_tokens
            rec = self.step_record(step, outcome, time.perf_counter() - t0, data_wait)
            if self.should_log(step):
                self.log(rec)
            if self.should_checkpoint(step):
                self.save_checkpoint(step, rec)
            elif self.should_report(step):
                self.report(rec)
        if self.writer is not None:
            self.writer.close()

    def train_step(self, step: int, micro_batches: list[dict]) -> StepOutcome:
        """One optimizer step over this rank's micro batches; collective (metrics over ranks)."""
        torch.manual_seed(step_seed(self.cfg.seed, step, self.rank))
        lr = lr_at(step, self.cfg)
        set_lr(self.optimizer, lr)
        acc = StepAccumulator(len(self.plan.sources), self.moe_shape)
        grad_norm = None
        for i, batch in enumerate(micro_batches):
            parts = self.forward_backward(batch)
            if self.own_grad_norm and i == len(micro_batches) - 1:
                grad_norm = total_grad_norm(self.model)  # before the boundary step clips
            self.engine.step()  # the optimizer steps (after clipping) at the accumulation boundary only
            acc.add(parts.token_loss_BT, parts.mask_BT, batch["source"], parts.aux_loss, parts.expert_counts)
        if not self.own_grad_norm:
            grad_norm = ds.global_grad_norm(self.engine)
        return StepOutcome(acc.reduce(self.world_size, self.device), lr, float(grad_norm or 0.0))

    def forward_backward(self, batch: dict[str, torch.Tensor]) -> LossParts:
        """One micro batch: forward, `loss_fn`, backward (DeepSpeed scales it for accumulation)."""
        batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out = self.engine(batch["input_ids"], batch["position_ids"])
        parts = self.loss_fn(out, batch)
        self.engine.backward(parts.loss)
        return parts

    def step_record(self, step: int, outcome: StepOutcome, step_time: float, data_wait: float) -> StepRecord:
        tps = self.step_tokens / step_time
        return StepRecord(
            **loss_record(outcome.sums, self.plan.sources, self.aux_coef),
            step=step, lr=outcome.lr, grad_norm=outcome.grad_norm, tokens_per_s=tps, step_time_s=step_time,
            data_wait_s=data_wait, mfu=self.job.flops_per_token * tps / (self.peak_flops * self.world_size),
            world_size=self.world_size, start_step=self.start_step, tokens_seen=self.tokens_seen, time=time.time(),
            target_tokens=int(outcome.sums["tokens"][0]),
        )

    # ---- cadence ----------------------------------------------------------------------------------

    def should_checkpoint(self, step: int) -> bool:
        done = step + 1
        return done % self.cfg.checkpoint_every == 0 or done == self.plan.total_steps

    def should_log(self, step: int) -> bool:
        """Rank 0 logs every `log_every` steps and with every checkpoint."""
        return self.writer is not None and ((step + 1) % self.cfg.log_every == 0 or self.should_checkpoint(step))

    def should_report(self, step: int) -> bool:
        # Not every step: Train V2's result queue holds one report until its controller polls.
        return (step + 1) % self.cfg.report_every == 0

    def log(self, rec: StepRecord) -> None:
        print(format_line(rec, self.plan.total_steps), flush=True)
        self.writer.write(rec)

    def save_checkpoint(self, step: int, rec: StepRecord) -> None:
        """Gather the full state (collective), rank 0 writes it, every rank reports it to Ray Train."""
        weights, moments = gather_full_state(self.engine, self.model)
        state = CheckpointState(
            step=step + 1, tokens_seen=self.tokens_seen, plan_id=self.plan.plan_id, seed=self.cfg.seed,
            world_size=self.world_size, expert_parallel_size=self.model.ep_size, config_hash=self.job.config_hash,
            metrics=numeric_metrics(rec), rng_torch_seed=step_seed(self.cfg.seed, step, 0),
            dtype=ds.training_dtype(self.cfg),
        )
        with tempfile.TemporaryDirectory(prefix="forge-ckpt-") as tmp:
            if self.rank == 0:
                write_checkpoint(tmp, weights, moments, state)
            del weights, moments
            self.report(rec, checkpoint_dir=tmp if self.rank == 0 else None)

    def report(self, rec: StepRecord, checkpoint_dir: str | None = None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(numeric_metrics(rec), checkpoint=checkpoint, checkpoint_upload_fn=verified_upload)


def verified_upload(checkpoint: ray.train.Checkpoint, dir_name: str) -> ray.train.Checkpoint:
    """Ray Train's own upload, then every file checked on the store (pyarrow's copy can drop a
    failed part silently): a short checkpoint fails the report instead of being resumed from."""
    from ray.train.v2._internal.execution.context import get_train_context

    from forge_ray.storage import local_sizes, verify_copy

    storage = get_train_context().get_storage()
    persisted = storage.persist_current_checkpoint(checkpoint, dir_name)
    verify_copy(local_sizes(checkpoint.path), persisted.path, storage.storage_filesystem)
    return persisted
