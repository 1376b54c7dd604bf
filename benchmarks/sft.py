"""Instruction-tuning benchmark: the held-out KPI before and after SFT, forge's SFT path against a
plain PyTorch loop, and LoRA against full fine-tuning.

    .venv/bin/python benchmarks/sft.py [--quick]

1. `kpi_before` / `kpi_after`: the embedded held-out instruction suite
   (`forge_ray.corpora.instructions.heldout_cases`, tasks the training set teaches, drawn with another
   seed) scored on the base model and on its SFT version, greedy, `contains`. Goal: after >= before + 0.3.
   The base is a seeded random-init tiny dense model with a forge-trained tokenizer (no chat
   template: forge's default is written into the SFT dataset).
2. `ratio_vs_plain`: tokens/s of `run_training` with `train.objective: sft` (1 worker, Ray Train,
   DeepSpeed, the mixture stream of masked batches) over a single-process `torch.optim.AdamW` loop on
   the same model, the same masked batches (pre-loaded) and thread count, in the same run. Goal >= 0.95.
3. LoRA (rank 8 on every projection) vs full fine-tuning: tokens/s of the two forge runs, and peak
   memory of one training process each (a fresh subprocess per variant, the same loop, a larger
   model so that training state dominates): peak RSS over the process's RSS after import, and the
   bytes of parameters + gradients + Adam state actually held.

Writes benchmarks/results/sft.json (sft.quick.json with --quick); the last line is the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import forge_ray  # noqa: E402,F401  (offline environment)

THREADS, MICRO, GLOBAL = 2, 8, 16
LORA = {"rank": 8, "alpha": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj"]}
MEMORY_MODEL = dict(hidden_size=512, num_layers=6, num_heads=8, num_kv_heads=4, ffn_hidden_size=1536,
                    vocab_size=8192, max_seq_len=256)


def overrides(name: str, steps: int, lora: bool, lr: float) -> list[str]:
    o = [f"train.run_name={name}", f"model.name={name}", f"train.steps={steps}", f"train.torch_threads={THREADS}",
         f"train.cpus_per_worker={THREADS}", f"train.micro_batch_size={MICRO}", f"train.global_batch_size={GLOBAL}",
         "train.log_every=1", "train.report_every=1000", "train.checkpoint_every=100000", "train.tensorboard=false",
         f"train.lr={lr}"]
    return o + ([f"train.lora={json.dumps(LORA)}"] if lora else [])


def forge_run(ws, dataset, name: str, steps: int, lora: bool, lr: float) -> dict:
    from forge_ray.testing.sft import sft_config
    from forge_ray.train import run_training

    config = sft_config(ws, overrides(name, steps, lora, lr))
    result = run_training(config, dataset)
    stamps = [m["time"] for m in result.metrics]
    skip = min(3, steps // 3)
    period = statistics.median([b - a for a, b in zip(stamps, stamps[1:], strict=False)][skip:])
    return {"result": result, "config": config, "tokens_per_s": GLOBAL * dataset.seq_len / period,
            "step_time_s": period, "first_loss": result.metrics[0]["lm_loss"], "final_loss": result.metrics[-1]["lm_loss"],
            "target_tokens_per_step": statistics.mean(m["target_tokens"] for m in result.metrics),
            "wall_s": round(result.wall_s, 1)}


def plain_loop(plan, model_cfg, train_cfg, base_dir: str, steps: int) -> dict:
    """The baseline: one process, torch AdamW, the same model (from the base folder), the same
    masked batches (labels IGNORE_INDEX outside the assistant's turns) and thread count."""
    import torch

    from forge_ray.mixture.reader import read_samples
    from forge_ray.models import build_model
    from forge_ray.models.hf import load_hf_folder
    from forge_ray.train.deepspeed_adapter import optimizer_groups
    from forge_ray.train.loss import lm_token_loss
    from forge_ray.train.schedule import lr_at

    torch.set_num_threads(THREADS)
    model = build_model(model_cfg)
    model.load_state_dict(load_hf_folder(base_dir, model_cfg)[1])
    opt = torch.optim.AdamW(optimizer_groups(model, train_cfg.weight_decay), lr=train_cfg.lr, betas=train_cfg.betas,
                            eps=train_cfg.adam_eps)
    batches = []
    for k in range(steps):
        src, rows = plan.batch(k)
        s = read_samples(plan, src, rows)
        batches.append({key: torch.as_tensor(s[key], dtype=torch.long) for key in ("input_ids", "position_ids", "labels")})
    times = []
    for k, b in enumerate(batches):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(k, train_cfg)
        for ids, pos, labels in zip(b["input_ids"].split(MICRO), b["position_ids"].split(MICRO),
                                    b["labels"].split(MICRO), strict=True):
            out = model(ids, pos)
            tok, mask = lm_token_loss(out.logits, labels, plan.pad_token_id)
            ((tok * mask).sum() / mask.sum().clamp(min=1) / (GLOBAL // MICRO)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    period = statistics.median(times[min(3, steps // 3):])
    return {"tokens_per_s": GLOBAL * plan.seq_len / period, "step_time_s": period}


def memory_probe(variant: str, steps: int = 4) -> dict:
    """Run in a fresh subprocess: a few training steps of MEMORY_MODEL, full or LoRA; its peak memory."""
    import resource

    import torch

    from forge_ray.config.model import ModelConfig
    from forge_ray.config.sft import LoraConfig
    from forge_ray.models import build_model
    from forge_ray.models.lora import apply_lora, trainable_parameters
    from forge_ray.train.deepspeed_adapter import optimizer_groups
    from forge_ray.train.loss import lm_token_loss

    torch.set_num_threads(THREADS)
    rss0 = _rss_mb()
    cfg = ModelConfig(name="mem", **MEMORY_MODEL)
    model = build_model(cfg, seed=0)
    if variant == "lora":
        apply_lora(model, LoraConfig(**LORA))
    opt = torch.optim.AdamW(optimizer_groups(model, 0.0), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (MICRO, cfg.max_seq_len), generator=g)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, -100)
    t = []
    for _ in range(steps):
        t0 = time.perf_counter()
        out = model(ids)
        tok, mask = lm_token_loss(out.logits, labels, -1)
        ((tok * mask).sum() / mask.sum()).backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # gradients stay allocated, as between accumulation steps
        t.append(time.perf_counter() - t0)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    adam = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    trainable, total = trainable_parameters(model)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "peak_rss_over_import_mb": round(peak - rss0, 1), "peak_rss_mb": round(peak, 1),
            "state_mb": round((params + grads + adam) / 2**20, 1), "trainable_params": trainable, "params": total,
            "step_time_s": statistics.median(t[1:]), "tokens_per_s": MICRO * cfg.max_seq_len / statistics.median(t[1:])}


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def probe(variant: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-probe", variant], capture_output=True, text=True,
                         check=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer records, steps and KPI cases")
    parser.add_argument("--memory-probe", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe)))
        return

    from forge_ray.cluster import connect
    from forge_ray.corpora.instructions import heldout_cases
    from forge_ray.eval.chat_kpi import chat_kpi
    from forge_ray.export import export_run
    from forge_ray.prepare.run import prepare_dataset
    from forge_ray.testing.sft import sft_config, sft_workspace

    n, steps, lora_steps, cases_n = (600, 80, 30, 30) if args.quick else (1500, 200, 60, 100)
    started = time.time()
    load_start = list(os.getloadavg())
    connect(num_cpus=8, object_store_mb=1024)
    tmp = Path(tempfile.mkdtemp(prefix="forge-bench-sft-"))
    ws = sft_workspace(tmp, n=n)
    dataset = prepare_dataset(sft_config(ws, ["train.run_name=prep"]))
    cases = heldout_cases(cases_n)
    before = chat_kpi(str(ws.base), cases)

    full = forge_run(ws, dataset, "bench-sft-full", steps, lora=False, lr=3e-3)
    after = chat_kpi(export_run(full["result"], full["config"], dataset).path, cases)
    plain = plain_loop(full["result"].plan, full["result"].model, full["config"].train, str(ws.base), min(steps, 60))
    lora = forge_run(ws, dataset, "bench-sft-lora", lora_steps, lora=True, lr=1e-2)
    mem = {v: probe(v) for v in ("full", "lora")}

    def strip(r):
        return {k: v for k, v in r.items() if k not in ("result", "config")}

    results = {
        "quick": args.quick, "records": n, "steps": steps, "heldout_cases": cases_n,
        "dataset": {k: dataset.manifest["sources"]["instructions"]["splits"]["train"][k]
                    for k in ("documents", "sequences", "tokens", "target_tokens", "padding_tokens")},
        "kpi_before": round(before["score"], 3), "kpi_after": round(after["score"], 3),
        "kpi_before_by_task": before["by_task"], "kpi_after_by_task": after["by_task"],
        "forge_sft": strip(full), "plain": plain,
        "ratio_vs_plain": round(full["tokens_per_s"] / plain["tokens_per_s"], 3),
        "forge_lora": strip(lora),
        "lora_vs_full_tokens_per_s": round(lora["tokens_per_s"] / full["tokens_per_s"], 3),
        "memory": mem,
        "lora_vs_full_peak_memory": round(mem["lora"]["peak_rss_over_import_mb"] / mem["full"]["peak_rss_over_import_mb"], 3),
        "lora_vs_full_state_memory": round(mem["lora"]["state_mb"] / mem["full"]["state_mb"], 3),
        "lora_vs_full_tokens_per_s_memory_model": round(mem["lora"]["tokens_per_s"] / mem["full"]["tokens_per_s"], 3),
        "wall_s": round(time.time() - started, 1),
        # the machine's load while it ran: timing ratios measured under other jobs' load are not comparable
        "loadavg_start": load_start, "loadavg_end": list(os.getloadavg()),
    }
    name = "sft.quick.json" if args.quick else "sft.json"
    (REPO / "benchmarks" / "results" / name).write_text(json.dumps(results, indent=2) + "\n")
    print(f"kpi before {results['kpi_before']:.3f} -> after {results['kpi_after']:.3f}  {after['by_task']}")
    print(f"forge SFT {full['tokens_per_s']:,.0f} tok/s vs plain {plain['tokens_per_s']:,.0f} tok/s; "
          f"LoRA {lora['tokens_per_s']:,.0f} tok/s; memory {mem}")
    print(f"kpi_before {results['kpi_before']:.3f} kpi_after {results['kpi_after']:.3f} ratio_vs_plain "
          f"{results['ratio_vs_plain']:.3f} lora_vs_full tokens/s {results['lora_vs_full_tokens_per_s']:.3f} "
          f"peak memory {results['lora_vs_full_peak_memory']:.3f}")


if __name__ == "__main__":
    main()
