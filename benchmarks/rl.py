"""GRPO on the embedded verifiable task: held-out KPI before / after, throughput vs TRL, weight sync.

    .venv/bin/python benchmarks/rl.py [--quick]

1. A tiny base model fine-tuned on the embedded instruction set (forge SFT on a local Ray cluster).
2. forge GRPO from it (`forge_ray.rl.driver.train_and_gate`): rollouts on one vLLM engine, the
   policy on one Ray Train + DeepSpeed worker, weights synced in memory every step; the gate scores
   the base and the RL version on a held-out suite (`kpi_before`, `kpi_after`).
3. TRL's `GRPOTrainer` (benchmarks/rl_trl.py) on the same SFT model, the same G, prompts per step,
   completion length and cores, in the same run: `ratio_vs_trl` = forge's completions trained per
   second / TRL's (steady state: the first steps of each are warm-up).

Writes benchmarks/results/rl.json (rl.quick.json with --quick); the last line is the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import forge_ray  # noqa: E402,F401  (the offline environment first)

G, PROMPTS_PER_STEP, MAX_NEW_TOKENS = 8, 16, 8


def sft_model(tmp: Path, steps: int) -> tuple[object, str]:
    from forge_ray.export import export_run
    from forge_ray.prepare.run import prepare_dataset
    from forge_ray.testing.sft import sft_config, sft_workspace
    from forge_ray.train import run_training

    ws = sft_workspace(tmp, n=1200)
    config = sft_config(ws, ["train.run_name=sft", f"train.steps={steps}", "train.log_every=20"])
    dataset = prepare_dataset(config)
    return ws, export_run(run_training(config, dataset), config, dataset).path


def forge_grpo(ws, base: str, steps: int) -> dict:
    from forge_ray.config.loader import load_config
    from forge_ray.corpora.verifiable import verifiable_cases, write_cases
    from forge_ray.rl.driver import train_and_gate

    held_out = verifiable_cases(60, seed=1)
    write_cases(ws.root / "rl" / "prompts.jsonl", verifiable_cases(400, seed=2, exclude=held_out))
    write_cases(ws.root / "rl" / "heldout.jsonl", held_out)
    config = load_config(REPO / "jobs" / "configs" / "rl.yaml", [
        f"project.storage_root={ws.root}", f"model.init_from={base}", f"train.steps={steps}",
        f"train.global_batch_size={PROMPTS_PER_STEP * G}", f"rl.group_size={G}", f"rl.max_new_tokens={MAX_NEW_TOKENS}",
        f"train.checkpoint_every={steps}", "train.run_name=grpo-bench",
        "train.torch_threads=2"])  # rollouts and training alternate: the trainer gets both cores, as TRL does
    t0 = time.perf_counter()
    out = train_and_gate(config)
    wall = time.perf_counter() - t0
    recs = out["result"].metrics
    steady = recs[2:] if len(recs) > 4 else recs
    return {
        "steps": len(recs), "wall_s": round(wall, 1),
        "kpi_before": out["gate"]["base"], "kpi_after": out["gate"]["rl"], "gate": out["gate"]["decision"],
        "reward_first5": statistics.mean(r["reward_mean"] for r in recs[:5]),
        "reward_last5": statistics.mean(r["reward_mean"] for r in recs[-5:]),
        "completions_per_s": statistics.median(r["completions_per_s"] for r in steady),
        "step_s": statistics.median(r["step_time_s"] for r in steady),
        "rollout_s": statistics.median(r["rollout_s"] for r in steady),
        "train_s": statistics.median(r["train_s"] for r in steady),
        "sync_s": statistics.median(r["sync_s"] for r in steady),
        "sync_share": statistics.median(r["sync_share"] for r in steady),
        "logprob_gap_max": max(r["logprob_gap"] for r in recs),
        "kl_last": recs[-1]["kl"], "response_len_last": recs[-1]["response_len"],
    }


def trl_baseline(base: str, steps: int) -> dict:
    from transformers import AutoTokenizer

    from benchmarks.rl_trl import trl_grpo_throughput
    from forge_ray.corpora.verifiable import verifiable_cases
    from forge_ray.rl.prompts import parse_cases, prompt_text

    tok = AutoTokenizer.from_pretrained(base)
    rows = [{k: v for k, v in c.items() if k != "task"} for c in verifiable_cases(PROMPTS_PER_STEP * 8, seed=2)]
    cases = parse_cases(rows, "bench")
    prompts = [prompt_text(c, tok) for c in cases]  # the same rendered prompts forge samples from
    return trl_grpo_throughput(base, prompts, group_size=G, max_new_tokens=MAX_NEW_TOKENS, steps=steps,
                               threads=2, per_device_batch=PROMPTS_PER_STEP, micro_batch=32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer SFT and GRPO steps")
    args = p.parse_args()
    sft_steps, grpo_steps, trl_steps = (120, 10, 3) if args.quick else (120, 30, 6)

    from forge_ray.cluster import connect

    connect(num_cpus=8, object_store_mb=1024)
    with tempfile.TemporaryDirectory(prefix="forge-rl-bench-") as tmp:
        ws, base = sft_model(Path(tmp), sft_steps)
        forge = forge_grpo(ws, base, grpo_steps)
        import ray

        ray.shutdown()  # TRL gets the cores alone, as forge had them
        trl = trl_baseline(base, trl_steps)
    result = {
        "benchmark": "rl", "quick": args.quick, "group_size": G, "prompts_per_step": PROMPTS_PER_STEP,
        "max_new_tokens": MAX_NEW_TOKENS, "sft_steps": sft_steps,
        "kpi_before": round(forge["kpi_before"], 4), "kpi_after": round(forge["kpi_after"], 4),
        "kpi_gain": round(forge["kpi_after"] - forge["kpi_before"], 4),
        "forge": forge, "trl": trl,
        "ratio_vs_trl": round(forge["completions_per_s"] / trl["completions_per_s"], 3),
        "sync_s": round(forge["sync_s"], 4), "sync_share": round(forge["sync_share"], 4),
    }
    out = REPO / "benchmarks" / "results" / ("rl.quick.json" if args.quick else "rl.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("forge", "trl")}, indent=2))
    print(f"kpi {result['kpi_before']:.3f} -> {result['kpi_after']:.3f}; sync {result['sync_s'] * 1e3:.0f} ms "
          f"({result['sync_share']:.1%} of a step); forge {forge['completions_per_s']:.1f} vs TRL "
          f"{trl['completions_per_s']:.1f} completions/s")
    print(f"ratio_vs_trl {result['ratio_vs_trl']:.3f}")


if __name__ == "__main__":
    main()
