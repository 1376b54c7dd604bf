"""The decoder: shapes, MoE routing outputs, per-document attention, and the dry run's counts."""

from __future__ import annotations

import pytest
import torch

from forge_ray.config.model import ModelConfig
from forge_ray.config.train import TrainConfig
from forge_ray.models import build_model
from forge_ray.models.dry_run import dry_run, memory_per_worker, model_size
from forge_ray.models.presets import preset
from forge_ray.train.deepspeed_adapter import moe_layer


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_hidden_size=48,
                moe={"num_experts": 4, "top_k": 2})
    base.update(kw)
    return ModelConfig(**base)


def test_dense_forward_shapes_and_gqa_projections():
    m = build_model(tiny(), seed=0, moe_layer=moe_layer)
    out = m(torch.randint(0, 97, (3, 11)))
    assert out.logits.shape == (3, 11, 97) and out.expert_counts is None and float(out.aux_loss) == 0.0
    attn = m.layers[0].self_attn
    assert attn.q_proj.weight.shape == (32, 32) and attn.k_proj.weight.shape == (16, 32)  # 2 kv heads of 8


def test_moe_routes_every_token_to_top_k_experts():
    m = build_model(tiny(family="moe"), seed=0, moe_layer=moe_layer)
    out = m(torch.randint(0, 97, (2, 10)))
    assert out.expert_counts.shape == (2, 4)  # [MoE layers, experts]
    assert out.expert_counts.sum(1).tolist() == [2 * 10 * 2] * 2  # tokens x top_k, per layer
    assert float(out.aux_loss.detach()) > 0


def test_an_moe_model_takes_its_moe_layer_from_its_caller():
    with pytest.raises(ValueError, match="needs its MoE layer: pass moe_layer="):
        build_model(tiny(family="moe"), seed=0)
    build_model(tiny(), seed=0)  # a dense model needs none
    calls = []

    def recording(*args):  # the caller's factory is the one used, once per MoE block
        calls.append(args[3])
        return moe_layer(*args)

    build_model(tiny(family="moe"), ep_size=1, seed=0, moe_layer=recording)
    assert calls == [1, 1]


def test_moe_every_n_layers_mixes_dense_and_moe_blocks():
    m = build_model(tiny(family="moe", num_layers=4, moe={"num_experts": 4, "every_n_layers": 2}), seed=0, moe_layer=moe_layer)
    assert [b.is_moe for b in m.layers] == [False, True, False, True] and m.num_moe_layers == 2


def test_experts_start_different_and_seed_is_reproducible():
    a, b = build_model(tiny(family="moe"), seed=1, moe_layer=moe_layer), build_model(tiny(family="moe"), seed=1, moe_layer=moe_layer)
    sa = a.state_dict()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in sa.items())
    e0 = sa["layers.0.mlp.experts.0.gate_proj.weight"]
    e1 = sa["layers.0.mlp.experts.1.gate_proj.weight"]
    assert not torch.equal(e0, e1)


def test_parameter_names_are_forges_and_deepspeeds_table_maps_them_both_ways():
    """No DeepSpeed module path in the model's names; the adapter's table names the very parameter
    DeepSpeed's MoE layer still reaches under its own path."""
    from forge_ray.train.deepspeed_adapter import from_deepspeed_name, to_deepspeed_name

    m = build_model(tiny(family="moe", num_layers=4, moe={"num_experts": 4, "every_n_layers": 2}), seed=0, moe_layer=moe_layer)
    names = list(m.state_dict())
    assert names == [n for n, _ in m.named_parameters()] and not [n for n in names if "deepspeed" in n]
    assert {"layers.1.mlp.router.weight", "layers.3.mlp.experts.3.down_proj.weight"} <= set(names)
    moved = 0
    for name, p in m.named_parameters():
        ds_name = to_deepspeed_name(name)
        assert m.get_parameter(ds_name) is p and from_deepspeed_name(ds_name) == name
        moved += ds_name != name
    assert moved == 2 * (1 + 4 * 3)  # two MoE layers: a router and 4 experts of 3 matrices


def test_packed_documents_do_not_see_each_other():
    """A document packed after another gets the logits it gets alone (positions restart at 0)."""
    m = build_model(tiny(), seed=0, moe_layer=moe_layer).eval()
    a, b = torch.randint(0, 97, (1, 7)), torch.randint(0, 97, (1, 5))
    packed = torch.cat([a, b], dim=1)
    pos = torch.cat([torch.arange(7), torch.arange(5)])[None]
    with torch.no_grad():
        together = m(packed, pos).logits[:, 7:]
        alone = m(b).logits
        unmasked = m(packed).logits[:, 7:]
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked, alone, atol=1e-3)


@pytest.mark.parametrize("kw", [
    {}, {"family": "moe"}, {"family": "moe", "num_layers": 4, "moe": {"num_experts": 4, "every_n_layers": 2}},
    {"tie_embeddings": True}, {"num_kv_heads": 4},
    {"attention_bias": True}, {"qk_norm": True, "head_dim_override": 16},
])
def test_dry_run_counts_match_the_built_model(kw):
    cfg = tiny(**kw)
    m = build_model(cfg, moe_layer=moe_layer)
    assert model_size(cfg, 16).params_total == sum(p.numel() for p in m.parameters())


def test_presets_match_published_parameter_counts():
    assert round(model_size(preset("llama-7b"), 4096).params_total / 1e9, 2) == 6.74
    mix = model_size(preset("mixtral-8x7b"), 4096)
    assert round(mix.params_total / 1e9, 1) == 46.7 and round(mix.params_active / 1e9, 1) == 12.9
    assert round(model_size(preset("dense-1b"), 2048).params_total / 1e9, 2) == 1.10
    # ~6 N FLOPs per token for a dense model, plus attention
    n = model_size(preset("llama-7b"), 4096)
    assert 6 * 6.4e9 < n.flops_per_token < 6 * 8.5e9


def test_memory_shrinks_with_zero_stage_world_size_and_expert_parallelism():
    cfg = preset("mixtral-8x7b")
    kw = dict(seq_len=4096, micro_batch_size=1, bf16=True)
    z1 = memory_per_worker(cfg, world_size=8, zero_stage=1, **kw)
    z2 = memory_per_worker(cfg, world_size=8, zero_stage=2, **kw)
    assert z2["gradients"] < z1["gradients"] and z2["optimizer"] == z1["optimizer"]
    ep8 = cfg.model_copy(update={"moe": cfg.moe.model_copy(update={"expert_parallel_size": 8})})
    assert memory_per_worker(ep8, world_size=8, zero_stage=2, **kw)["weights"] < z2["weights"] / 4
    figures = dry_run(cfg, TrainConfig(max_workers=8, micro_batch_size=1, global_batch_size=8,
                                       min_workers=8, use_gpu=True), 4096)
    assert figures["precision"] == "bf16" and figures["memory_gib_per_worker"]["total"] > 100


def test_experts_skipping_empty_capacity_slots_compute_the_same_model(monkeypatch):
    """Uneven routing pads most experts' buffers with zero rows, which the experts skip: logits and
    every gradient must equal those of experts that compute the whole buffer."""
    from forge_ray.models.layers import ExpertSwiGLU, SwiGLU

    ids = torch.randint(0, 97, (3, 16), generator=torch.Generator().manual_seed(1))

    def run():
        m = build_model(tiny(family="moe"), seed=0, moe_layer=moe_layer)
        out = m(ids)
        (out.logits.logsumexp(-1).mean() + 0.01 * out.aux_loss).backward()
        return out, {n: p.grad.clone() for n, p in m.named_parameters()}

    skipping, grads = run()
    assert int(skipping.expert_counts.max()) > int(skipping.expert_counts.min())  # buffers were padded
    monkeypatch.setattr(ExpertSwiGLU, "forward", SwiGLU.forward)
    whole, whole_grads = run()
    torch.testing.assert_close(skipping.logits, whole.logits, rtol=1e-5, atol=1e-6)
    assert grads.keys() == whole_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, whole_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("filled", [[4, 2], [0, 6], [6, 6], [3, 0]])
def test_expert_skips_empty_rows_wherever_they_are(filled):
    """Expert parallelism stacks several ranks' buffers, so empty rows are not only a suffix."""
    from forge_ray.models.layers import ExpertSwiGLU, SwiGLU

    torch.manual_seed(0)
    expert = ExpertSwiGLU(8, 16)
    x = torch.randn(2, 1, 6, 8)
    for group, n in enumerate(filled):
        x[group, 0, n:] = 0
    x.requires_grad_(True)
    out = expert(x)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *expert.parameters()], g)
    ref = SwiGLU.forward(expert, x)
    ref_grads = torch.autograd.grad(ref, [x, *expert.parameters()], g)
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b)
