"""The driver side of a GRPO run: plan it (every check before any engine starts), start the rollout
engines, fit on Ray Train, export.

    result = run_grpo(config)                  # config.train.objective == "grpo"; a connected cluster
    exported = export_grpo(result, config)     # a registry candidate; lineage: base, prompts, run

The run lives in `<storage_root>/runs/<run>/` like pre-training's: Ray Train's checkpoints,
`run.json`, `metrics.jsonl` (one GRPO record per logged step: reward, KL, response length, clip
fraction, rollout / trainer log-probability gap, sync time and its share of the step).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass

from forge_ray.config import ForgeConfig, config_hash
from forge_ray.config.model import ModelConfig
from forge_ray.errors import ConfigError
from forge_ray.rl.prompts import PromptCase, PromptError, check_held_out, load_prompt_cases, tokenize_prompts
from forge_ray.rl.rewards import Reward
from forge_ray.rl.worker import GRPOJob, grpo_loop_per_worker
from forge_ray.storage import Storage

log = logging.getLogger(__name__)


@dataclass
class GRPOResult:
    run: str
    run_dir: str
    checkpoint_dir: str
    model: ModelConfig
    metrics: list[dict]  # latest record per logged step
    wall_s: float
    prompts_sha256: str


@dataclass
class GRPOPlan:
    job_parts: dict  # GRPOJob's fields but the rollout pool
    model_dir: str  # init_from, on this node
    prompts_sha256: str
    held_out: list[PromptCase]


def expand(uri: str, storage: Storage) -> str:
    return uri.replace("{storage_root}", storage.uri)


def plan_grpo(config: ForgeConfig, storage: Storage, run: str) -> GRPOPlan:
    """Model, tokenizer, prompts, rewards and the held-out suite checked; `run.json` written."""
    from transformers import AutoTokenizer

    from forge_ray.models.hf import model_config_from_hf
    from forge_ray.registry import local_folder

    rl, t = config.rl, config.train
    try:
        model_dir = local_folder(config.model.init_from)
        model = model_config_from_hf(model_dir, config.model)
    except (OSError, ValueError) as e:
        raise ConfigError("model.init_from", [f"model.init_from: cannot use {config.model.init_from!r}: {e}"]) from None
    if model.family == "moe":
        raise ConfigError("model.init_from", ["model.init_from: GRPO needs a dense policy (docs/rl.md); "
                                              f"{config.model.init_from} is an MoE model"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts_uri = expand(rl.prompts, storage)
    cases = load_prompt_cases(prompts_uri)
    Reward.from_config(rl.rewards)  # a function that cannot be imported fails here, before any engine
    prompt_ids = tokenize_prompts(cases, tokenizer)
    too_long = [c.id for c, p in zip(cases, prompt_ids, strict=True) if len(p) + rl.max_new_tokens > rl.max_model_len]
    if too_long:
        raise PromptError("rl.prompts", [
            f"rl.prompts: {len(too_long)} prompt(s) (e.g. {too_long[:3]}) plus rl.max_new_tokens ({rl.max_new_tokens}) "
            f"exceed rl.max_model_len ({rl.max_model_len})"])
    held_out: list[PromptCase] = []
    if rl.eval_suite:
        held_out = load_prompt_cases(expand(rl.eval_suite, storage), "rl.eval_suite")
        check_held_out(cases, held_out, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    per_step = t.global_batch_size // rl.group_size
    digest = hashlib.sha256("\n".join(json.dumps(c.raw(), sort_keys=True) for c in cases).encode()).hexdigest()
    run_id = hashlib.sha256(f"{config_hash(config)}/{digest}".encode()).hexdigest()[:16]
    run_dir = storage.location("runs", run)
    storage.write_json(f"runs/{run}/run.json", {
        "run": run, "objective": "grpo", "base": config.model.init_from, "prompts": prompts_uri,
        "prompts_sha256": digest, "prompts_count": len(cases), "prompts_per_step": per_step,
        "model": json.loads(model.model_dump_json()), "config": json.loads(config.model_dump_json()),
        "config_hash": config_hash(config)})
    print(f"[rl] {len(cases)} prompts, {per_step} per step x G={rl.group_size} completions, {t.steps} steps, "
          f"{rl.engines} rollout engine(s); rewards: "
          + ", ".join(f"{r.kind} x{r.weight:g}" for r in rl.rewards), flush=True)
    parts = dict(model=model, train=t, rl=rl, run_dir=run_dir, init_from=config.model.init_from,
                 tokenizer_dir=model_dir, cases=cases, prompt_ids=prompt_ids, pad_id=int(pad), run_id=run_id,
                 config_hash=config_hash(config))
    return GRPOPlan(parts, model_dir, digest, held_out)


def run_grpo(config: ForgeConfig, storage: Storage | None = None) -> GRPOResult:
    """Plan, start the rollout engines, fit on the connected Ray cluster, stop the engines."""
    from forge_ray.rl.rollout import RolloutPool
    from forge_ray.train.driver import TrainError, _fit, default_run_name, torch_trainer
    from forge_ray.train.metrics import read_metrics
    from forge_ray.train.progress import StepFollower

    storage = storage or Storage(config.project.storage_root)
    storage.check_writable()
    t = config.train
    run = t.run_name or default_run_name(config)
    plan = plan_grpo(config, storage, run)
    pool = RolloutPool.start(plan.model_dir, config.rl)
    try:
        job = GRPOJob(**plan.job_parts, pool=pool)
        trainer = torch_trainer(grpo_loop_per_worker, job, t, run, storage)
        start = time.perf_counter()
        result = _fit(trainer, StepFollower(job.run_dir, t.steps, line=rl_step_line))
        wall = time.perf_counter() - start
    finally:
        pool.shutdown()
    if result.error is not None or result.checkpoint is None:
        raise TrainError(f"run {run} failed: {result.error or 'no checkpoint was reported'}")
    ckpt = result.checkpoint.path
    return GRPOResult(run, job.run_dir, ckpt if storage.is_local else storage.fs.unstrip_protocol(ckpt),
                      job.model, read_metrics(job.run_dir), wall, plan.prompts_sha256)


def rl_step_line(rec: dict, total_steps: int) -> str:
    """`[rl] step 3/40  reward 0.375 (kpi 0.375)  kl 0.001  len 7.2  gap 0.002  sync 14 ms (3%)  1.9 compl/s`."""
    terms = ", ".join(f"{k} {v:.3f}" for k, v in rec.get("reward_by_term", {}).items())
    failed = f"  failed {rec['reward_failed']}" if rec.get("reward_failed") else ""
    return (f"[rl] step {rec['step'] + 1:>4}/{total_steps}  reward {rec['reward_mean']:.3f} ({terms}){failed}"
            f"  kl {rec['kl']:.4f}  len {rec['response_len']:.1f}  gap {rec['logprob_gap']:.4f}"
            f"  sync {rec['sync_s'] * 1e3:.0f} ms ({rec['sync_share']:.0%})  {rec['completions_per_s']:.1f} compl/s"
            f"  w={rec['world_size']}")


def export_grpo(result: GRPOResult, config: ForgeConfig, storage: Storage | None = None, version: str | None = None):
    """The final checkpoint as a registry candidate whose lineage names the base and the prompts."""
    from transformers import AutoTokenizer

    from forge_ray.export.version import TokenizerFiles, publish_checkpoint
    from forge_ray.registry import local_folder

    storage = storage or Storage(config.project.storage_root)
    folder = local_folder(config.model.init_from)
    tok = AutoTokenizer.from_pretrained(folder)
    files = TokenizerFiles(folder, int(tok.eos_token_id), tok.bos_token_id, tok.pad_token_id)
    final = result.metrics[-1] if result.metrics else {}
    metrics = {k: final[k] for k in ("step", "reward_mean", "kl", "response_len", "logprob_gap", "sync_s")
               if k in final}
    metrics["wall_s"] = round(result.wall_s, 2)
    lineage = {"objective": "grpo", "base": config.model.init_from, "prompts": expand(config.rl.prompts, storage),
               "prompts_sha256": result.prompts_sha256}
    return publish_checkpoint(result.checkpoint_dir, config, storage, model=result.model, run=result.run,
                              tokenizer=files, lineage=lineage, metrics=metrics, version=version)


def train_and_gate(config: ForgeConfig, storage: Storage | None = None) -> dict:
    """`forge train` for GRPO: run, export, then the held-out gate (rl.eval_suite) against the base.
    Returns {"result", "exported", "gate"} (gate None without an eval suite or an export)."""
    from forge_ray.rl.gate import gate_against_base

    storage = storage or Storage(config.project.storage_root)
    result = run_grpo(config, storage)
    last = result.metrics[-1] if result.metrics else {}
    print(f"[rl] run {result.run}: {len(result.metrics)} steps logged, final reward "
          f"{last.get('reward_mean', float('nan')):.3f}, {result.wall_s:.0f} s; checkpoint {result.checkpoint_dir}",
          flush=True)
    if not config.train.export:
        return {"result": result, "exported": None, "gate": None}
    exported = export_grpo(result, config, storage)
    print(f"[rl] exported version {exported.model}/{exported.version} (candidate): {exported.path}", flush=True)
    gate = gate_against_base(config, storage, exported) if config.rl.eval_suite else None
    return {"result": result, "exported": exported, "gate": gate}
