"""The long-sequence path: per-document SDPA spans and activation checkpointing compute what the
dense-mask reference computes (loss and gradients, float32 on CPU, tolerance 1e-5)."""

from __future__ import annotations

import pytest
import torch

from forge_ray.models import build_model
from forge_ray.models.layers import Documents
from forge_ray.train.deepspeed_adapter import moe_layer
from tests.unit.test_model_hf import tiny


def packed_batch(B=3, T=40, V=101, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T), generator=g)
    pos = torch.empty(B, T, dtype=torch.long)
    lengths = [[T], [7, 1, 12, 20], [5, 9, 26]]  # one document; a lone token; a row opening mid-document
    for b, row in enumerate(lengths):
        pos[b] = torch.cat([torch.arange(n) for n in row])
    pos[2, :5] += 30
    return ids, pos


def loss_and_grads(model, ids, pos):
    model.zero_grad()
    out = model(ids, pos)
    loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]),
                                             ids[:, 1:].reshape(-1)) + 0.01 * out.aux_loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_spans_are_the_documents_of_each_row():
    _, pos = packed_batch()
    assert Documents.from_positions(pos).spans == (((0, 40),), ((0, 7), (7, 8), (8, 20), (20, 40)),
                                                    ((0, 5), (5, 14), (14, 40)))


@pytest.mark.parametrize("family", ["dense", "moe"])
@pytest.mark.parametrize("ckpt", [False, True])
def test_spans_and_checkpointing_equal_the_dense_mask_path(family, ckpt):
    ids, pos = packed_batch()
    ref = build_model(tiny(family=family, document_attention="dense_mask"), seed=0, moe_layer=moe_layer)
    new = build_model(tiny(family=family, document_attention="spans"), seed=0, moe_layer=moe_layer)
    new.activation_checkpointing = ckpt
    ref_loss, ref_grads = loss_and_grads(ref, ids, pos)
    new_loss, new_grads = loss_and_grads(new, ids, pos)
    torch.testing.assert_close(new_loss, ref_loss, atol=1e-5, rtol=1e-5)
    assert ref_grads.keys() == new_grads.keys()
    for name, g in ref_grads.items():
        torch.testing.assert_close(new_grads[name], g, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("name,seq", [("dense-1b", 2048), ("llama-7b", 4096), ("mixtral-8x7b", 4096)])
def test_dry_run_reports_memory_with_and_without_activation_checkpointing(name, seq):
    from forge_ray.config.train import TrainConfig
    from forge_ray.models.dry_run import dry_run, format_dry_run
    from forge_ray.models.presets import preset

    train = TrainConfig(min_workers=8, max_workers=8, micro_batch_size=4, global_batch_size=64, use_gpu=True)
    d = dry_run(preset(name), train, seq)
    by = d["memory_gib_total_by_activation_checkpointing"]
    assert by["on"] < by["off"] and d["memory_gib_per_worker"]["total"] == by["off"]
    assert "with / without activation checkpointing" in format_dry_run(d)
    on = dry_run(preset(name), train.model_copy(update={"activation_checkpointing": True}), seq)
    assert on["memory_gib_per_worker"]["total"] == by["on"]
