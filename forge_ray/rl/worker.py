"""What each Ray Train worker runs for GRPO: the policy in a DeepSpeed engine, then the steps.

A step (`GRPOTrainer.train_step`), every rank in lock step:
  rank 0: step k's prompts (`PromptOrder`), G completions each from the rollout engines, rewards,
          group advantages -> broadcast to all ranks (`RolloutBatch`)
  every rank: its share of the completions in micro batches: log-probabilities under the policy
          (and the frozen reference when rl.kl_coef > 0), the clipped loss, backward; DeepSpeed
          all-reduces and steps at the last micro batch (`rl.updates_per_batch` times)
  rank 0: the new weights to the rollout engines (in memory: `RolloutPool.sync`), the step's record
Checkpoints are pre-training's (`train/checkpoint.py`): full weights and Adam moments and the step,
which is the prompt cursor; a restarted worker group first pushes the checkpoint's weights to the
engines (which may hold newer ones, or, restarted by Ray, the starting ones).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field

import torch

from forge_ray.config.model import ModelConfig
from forge_ray.config.rl import RLConfig
from forge_ray.config.train import TrainConfig
from forge_ray.rl.grpo import group_advantages, policy_loss, step_norm, token_logprobs
from forge_ray.rl.prompts import PromptCase, PromptOrder
from forge_ray.rl.rewards import Reward
from forge_ray.rl.rollout import RolloutPool


@dataclass
class GRPOJob:
    """Everything a worker needs, built on the driver (handles to the rollout engines included)."""

    model: ModelConfig
    train: TrainConfig
    rl: RLConfig
    run_dir: str
    init_from: str
    tokenizer_dir: str
    cases: list[PromptCase]
    prompt_ids: list[list[int]]
    pool: RolloutPool
    pad_id: int
    run_id: str  # a resume refuses a checkpoint of another run setup (stored as its plan_id)
    config_hash: str


@dataclass
class RolloutBatch:
    """One step's completions, as rank 0 hands them to every rank (consecutive groups of G)."""

    prompts: list[list[int]]  # per completion: its prompt's token ids
    completions: list[list[int]]
    rollout_logprobs: list[list[float]]
    advantages: list[float]
    valid: list[bool]  # False: its reward failed, the loss skips it
    stats: dict = field(default_factory=dict)  # rank 0's reward / length / timing numbers


def _pad_batch(seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    width = max(map(len, seqs))
    return torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs])


def micro_batch(batch: RolloutBatch, rows: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids / position_ids [B, T], completion mask and rollout log-probs [B, T-1], advantages [B].
    Target position p predicts token p + 1: a completion of length c after a prompt of length L
    fills positions L-1 .. L+c-2 of the mask."""
    seqs = [batch.prompts[i] + batch.completions[i] for i in rows]
    ids = _pad_batch(seqs, pad_id)
    B, T = ids.shape
    mask = torch.zeros(B, T - 1)
    rollout = torch.zeros(B, T - 1)
    for b, i in enumerate(rows):
        lo, c = len(batch.prompts[i]) - 1, len(batch.completions[i])
        if batch.valid[i] and c:
            mask[b, lo: lo + c] = 1.0
            rollout[b, lo: lo + c] = torch.tensor(batch.rollout_logprobs[i])
    return {"input_ids": ids, "position_ids": torch.arange(T).expand(B, T), "mask": mask,
            "rollout_logp": rollout, "adv": torch.tensor([batch.advantages[i] for i in rows])}


def completion_masks(batch: RolloutBatch) -> list[torch.Tensor]:
    """One [1, c] mask per valid completion: what `step_norm` counts (the same on every rank)."""
    return [torch.ones(1, len(c)) for c, v in zip(batch.completions, batch.valid, strict=True) if v and c]


class GRPOTrainer:
    """The GRPO steps of one Ray Train worker over a DeepSpeed engine (`run_grpo_worker` builds it)."""

    def __init__(self, job: GRPOJob, engine, optimizer, model, ref_model, *, rank: int, world_size: int, start_step: int):
        from transformers import AutoTokenizer

        self.job, self.rl, self.cfg = job, job.rl, job.train
        self.engine, self.optimizer, self.model, self.ref = engine, optimizer, model, ref_model
        self.rank, self.world, self.start_step = rank, world_size, start_step
        self.device = engine.device
        per_step = self.cfg.global_batch_size // self.rl.group_size
        self.order = PromptOrder(len(job.cases), per_step, self.rl.seed)
        self.accum = self.cfg.accumulation(world_size)
        if rank == 0:
            from forge_ray.train.metrics import MetricsWriter

            self.reward = Reward.from_config(self.rl.rewards)
            self.tokenizer = AutoTokenizer.from_pretrained(job.tokenizer_dir)
            self.writer = MetricsWriter(job.run_dir, tensorboard=False)

    # ---- the loop ---------------------------------------------------------------------------------

    def train(self) -> None:
        self.engine.train()
        if self.rank == 0 and self.start_step > 0:  # the engines may hold other weights than the checkpoint
            self.job.pool.sync(self.hf_weights(), self.start_step)
        for step in range(self.start_step, self.cfg.steps):
            t0 = time.perf_counter()
            batch = self.rollouts(step) if self.rank == 0 else None
            batch = self.broadcast(batch)
            t_roll = time.perf_counter() - t0
            sums = self.train_step(step, batch)
            t_train = time.perf_counter() - t0 - t_roll
            sync_s = self.job.pool.sync(self.hf_weights(), step + 1) if self.rank == 0 else 0.0
            if self.rank == 0:
                rec = self.record(step, batch, sums, t_roll, t_train, sync_s, time.perf_counter() - t0)
                if (step + 1) % self.cfg.log_every == 0 or self.should_checkpoint(step):
                    self.writer.write(rec)
            else:
                rec = {"step": step}
            if self.should_checkpoint(step):
                self.save_checkpoint(step, rec)
        if self.rank == 0:
            self.writer.close()

    def should_checkpoint(self, step: int) -> bool:
        return (step + 1) % self.cfg.checkpoint_every == 0 or step + 1 == self.cfg.steps

    # ---- rank 0: rollouts and rewards -------------------------------------------------------------

    def rollouts(self, step: int) -> RolloutBatch:
        pool, G = self.job.pool, self.rl.group_size
        idx = self.order.indices(step)
        prompts = [self.job.prompt_ids[i] for i in idx]
        groups, held = pool.generate(prompts)
        if any(h != step for h in held):  # an engine restarted by Ray holds its starting weights
            pool.sync(self.hf_weights(), step, only=pool.behind(step))
            groups, held = pool.generate(prompts)
        comps = [c for g in groups for c in g]
        cases = [self.job.cases[i] for i in idx for _ in range(G)]
        texts = self.tokenizer.batch_decode([c.token_ids for c in comps], skip_special_tokens=True)
        scored = self.reward.score(cases, texts)
        adv, valid = group_advantages(scored.totals, G, self.rl.scale_rewards)
        rewards = [r for r in scored.totals if r is not None]
        lengths = [len(c.token_ids) for c in comps]
        stats = {"reward_mean": sum(rewards) / max(1, len(rewards)),
                 "reward_std": float(torch.tensor(rewards).std()) if len(rewards) > 1 else 0.0,
                 "reward_failed": scored.failed, "reward_by_term": scored.by_term,
                 "response_len": sum(lengths) / len(lengths),
                 "truncated": sum(c.finish_reason == "length" for c in comps) / len(comps)}
        return RolloutBatch([prompts[i // G] for i in range(len(comps))], [c.token_ids for c in comps],
                            [c.logprobs for c in comps], adv.tolist(), valid.tolist(), stats)

    def broadcast(self, batch: RolloutBatch | None) -> RolloutBatch:
        if self.world == 1:
            return batch
        import torch.distributed as dist

        box = [batch]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # ---- every rank: the policy update ------------------------------------------------------------

    def train_step(self, step: int, batch: RolloutBatch) -> torch.Tensor:
        """Every rank trains on its contiguous share of the completions; returns the step's sums
        over all ranks: [tokens, clipped, kl, ratio, |logp gap|, gap tokens]."""
        from forge_ray.train.schedule import lr_at, set_lr

        set_lr(self.optimizer, lr_at(step, self.cfg))
        n = len(batch.completions)
        share = n // self.world
        mine = list(range(self.rank * share, (self.rank + 1) * share))
        mb = self.cfg.micro_batch_size
        micro = [micro_batch(batch, mine[lo: lo + mb], self.job.pad_id) for lo in range(0, share, mb)]
        norm = step_norm(completion_masks(batch), self.rl.loss_aggregation, self.rl.max_new_tokens)
        # DeepSpeed divides each micro batch's loss by the accumulation steps and averages gradients
        # over ranks: dividing by norm / (accum x world) makes the step's gradient that of sum / norm.
        scaled_norm = norm / (self.accum * self.world)
        old = [self.logprobs(m, grad=False) for m in micro] if self.rl.updates_per_batch > 1 else None
        ref = [self.logprobs(m, grad=False, model=self.ref) for m in micro] if self.ref is not None else None
        sums = torch.zeros(6, dtype=torch.float64)
        for update in range(self.rl.updates_per_batch):
            for i, m in enumerate(micro):
                m = {k: v.to(self.device) for k, v in m.items()}
                out = self.engine(m["input_ids"], m["position_ids"])
                logp = token_logprobs(out.logits, m["input_ids"], self.rl.temperature)
                parts = policy_loss(logp, old[i].to(self.device) if old else logp.detach(), m["adv"], m["mask"],
                                    clip_eps=self.rl.clip_eps, kl_coef=self.rl.kl_coef,
                                    aggregation=self.rl.loss_aggregation, norm=scaled_norm,
                                    ref_logp_BT=ref[i].to(self.device) if ref else None)
                self.engine.backward(parts.loss)
                self.engine.step()
                if update == 0:
                    sums[:4] += parts.sums.cpu()
                    raw = logp.detach() if self.rl.temperature == 1.0 else token_logprobs(
                        out.logits.detach(), m["input_ids"])
                    sums[4] += ((raw - m["rollout_logp"]).abs() * m["mask"]).sum().double().cpu()
                    sums[5] += m["mask"].sum().double().cpu()
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(sums)
        return sums

    def logprobs(self, m: dict, *, grad: bool, model=None) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            out = (model or self.engine)(m["input_ids"].to(self.device), m["position_ids"].to(self.device))
            return token_logprobs(out.logits, m["input_ids"].to(self.device), self.rl.temperature).detach().cpu()

    # ---- weights, records, checkpoints ------------------------------------------------------------

    def hf_weights(self) -> dict[str, torch.Tensor]:
        """The policy's full weights under HF names, LoRA merged: what vLLM loads. Under ZeRO 1/2
        every rank holds the full updated parameters after the step."""
        from forge_ray.models.hf import to_hf_state
        from forge_ray.models.lora import is_lora_name, merge_lora_weights

        state = {k: v.detach() for k, v in self.model.state_dict().items()}
        if any(is_lora_name(k) for k in state):
            state = merge_lora_weights(state, self.cfg.lora.scale)
        return {k: v.to("cpu", torch.float32).contiguous() for k, v in to_hf_state(state, self.job.model).items()}

    def record(self, step: int, batch: RolloutBatch, sums: torch.Tensor, t_roll: float, t_train: float,
               sync_s: float, step_s: float) -> dict:
        tokens = max(float(sums[0]), 1.0)
        n = len(batch.completions)
        return {"objective": "grpo", "step": step, **batch.stats,
                "kl": float(sums[2]) / tokens, "clip_fraction": float(sums[1]) / tokens,
                "ratio_mean": float(sums[3]) / tokens,
                "logprob_gap": float(sums[4]) / max(float(sums[5]), 1.0),
                "rollout_s": t_roll, "train_s": t_train, "sync_s": sync_s, "step_time_s": step_s,
                "sync_share": sync_s / step_s, "completions_per_s": n / step_s, "completions": n,
                "world_size": self.world, "start_step": self.start_step, "pid": os.getpid(), "time": time.time()}

    def save_checkpoint(self, step: int, rec: dict) -> None:
        import ray.train

        from forge_ray.train import deepspeed_adapter as ds
        from forge_ray.train.checkpoint import CheckpointState, gather_full_state, write_checkpoint

        weights, moments = gather_full_state(self.engine, self.model)
        numbers = {k: float(v) for k, v in rec.items() if isinstance(v, int | float)}
        state = CheckpointState(step=step + 1, tokens_seen=0, plan_id=self.job.run_id, seed=self.rl.seed,
                                world_size=self.world, expert_parallel_size=1, config_hash=self.job.config_hash,
                                metrics=numbers, rng_torch_seed=self.rl.seed, dtype=ds.training_dtype(self.cfg))
        with tempfile.TemporaryDirectory(prefix="forge-ckpt-") as tmp:
            if self.rank == 0:
                write_checkpoint(tmp, weights, moments, state)
            del weights, moments
            ckpt = ray.train.Checkpoint.from_directory(tmp) if self.rank == 0 else None
            ray.train.report(numbers, checkpoint=ckpt)


def grpo_loop_per_worker(config: dict) -> None:
    """Ray Train's entry point: `config` is {"job": GRPOJob}."""
    run_grpo_worker(config["job"])


def run_grpo_worker(job: GRPOJob) -> None:
    import ray.train

    from forge_ray.models import build_model
    from forge_ray.models.hf import load_hf_folder
    from forge_ray.registry import local_folder
    from forge_ray.train.checkpoint import load_local_weights, read_checkpoint, restore_optimizer
    from forge_ray.train.deepspeed_adapter import build_engine

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(job.train.torch_threads or max(1, int(job.train.cpus_per_worker)))
    start_weights = load_hf_folder(local_folder(job.init_from), job.model)[1]
    start_step, moments = 0, None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            weights, moments, state = read_checkpoint(d)
        start_step = int(state["step"])
        if state.get("plan_id") != job.run_id:
            raise RuntimeError(f"checkpoint was written for run setup {state.get('plan_id')}, this run is {job.run_id}")
    else:
        weights = start_weights
    model = build_model(job.model)
    if job.train.lora is not None:
        from forge_ray.models.lora import apply_lora, lora_state

        torch.manual_seed(job.train.seed)
        apply_lora(model, job.train.lora)
        weights = {**lora_state(model), **weights}
    ref = None
    if job.rl.kl_coef > 0:  # the frozen starting policy
        ref = build_model(job.model)
        load_local_weights(ref, start_weights)
        ref.eval().requires_grad_(False)
    load_local_weights(model, weights)
    del weights, start_weights
    engine, optimizer = build_engine(model, job.train, world)
    if moments is not None:
        restore_optimizer(engine, model, moments, adam_step=start_step)
    if rank == 0:
        print(f"[rl] rank 0 of {world}: {'resumed at step ' + str(start_step) if ckpt else 'fresh start'}", flush=True)
    GRPOTrainer(job, engine, optimizer, model, ref, rank=rank, world_size=world, start_step=start_step).train()
