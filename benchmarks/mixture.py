"""Mixture benchmark: data-wait fraction of the demo model's step, and realised-share errors.

    .venv/bin/python benchmarks/mixture.py [--quick]

1. Data wait. The demo forge file's model (jobs/configs/demo.yaml, `model` and `train`
   sections; vocabulary 4096) trains on a local Ray cluster for a few optimizer steps, reading
   its batches two ways from the same plan over a prepared dataset (the contract format, seq
   len 256): through `TrainStream` (Ray Data, prefetching), and, as the baseline, with the
   same reader called inline, step by step, with no prefetch. Data wait is the time a step
   spends blocked on its batch; the goal is <= 2 % of step time.
2. Shares. A 10,032-sample plan (global batch 48, so no share is a whole number of samples per
   batch), with the demo weights and with temperature alpha=0.5: realised share error
   per source (goal <= 1 percentage point) and the largest deviation of any global batch from
   its expected count (stratified: < 1 sample), against i.i.d. weighted sampling (the baseline).

Writes benchmarks/results/mixture.json; the last line printed is the ratio of the streamed
data-wait fraction to the baseline's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

import forge_ray  # noqa: F401  (offline environment)
from forge_ray.config.mixture import MixtureConfig
from forge_ray.config.model import ModelConfig
from forge_ray.config.train import TrainConfig
from forge_ray.mixture import TrainStream, build_plan
from forge_ray.mixture.reader import read_samples
from forge_ray.mixture.stream import KEYS, rank_slots
from forge_ray.storage import Storage
from forge_ray.testing.synthetic_dataset import PAD, write_synthetic_dataset

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "benchmarks" / "results" / "mixture.json"
SIZES = {"docs": 2400, "code": 1600, "tickets": 800}  # train sequences per source
SEQ_LEN, VOCAB = 256, 4096


def synchronous_batches(plan, micro: int, start: int):
    """The baseline: read each step's sequences when the trainer asks for them, no prefetch."""
    for step in range(start, plan.total_steps):
        slots = rank_slots(plan, 0, 1, step)
        arrays = {**slots, **read_samples(plan, slots["source"], slots["row"])}
        yield step, [
            {k: torch.from_numpy(np.ascontiguousarray(arrays[k][i : i + micro])) for k in KEYS}
            for i in range(0, plan.global_batch_size, micro)
        ]


def train(model, opt, batches, warmup: int) -> dict:
    """Run the steps; time the wait for each step's batches and the whole step."""
    waits, steps = [], []
    it = iter(batches)
    while True:
        t0 = time.perf_counter()
        try:
            _, micro_batches = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        for batch in micro_batches:
            out = model(batch["input_ids"], batch["position_ids"])
            logits = out.logits[:, :-1].flatten(0, 1)
            loss = torch.nn.functional.cross_entropy(logits, batch["labels"][:, 1:].flatten(), ignore_index=PAD)
            (loss + 0.01 * out.aux_loss).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        waits.append(t1 - t0)
        steps.append(time.perf_counter() - t0)
    w, s = np.array(waits[warmup:]), np.array(steps[warmup:])
    return {
        "steps_timed": len(s),
        "first_wait_s": round(waits[0], 4),  # pipeline start-up, before the warm-up steps
        "mean_step_s": round(float(s.mean()), 4),
        "mean_wait_s": round(float(w.mean()), 5),
        "max_wait_s": round(float(w.max()), 5),
        "data_wait_fraction": round(float(w.sum() / s.sum()), 5),
    }


def data_wait(quick: bool, root: str) -> dict:
    import torch.distributed as dist

    from forge_ray.cluster import connect
    from forge_ray.models import build_model

    raw = yaml.safe_load((REPO / "jobs" / "configs" / "demo.yaml").read_text())
    model_cfg = ModelConfig(**raw["model"]).model_copy(update={"vocab_size": VOCAB})
    train_cfg = TrainConfig(**raw["train"])
    G, micro = train_cfg.global_batch_size, train_cfg.micro_batch_size
    steps, warmup = (4, 1) if quick else (8, 2)
    ds = write_synthetic_dataset(Storage(root), "bench", SIZES, seq_len=SEQ_LEN, rows_per_shard=1024)
    mixture = _demo_mixture(raw)
    connect(num_cpus=4)
    if not dist.is_initialized():  # DeepSpeed-MoE layers want a process group, even of one
        dist.init_process_group("gloo", init_method=f"file://{root}/pg", rank=0, world_size=1)
    out = {"model": f"{model_cfg.family}, d={model_cfg.hidden_size}, layers={model_cfg.num_layers}",
           "global_batch": G, "micro_batch": micro, "seq_len": SEQ_LEN, "steps": steps}
    for name in ("streamed", "synchronous"):
        plan = build_plan(ds, mixture, global_batch_size=G, total_steps=steps)
        model = build_model(model_cfg, seed=0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        from forge_ray.mixture import reader

        reader._cache.clear()  # both start cold
        reader._cache_bytes = 0
        batches = TrainStream(plan, 0, 1, micro) if name == "streamed" else synchronous_batches(plan, micro, 0)
        out[name] = train(model, opt, batches, warmup)
        print(f"{name:>12}: step {out[name]['mean_step_s']:.3f} s, wait {out[name]['mean_wait_s'] * 1e3:.2f} ms "
              f"= {out[name]['data_wait_fraction']:.3%} of step time", flush=True)
    return out


def _demo_mixture(raw: dict) -> MixtureConfig:
    """The demo's mixture over the sources this benchmark writes (not its restricted / synthetic escalations)."""
    keep = {k: {n: v for n, v in raw["mixture"][k].items() if n in SIZES} for k in ("weights", "max_epochs")}
    return MixtureConfig(**{**raw["mixture"], **keep})


def share_errors(mixture: MixtureConfig, seed: int = 0) -> dict:
    G = 48
    with tempfile.TemporaryDirectory() as root:
        ds = write_synthetic_dataset(Storage(root), "shares", SIZES, seq_len=8, rows_per_shard=4096)
        plan = build_plan(ds, mixture, global_batch_size=G, total_steps=209)
        labels = np.stack([plan.batch(k)[0] for k in range(plan.total_steps)])
    target = np.array([sp.share.target_share for sp in plan.source_plans])
    expected = np.array([sp.share.expected_share(plan.total_samples) for sp in plan.source_plans])
    rng = np.random.default_rng(seed)
    iid = rng.choice(len(target), size=labels.shape, p=expected)

    def measure(lab: np.ndarray) -> dict:
        counts = np.stack([np.bincount(row, minlength=len(target)) for row in lab])
        realised = counts.sum(0) / lab.size
        return {
            "share_error_pp": {s: round(float(abs(r - t) * 100), 3) for s, r, t in zip(plan.sources, realised, target, strict=True)},
            "max_batch_deviation_samples": round(float(np.abs(counts - G * expected).max()), 3),
        }

    return {"samples": int(labels.size), "global_batch": G, "target_share": dict(zip(plan.sources, target.round(4).tolist(), strict=True)),
            "plan": measure(labels), "iid_baseline": measure(iid)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    args = parser.parse_args()
    raw = yaml.safe_load((REPO / "jobs" / "configs" / "demo.yaml").read_text())
    shares = {
        "demo_weights": share_errors(_demo_mixture(raw)),
        "temperature_0.5": share_errors(MixtureConfig(strategy="temperature", alpha=0.5)),
    }
    for mix, res in shares.items():
        for name in ("plan", "iid_baseline"):
            m = res[name]
            print(f"{mix:>16} {name:>12}: share error (pp) {m['share_error_pp']}, "
                  f"worst batch off by {m['max_batch_deviation_samples']} samples")
    with tempfile.TemporaryDirectory() as root:
        wait = data_wait(args.quick, root)
    ratio = wait["streamed"]["data_wait_fraction"] / max(wait["synchronous"]["data_wait_fraction"], 1e-9)
    result = {"quick": args.quick, "shares": shares, "data_wait": wait, "ratio_streamed_over_synchronous_wait": round(ratio, 4)}
    if not args.quick:
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"data-wait fraction, streamed / synchronous baseline: {ratio:.4f}")


if __name__ == "__main__":
    main()
