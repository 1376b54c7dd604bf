"""StepTrainer's pieces on a real DeepSpeed engine (1 rank over gloo, in a spawned process; no Ray).

`train_step` with the pre-training objective trains on the loss it reports, and an objective
passed as `loss_fn` is the one trained and measured: the way instruction tuning and RL reuse
`train_step` / `forward_backward` with their own losses. test_train_run.py covers `train()`.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import torch
import torch.multiprocessing as mp

from forge_ray.cluster import free_port

V, T, MICRO, G = 64, 16, 2, 4


def _batches(step: int) -> list[dict]:
    ids = torch.randint(1, V, (G, T), generator=torch.Generator().manual_seed(step))
    return [{"input_ids": x, "position_ids": torch.arange(T).expand(MICRO, T), "labels": x,
             "source": torch.zeros(MICRO, dtype=torch.long)} for x in ids.split(MICRO)]


def _second_half_only(out, batch):
    """An SFT-like objective: only the second half of each sequence is a target."""
    from forge_ray.train.loss import LossParts, lm_token_loss

    tok, mask = lm_token_loss(out.logits, batch["labels"], pad_id=0)
    mask[:, : T // 2] = 0
    return LossParts((tok * mask).sum() / mask.sum(), tok, mask, out.aux_loss, out.expert_counts)


def _target_loss(model, objective) -> float:
    """The objective's mean loss over its own targets of step 0's batch, on the current weights."""
    with torch.no_grad():
        parts = [objective(model(b["input_ids"], b["position_ids"]), b) for b in _batches(0)]
    return float(sum((p.token_loss_BT * p.mask_BT).sum() / p.mask_BT.sum() for p in parts) / len(parts))


def _run(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    from forge_ray.config.model import ModelConfig
    from forge_ray.config.train import TrainConfig
    from forge_ray.models import build_model
    from forge_ray.train.deepspeed_adapter import build_engine, moe_layer
    from forge_ray.train.loss import CausalLMLoss
    from forge_ray.train.schedule import lr_at
    from forge_ray.train.step_trainer import StepTrainer
    from forge_ray.train.worker import WorkerJob

    cfg = ModelConfig(family="moe", vocab_size=V, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                      ffn_hidden_size=48, moe={"num_experts": 4})
    train = TrainConfig(micro_batch_size=MICRO, global_batch_size=G, max_workers=1, lr=1e-2, warmup_steps=2,
                        steps=4, tensorboard=False)
    plan = SimpleNamespace(sources=["docs"], pad_token_id=0, global_batch_size=G, seq_len=T, total_steps=4)
    job = WorkerJob(model=cfg, train=train, plan=plan, run_dir=out_dir, init_from=None, flops_per_token=1.0,
                    config_hash="test")
    results = {}
    for name, loss_fn in (("lm", None), ("second_half", _second_half_only)):
        model = build_model(cfg, seed=0, moe_layer=moe_layer)
        engine, optimizer = build_engine(model, train, 1)
        trainer = StepTrainer(job, engine, optimizer, model, rank=0, world_size=1, start_step=0, tokens_seen=0,
                              threads=1, loss_fn=loss_fn)
        engine.train()
        objective = loss_fn or CausalLMLoss(0, cfg.moe.aux_loss_coef)

        before = _target_loss(model, objective)
        first = trainer.train_step(0, _batches(0))
        after = _target_loss(model, objective)
        rec = trainer.step_record(0, first, step_time=1.0, data_wait=0.0)
        results[name] = {"before": before, "after": after,
                         "lm_loss": rec["lm_loss"], "tokens": float(first.sums["tokens"][0]),
                         "lr": first.lr, "lr_expected": lr_at(0, train), "grad_norm": first.grad_norm,
                         "expert_tokens": rec["expert_tokens"]}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f)
    torch.distributed.destroy_process_group()


def test_train_step_trains_the_objective_it_is_given(tmp_path):
    mp.spawn(_run, args=(free_port(), str(tmp_path)), nprocs=1)
    r = json.loads((tmp_path / "results.json").read_text())
    lm, half = r["lm"], r["second_half"]
    for got in (lm, half):
        assert got["lr"] == got["lr_expected"] and got["grad_norm"] > 0
        # the loss measured by the step is the objective's on these weights, and the step lowered it
        assert abs(got["lm_loss"] - got["before"]) < 1e-4, got
        assert got["after"] < got["before"], got
        assert sum(got["expert_tokens"]) == G * T * 2 * 2  # every token to top-2 experts in 2 MoE layers
    # the objective decides which tokens are targets: all T-1 per row, or the second half only
    assert lm["tokens"] == G * (T - 1) and half["tokens"] == G * (T - 1 - T // 2)
