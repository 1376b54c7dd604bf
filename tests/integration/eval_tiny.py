"""Tiny Llama versions on a prepared dataset's tokenizer, for the eval room's tests.

Built with `transformers` (2 layers, hidden 128, head_dim 64: vLLM's CPU attention needs
head_dim >= 32) and trained with a short plain PyTorch loop; no trainer room needed.
"""

from __future__ import annotations

import os
import random

import torch


def build(dataset, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = dataset.load_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=dataset.eos_token_id, pad_token_id=dataset.pad_token_id,
                      bos_token_id=tok.bos_token_id, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg), tok


def train_on_rows(model, rows: list[list[int]], steps: int, batch: int = 8, lr: float = 3e-3, seed: int = 0):
    """A few AdamW steps of next-token loss on token rows (all the same length)."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    loss = None
    for _ in range(steps):
        x = torch.tensor([rows[rng.randrange(len(rows))] for _ in range(batch)], dtype=torch.long)
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def train_rows(dataset, per_source: int = 64) -> list[list[int]]:
    rows = []
    for source in dataset.sources:
        rows += dataset.read_split(source, "train").column("input_ids").to_pylist()[:per_source]
    return rows


def publish(storage, model_name: str, version: str, model, tok, tmp_path) -> str:
    from forge_ray.registry import publish_version

    out = os.path.join(str(tmp_path), version)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    publish_version(storage, model_name, version, out,
                    {"code_version": "test", "canaries": [], "lineage": {"run": version}, "metrics": {}})
    return out


def memorise(model, tok, texts: list[str], steps: int = 150, lr: float = 3e-3) -> float:
    """Overfit `model` on a handful of texts (each followed by EOS), all in every batch."""
    rows = [list(tok(t)["input_ids"]) + [tok.eos_token_id] for t in texts]
    width = max(len(r) for r in rows)
    x = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows], dtype=torch.long)
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows], dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(x, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())
