"""One measurement of benchmarks/train.py's long-sequence part, in a process of its own (peak memory
is per process): `python benchmarks/long_seq_probe.py MODE SEQ MICRO STEPS` prints one JSON line.

MODE: dense_mask | spans (document attention) or spans+ckpt (with activation checkpointing).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forge_ray.config.model import ModelConfig  # noqa: E402
from forge_ray.models import build_model  # noqa: E402

THREADS, VOCAB = 2, 2048
ARCH = dict(hidden_size=256, num_layers=8, num_heads=4, num_kv_heads=2, ffn_hidden_size=688, vocab_size=VOCAB)


def packed(micro: int, seq: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of packed documents, 64 to 512 tokens long (the embedded corpora's range)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (micro, seq), generator=g)
    pos = torch.empty(micro, seq, dtype=torch.long)
    for b in range(micro):
        t = 0
        while t < seq:
            n = min(int(torch.randint(64, 513, (1,), generator=g)), seq - t)
            pos[b, t : t + n] = torch.arange(n)
            t += n
    return ids, pos


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main() -> None:
    mode, seq, micro, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(THREADS)
    cfg = ModelConfig(**ARCH, max_seq_len=seq, document_attention="dense_mask" if mode == "dense_mask" else "spans")
    model = build_model(cfg, seed=0)
    model.activation_checkpointing = mode.endswith("+ckpt")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids, pos = packed(micro, seq)

    def step() -> float:
        out = model(ids, pos)
        loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # gradients stay allocated: the peak below is activations
        return float(loss.detach())

    # peak memory of the first forward + backward over what the model, its grads and Adam hold
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # Adam moments allocated before the baseline
    opt.zero_grad(set_to_none=False)
    base = rss_bytes()
    loss = step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    best = sorted(times)[: max(1, len(times) // 2)]  # the faster half: a shared machine's noise is one-sided
    step_s = sum(best) / len(best)
    print(json.dumps({"mode": mode, "seq_len": seq, "micro_batch": micro, "loss": loss, "step_time_s": step_s,
                      "tokens_per_s": micro * seq / step_s, "peak_activation_mib": (peak - base) / 2**20}))


if __name__ == "__main__":
    main()
