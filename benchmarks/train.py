"""Training benchmarks: forge's Ray Train + DeepSpeed path against a plain PyTorch loop, MoE against
dense, recovery from a killed worker, and dry-run figures of a ~1B dense and a small MoE config.

    .venv/bin/python benchmarks/train.py [--quick]

1. tokens/s of `run_training` with 1 worker (Ray Train, DeepSpeed ZeRO 2, the mixture stream)
   against a single-process `torch.optim.AdamW` loop over the same model, batches (pre-loaded in
   memory) and thread count, in the same run: three rounds of (forge run, plain loop), the best
   round of each (one round with --quick). Goal >= 0.9.
2. step time of an MoE model (8 experts, top-2, DeepSpeed-MoE) against a dense model with the same
   active parameters (dense FFN width = 2 x expert width): their steps alternated in one process (the
   headline ratio; the two forge runs' ratio is recorded too). Goal <= 1.5. The MoE trains as
   DeepSpeed-MoE is meant to for speed: `drop_tokens: true`, capacity factor 1.25 (every expert's
   buffer holds 1.25x its even share). With `drop_tokens: false` (the exact, HF-identical routing)
   every expert is padded to the busiest one's load, which at initialisation is ~2x the even share:
   that variant is alternated in the same loop and recorded as `moe_no_drop`.
3. (full run only) recovery: tests/integration/train_elastic_job.py kills a worker process of a
   2-worker run on a multi-node local cluster; seconds from the kill to the next completed step
   (goal <= 60) and steps lost (goal <= the checkpoint interval), then the 2 -> 1 -> 2 resize.
4. dry-run figures (parameters, FLOPs per token, memory per worker, with and without activation
   checkpointing): no GPU here, so no MFU.
5. long sequences (benchmarks/long_seq_probe.py, one process per measurement, alternated rounds):
   tokens/s of a training step at sequence 1024 and 2048 with packed documents (64-512 tokens)
   through per-document SDPA spans against the dense [B, 1, T, T] mask path, same model and batch
   (`ratio_sdpa_vs_dense_mask_tokens_per_s`, at 2048, goal >= 1.0); peak activation memory of a
   step with activation checkpointing against none (`ratio_peak_memory_act_ckpt_vs_none`, goal <= 0.6).
   `--long-seq-only` runs just this part and merges it into the existing results file.

Writes benchmarks/results/train.json (train.quick.json with --quick); the last line is the ratios.
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
from forge_ray.offline import OFFLINE_ENV  # noqa: E402

THREADS, SEQ, MICRO, GLOBAL = 2, 256, 4, 8
ARCH = dict(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, max_seq_len=SEQ)
DENSE_FFN, EXPERT_FFN = 1024, 512
MOE = {"num_experts": 8, "top_k": 2, "drop_tokens": True, "capacity_factor": 1.25}


def forge_config(root: str, family: str, steps: int):
    from forge_ray.config import ForgeConfig

    src = {"uri": "/unused", "format": "jsonl", "license": "MIT", "sensitivity": "public"}
    model = {"name": f"bench-{family}", "family": family, **ARCH,
             "ffn_hidden_size": DENSE_FFN if family == "dense" else EXPERT_FFN,
             "moe": MOE}
    return ForgeConfig.model_validate({
        "project": {"name": "bench", "storage_root": root},
        "data": {"sources": [{"name": "docs", **src}, {"name": "code", **src}]},
        "mixture": {"weights": {"docs": 0.5, "code": 0.5}},
        "model": model,
        "train": {"steps": steps, "run_name": f"bench-{family}-{int(time.time())}", "min_workers": 1,
                  "max_workers": 1, "cpus_per_worker": 1, "torch_threads": THREADS, "micro_batch_size": MICRO,
                  "global_batch_size": GLOBAL, "checkpoint_every": 10_000, "warmup_steps": 2,
                  "tensorboard": False, "export": False},
    })


def steady(values: list[float], skip: int) -> float:
    return statistics.median(values[skip:])


def forge_run(root, dataset, family: str, steps: int) -> dict:
    from forge_ray.train import run_training

    result = run_training(forge_config(root, family, steps), dataset)
    skip = min(3, steps // 3)
    # Wall time from one step's record to the next: the step plus everything between steps
    # (metrics, ray.train.report), which the worker's own step_time_s leaves out.
    stamps = [m["time"] for m in result.metrics]
    period = steady([b - a for a, b in zip(stamps, stamps[1:], strict=False)], skip - 1)
    return {"tokens_per_s": GLOBAL * SEQ / period, "step_time_s": period,
            "worker_step_time_s": steady([m["step_time_s"] for m in result.metrics], skip),
            "data_wait_s": steady([m["data_wait_s"] for m in result.metrics], skip),
            "final_loss": result.metrics[-1]["loss"], "wall_s": round(result.wall_s, 1), "plan": result.plan,
            "model": result.model}


def plain_loop(plan, model_cfg, steps: int) -> dict:
    """The baseline: one process, torch AdamW, the same model, batches and threads."""
    import torch

    from forge_ray.mixture.reader import read_samples
    from forge_ray.models import build_model
    from forge_ray.train.deepspeed_adapter import moe_layer, optimizer_groups
    from forge_ray.train.loss import lm_token_loss
    from forge_ray.train.schedule import lr_at

    torch.set_num_threads(THREADS)
    cfg = forge_config("/tmp", model_cfg.family, steps).train
    model = build_model(model_cfg, seed=0, moe_layer=moe_layer)
    opt = torch.optim.AdamW(optimizer_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps)
    batches = []
    for k in range(steps):
        src, rows = plan.batch(k)
        s = read_samples(plan, src, rows)
        batches.append({key: torch.as_tensor(s[key], dtype=torch.long) for key in ("input_ids", "position_ids")})
    aux_coef = model_cfg.moe.aux_loss_coef if model_cfg.family == "moe" else 0.0
    times = []
    for k, b in enumerate(batches):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(k, cfg)
        for ids, pos in zip(b["input_ids"].split(MICRO), b["position_ids"].split(MICRO), strict=True):
            out = model(ids, pos)
            tok, mask = lm_token_loss(out.logits, ids, plan.pad_token_id)
            loss = (tok * mask).sum() / mask.sum() + aux_coef * out.aux_loss
            (loss / (GLOBAL // MICRO)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    skip = min(3, steps // 3)
    return {"tokens_per_s": GLOBAL * SEQ / steady(times, skip), "step_time_s": steady(times, skip)}


def paired_runs(root, dataset, family: str, steps: int, rounds: int) -> tuple[dict, dict, dict]:
    """`rounds` x (a forge run, then at once its plain baseline); each side's figure is its best
    round. The machine is shared and its load drifts over minutes: one unlucky minute must not
    decide a ratio, in either direction."""
    forge, plain = [], []
    for _ in range(rounds):
        forge.append(forge_run(root, dataset, family, steps))
        plain.append(plain_loop(forge[-1]["plan"], forge[-1]["model"], steps))
    seen = {"forge_step_s": [r["step_time_s"] for r in forge], "plain_step_s": [r["step_time_s"] for r in plain]}
    fastest = min(forge, key=lambda r: r["step_time_s"]), min(plain, key=lambda r: r["step_time_s"])
    return *fastest, seen


def interleaved_moe_vs_dense(plan_dense, dense_cfg, plan_moe, moe_cfg, steps: int) -> dict:
    """MoE and dense steps alternated in one process: on a shared machine whose load drifts by
    minutes, measuring one model after the other compares loads, not models. The no-drop MoE
    variant runs in the same loop."""
    import torch

    from forge_ray.mixture.reader import read_samples
    from forge_ray.models import build_model
    from forge_ray.train.deepspeed_adapter import moe_layer
    from forge_ray.train.loss import lm_token_loss

    torch.set_num_threads(THREADS)
    no_drop = moe_cfg.model_copy(update={"moe": moe_cfg.moe.model_copy(update={"drop_tokens": False})})
    models = {"dense": (build_model(dense_cfg, seed=0, moe_layer=moe_layer), plan_dense), "moe": (build_model(moe_cfg, seed=0, moe_layer=moe_layer), plan_moe),
              "moe_no_drop": (build_model(no_drop, seed=0, moe_layer=moe_layer), plan_moe)}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, (m, _) in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for k in range(steps):
        for name, (model, plan) in models.items():
            src, rows = plan.batch(k)
            s = read_samples(plan, src, rows)
            ids = torch.as_tensor(s["input_ids"], dtype=torch.long)
            pos = torch.as_tensor(s["position_ids"], dtype=torch.long)
            t0 = time.perf_counter()
            for i, p in zip(ids.split(MICRO), pos.split(MICRO), strict=True):
                out = model(i, p)
                tok, mask = lm_token_loss(out.logits, i, plan.pad_token_id)
                ((tok * mask).sum() / mask.sum() + 0.01 * out.aux_loss).backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - t0)
    skip = min(2, steps // 3)
    d, m, n = (steady(times[k], skip) for k in ("dense", "moe", "moe_no_drop"))
    return {"dense_step_s": d, "moe_step_s": m, "ratio": m / d, "moe_no_drop_step_s": n, "ratio_no_drop": n / d}


def recovery(out_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(OFFLINE_ENV, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "tests/integration/train_elastic_job.py"), out_dir, "120"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    result = json.loads(Path(out_dir, "result.json").read_text())
    if proc.returncode or result["error"]:
        raise RuntimeError(f"elastic job failed: {result['error']}\n{proc.stderr[-3000:]}")
    return {**result["events"], "checkpoint_every": result["checkpoint_every"], "wall_s": result["wall_s"]}


def dry_runs() -> dict:
    from forge_ray.config.train import TrainConfig
    from forge_ray.models.dry_run import dry_run
    from forge_ray.models.presets import preset

    gpu = TrainConfig(min_workers=8, max_workers=8, micro_batch_size=4, global_batch_size=64, use_gpu=True)
    out = {}
    for name, seq in (("dense-1b", 2048), ("moe-small", 2048), ("llama-7b", 4096), ("mixtral-8x7b", 4096)):  # both ways
        out[name] = dry_run(preset(name), gpu, seq)
    return out


def _probe(mode: str, seq: int, micro: int, steps: int) -> dict:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "long_seq_probe.py"), mode, str(seq), str(micro),
                           str(steps)], capture_output=True, text=True, timeout=1200, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(f"long_seq_probe {mode} {seq}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def long_sequences(quick: bool) -> dict:
    """Per-document SDPA spans vs the dense-mask path (tokens/s), activation checkpointing vs none (memory)."""
    rounds, steps, micro = (1, 2, 2) if quick else (2, 4, 2)
    out: dict = {"micro_batch": micro, "rounds": rounds, "steps": steps}
    for seq in (1024, 2048):
        runs: dict[str, list[dict]] = {"dense_mask": [], "spans": []}
        for _ in range(rounds):
            for mode in runs:
                runs[mode].append(_probe(mode, seq, micro, steps))
        best = {m: max(r, key=lambda x: x["tokens_per_s"]) for m, r in runs.items()}
        out[f"seq_{seq}"] = {**best, "ratio_tokens_per_s": best["spans"]["tokens_per_s"]
                             / best["dense_mask"]["tokens_per_s"],
                             "same_loss": abs(best["spans"]["loss"] - best["dense_mask"]["loss"]) < 1e-4}
    ckpt = _probe("spans+ckpt", 2048, micro, 1)
    none = out["seq_2048"]["spans"]
    out["activation_checkpointing_2048"] = {"on": ckpt, "peak_activation_mib_none": none["peak_activation_mib"],
                                             "same_loss": abs(ckpt["loss"] - none["loss"]) < 1e-4}
    out["ratio_sdpa_vs_dense_mask_tokens_per_s"] = out["seq_2048"]["ratio_tokens_per_s"]
    out["ratio_peak_memory_act_ckpt_vs_none"] = ckpt["peak_activation_mib"] / none["peak_activation_mib"]
    return out


def _long_seq_tail(ls: dict) -> str:
    return (f"ratio sdpa spans/dense mask tokens/s {ls['ratio_sdpa_vs_dense_mask_tokens_per_s']:.3f} at 2048 "
            f"({ls['seq_1024']['ratio_tokens_per_s']:.3f} at 1024; goal >= 1.0), peak activation memory "
            f"act ckpt/none {ls['ratio_peak_memory_act_ckpt_vs_none']:.3f} (goal <= 0.6)")


def long_seq_only(quick: bool) -> None:
    name = "train.quick.json" if quick else "train.json"
    path = REPO / "benchmarks" / "results" / name
    results = json.loads(path.read_text()) if path.exists() else {}
    ls = long_sequences(quick)
    results["long_sequences"] = ls
    results["ratio_sdpa_vs_dense_mask_tokens_per_s"] = ls["ratio_sdpa_vs_dense_mask_tokens_per_s"]
    results["ratio_peak_memory_act_ckpt_vs_none"] = ls["ratio_peak_memory_act_ckpt_vs_none"]
    results["dry_run"] = dry_runs()
    path.write_text(json.dumps(results, indent=2) + "\n")
    for n, d in results["dry_run"].items():
        by = d["memory_gib_total_by_activation_checkpointing"]
        print(f"dry run {n:13s} {by['off']:7.1f} GiB/worker, {by['on']:7.1f} with activation checkpointing")
    print(_long_seq_tail(ls))


def main() -> None:
    import ray

    from forge_ray.cluster import connect
    from forge_ray.storage import Storage
    from forge_ray.testing.synthetic_dataset import write_synthetic_dataset

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer steps, no recovery scenario")
    ap.add_argument("--long-seq-only", action="store_true", help="only the long-sequence part (5.), merged in")
    args = ap.parse_args()
    if args.long_seq_only:
        return long_seq_only(args.quick)
    steps = 8 if args.quick else 16
    root = tempfile.mkdtemp(prefix="forge-bench-train-")
    dataset = write_synthetic_dataset(Storage(root), "bench", {"docs": 200, "code": 200}, seq_len=SEQ)
    connect(num_cpus=4)
    rounds = 1 if args.quick else 3
    try:
        dense, plain, dense_rounds = paired_runs(root, dataset, "dense", steps, rounds)
        moe, plain_moe, moe_rounds = paired_runs(root, dataset, "moe", steps, rounds)
    finally:
        ray.shutdown()
    alternated = interleaved_moe_vs_dense(dense["plan"], dense["model"], moe["plan"], moe["model"], steps)
    from forge_ray.models.dry_run import model_size

    active = {f: model_size(r["model"], SEQ).params_active for f, r in (("dense", dense), ("moe", moe))}
    results = {
        "setup": {"threads": THREADS, "seq_len": SEQ, "micro_batch": MICRO, "global_batch": GLOBAL, "steps": steps,
                  "arch": ARCH, "dense_ffn": DENSE_FFN, "expert_ffn": EXPERT_FFN, "moe": MOE,
                  "active_params": active, "cpu_count": os.cpu_count(), "load_avg": os.getloadavg()},
        "forge_dense": {k: v for k, v in dense.items() if k not in ("plan", "model")},
        "forge_moe": {k: v for k, v in moe.items() if k not in ("plan", "model")},
        "plain_dense": plain,
        "plain_moe": plain_moe,
        "rounds": {"dense": dense_rounds, "moe": moe_rounds},
        "ratio_forge_vs_plain_tokens_per_s": dense["tokens_per_s"] / plain["tokens_per_s"],
        "ratio_forge_vs_plain_tokens_per_s_moe": moe["tokens_per_s"] / plain_moe["tokens_per_s"],
        "ratio_moe_vs_dense_step_time_forge_runs": moe["step_time_s"] / dense["step_time_s"],
        "moe_vs_dense_alternated": alternated,
        "ratio_moe_vs_dense_step_time": alternated["ratio"],
        "dry_run": dry_runs(),
    }
    results["long_sequences"] = long_sequences(args.quick)
    for key in ("ratio_sdpa_vs_dense_mask_tokens_per_s", "ratio_peak_memory_act_ckpt_vs_none"):
        results[key] = results["long_sequences"][key]
    if not args.quick:
        results["recovery"] = recovery(tempfile.mkdtemp(prefix="forge-bench-elastic-"))
    name = "train.quick.json" if args.quick else "train.json"
    (REPO / "benchmarks" / "results" / name).write_text(json.dumps(results, indent=2) + "\n")
    for k in ("forge_dense", "plain_dense", "forge_moe", "plain_moe"):
        r = results[k]
        print(f"{k:12s} {r['tokens_per_s']:10,.0f} tok/s  step {r['step_time_s'] * 1e3:7.1f} ms")
    for n, d in results["dry_run"].items():
        print(f"dry run {n:13s} {d['params_total'] / 1e9:6.2f} B params ({d['params_active'] / 1e9:.2f} B active), "
              f"{d['flops_per_token'] / 1e9:6.1f} GFLOP/token, {d['memory_gib_per_worker']['total']:7.1f} GiB/worker "
              f"(8 GPUs, ZeRO 2, bf16)")
    tail = (f"ratio forge/plain tokens/s {results['ratio_forge_vs_plain_tokens_per_s']:.3f} (goal >= 0.9), "
            f"moe/dense step time {results['ratio_moe_vs_dense_step_time']:.3f} (goal <= 1.5; "
            f"{alternated['ratio_no_drop']:.3f} with drop_tokens false)")
    if "recovery" in results:
        rec = results["recovery"]["kill"]
        tail += f", recovery {rec['recovery_s']:.1f} s (goal <= 60), steps lost {rec['steps_lost']}"
    print(tail + ", " + _long_seq_tail(results["long_sequences"]))


if __name__ == "__main__":
    main()
