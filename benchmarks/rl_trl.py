"""The baseline of benchmarks/rl.py: TRL's `GRPOTrainer` on CPU, timed as completions trained per second.

    .venv/bin/python benchmarks/rl_trl.py --model DIR [--group-size 4 --prompts-per-step 8 --max-new-tokens 16]

`trl_grpo_throughput(...)` runs TRL (1.16.0) the way its defaults run without a GPU server: generation by
`transformers` (`use_vllm=False`), sampling at temperature 1.0, fp32 (bf16/fp16 off), `beta=0` (no reference
model), `num_iterations=1`, loss `dapo`, group-scaled rewards, one process. What one optimizer step does there:
one `model.generate` over all `prompts_per_step * G` completions (KV cache, stops per row at EOS), the reward
function, then one forward+backward of the policy per micro-batch and an AdamW step. With generation aligned to
the optimizer step TRL skips the extra no-grad "old log-prob" forward (it uses the detached current log-probs).

Throughput = steps * prompts_per_step * G / (time of `steps` optimizer steps after one warm-up step).
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

import forge_ray  # noqa: E402,F401  (the offline environment, before transformers / TRL are imported)

# A minimal ChatML-like template, set only when the tokenizer has none and the prompts are chat messages.
_CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def digit_reward(completions, **_) -> list[float]:
    """1.0 when the completion holds a digit (a cheap verifiable reward; its cost is negligible)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(any(ch.isdigit() for ch in t)) for t in texts]


def trl_grpo_throughput(model_dir: str, prompts: list[list[dict]] | list[str], *, group_size: int,
                        max_new_tokens: int, steps: int, threads: int, per_device_batch: int,
                        micro_batch: int | None = None, warmup: int = 1) -> dict:
    """Run TRL's GRPOTrainer for `warmup` + `steps` optimizer steps; return its completions/s.

    `per_device_batch` is the number of prompts per optimizer step (TRL counts its
    `per_device_train_batch_size` in completions: here that is `per_device_batch * group_size`).
    `micro_batch` (completions per forward/backward, default all of them) sets TRL's gradient
    accumulation; generation still covers the whole step in one `generate` call.
    `completions_per_s` is over the mean step; `completions_per_s_median` over the median step
    (robust to other processes stealing the cores for a moment).
    """
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (GRPO normalises within a group), not {group_size}")
    if warmup < 1 or steps < 1:
        raise ValueError(f"warmup and steps must be >= 1, not {warmup} and {steps}")
    if not prompts:
        raise ValueError("prompts is empty")
    completions_per_step = per_device_batch * group_size
    micro = micro_batch or completions_per_step
    if completions_per_step % micro:
        raise ValueError(f"micro_batch {micro} must divide the completions per step {completions_per_step}")
    torch.set_num_threads(threads)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not isinstance(prompts[0], str) and not tokenizer.chat_template:
        tokenizer.chat_template = _CHAT_TEMPLATE
    rows = list(prompts)
    while len(rows) < per_device_batch * (warmup + steps):  # enough distinct prompts for every step of one epoch
        rows += list(prompts)

    stamps: list[float] = []
    records: list[dict] = []

    class _Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                records.append(dict(logs))

    generate_s: list[float] = []

    class _TimedGRPOTrainer(GRPOTrainer):
        # TRL 1.16's per-turn generation hook: timed to report generation's share of a step.
        def _generate_single_turn(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return super()._generate_single_turn(*args, **kwargs)
            finally:
                generate_s.append(time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, max_steps=warmup + steps, per_device_train_batch_size=micro,
            gradient_accumulation_steps=completions_per_step // micro, num_generations=group_size,
            max_completion_length=max_new_tokens, use_vllm=False, bf16=False, fp16=False, use_cpu=True,
            report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
            dataloader_num_workers=0, seed=0, learning_rate=1e-6,
        )
        trainer = _TimedGRPOTrainer(model=model_dir, reward_funcs=digit_reward, args=config,
                              train_dataset=Dataset.from_dict({"prompt": rows}), processing_class=tokenizer,
                                    callbacks=[_Clock()])
        torch.set_num_threads(threads)  # the trainer's setup must not have changed it
        trainer.train()
        optim = str(config.optim)

    if len(stamps) != warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} optimizer steps, saw {len(stamps)}")
    timed = stamps[warmup - 1:]  # from the end of the last warm-up step
    elapsed = timed[-1] - timed[0]
    step_times = [b - a for a, b in zip(timed, timed[1:], strict=False)]
    gen = sum(generate_s[warmup:]) if len(generate_s) == warmup + steps else None  # one generate call per step
    train_logs = [entry for entry in records if "completions/mean_length" in entry][warmup:]
    mean_len = (sum(e["completions/mean_length"] for e in train_logs) / len(train_logs)) if train_logs else None
    return {
        "completions_per_s": steps * completions_per_step / elapsed,
        "step_s": elapsed / steps,
        "completions_per_s_median": completions_per_step / statistics.median(step_times),
        "step_s_median": statistics.median(step_times),
        "generate_share": gen / elapsed if gen is not None else None,
        "steps": steps,
        "group_size": group_size,
        "max_new_tokens": max_new_tokens,
        "prompts_per_step": per_device_batch,
        "micro_batch": micro,
        "threads": threads,
        "mean_completion_tokens": mean_len,
        "trl_optim": optim,
    }


def _default_prompts(n: int) -> list[str]:
    return [f"Ticket T-{1000 + i}: the order total is {10 + i} EUR. What is the ticket reference?" for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an HF model folder with its tokenizer")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=None, help="completions per forward/backward")
    parser.add_argument("--chat", action="store_true", help="send the prompts as chat messages")
    args = parser.parse_args()
    prompts = _default_prompts(64)
    if args.chat:
        prompts = [[{"role": "user", "content": p}] for p in prompts]
    result = trl_grpo_throughput(args.model, prompts, group_size=args.group_size,
                                 max_new_tokens=args.max_new_tokens, steps=args.steps, threads=args.threads,
                                 per_device_batch=args.prompts_per_step, micro_batch=args.micro_batch)
    print(json.dumps(result, indent=2))
    print(f"trl completions/s: {result['completions_per_s']:.2f}")


if __name__ == "__main__":
    main()
