"""LoRA (forge_ray/models/lora.py) and the SFT settings (train.objective, train.lora)."""

from __future__ import annotations

import pytest
import torch

from forge_ray.config.model import ModelConfig
from forge_ray.config.sft import LoraConfig
from forge_ray.config.train import TrainConfig
from forge_ray.errors import ConfigError
from forge_ray.models import build_model
from forge_ray.models.lora import LoRALinear, apply_lora, merge_lora_weights, trainable_parameters
from forge_ray.train.loss import IGNORE_INDEX, CausalLMLoss


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_hidden_size=48,
                moe={"num_experts": 4, "top_k": 2})
    base.update(kw)
    return ModelConfig(**base)


def _adapted(targets=("q_proj", "v_proj", "down_proj"), rank=4):
    cfg = LoraConfig(rank=rank, alpha=8, targets=list(targets))
    model = build_model(tiny(), seed=0)
    names = apply_lora(model, cfg)
    with torch.no_grad():  # as after training: B is no longer zero
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0, 0.05)
    return model, cfg, names


def test_adapters_on_the_chosen_projections_only_with_the_base_frozen():
    model, _, names = _adapted()
    assert names == [f"layers.{i}.{p}" for i in range(2)
                     for p in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.{ab}" for n in names for ab in ("lora_A", "lora_B")}
    # the base keeps its own names: checkpoints and the HF name table see the same parameters
    assert "layers.0.self_attn.q_proj.weight" in dict(model.named_parameters())
    n_train, n_total = trainable_parameters(model)
    assert 0 < n_train < n_total / 5


def test_a_fresh_adapter_computes_the_base_model():
    x = torch.randint(0, 97, (2, 9))
    base = build_model(tiny(), seed=0).eval()
    adapted = build_model(tiny(), seed=0).eval()
    apply_lora(adapted, LoraConfig(rank=4, targets=["q_proj", "o_proj", "up_proj"]))
    with torch.no_grad():
        torch.testing.assert_close(adapted(x).logits, base(x).logits)


def test_merged_weights_give_the_same_logits_as_the_adapted_forward():
    model, cfg, _ = _adapted()
    model.eval()
    x = torch.randint(0, 97, (2, 11))
    pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5]] * 2)
    merged = merge_lora_weights(model.state_dict(), cfg.scale)
    assert not any("lora" in k for k in merged)
    plain = build_model(tiny(), seed=1).eval()
    plain.load_state_dict(merged, strict=True)
    with torch.no_grad():
        want, got = model(x, pos).logits, plain(x, pos).logits
        assert not torch.allclose(want, build_model(tiny(), seed=0).eval()(x, pos).logits, atol=1e-4)  # it learnt
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_targets_that_name_no_module_are_a_config_error():
    with pytest.raises(ValueError, match=r"\['qkv'\] name no module"):
        TrainConfig(lora={"targets": ["q_proj", "qkv"]})
    from forge_ray.train.deepspeed_adapter import moe_layer

    moe_everywhere = build_model(tiny(family="moe"), seed=0, moe_layer=moe_layer)
    with pytest.raises(ConfigError, match="name no linear module"):
        apply_lora(moe_everywhere, LoraConfig(targets=["gate_proj"]))


def test_the_objective_is_checked():
    assert TrainConfig().objective == "pretrain" and TrainConfig().lora is None
    assert TrainConfig(objective="sft", lora={"rank": 4}).lora.scale == 4.0
    with pytest.raises(ValueError):
        TrainConfig(objective="rlhf")


def test_the_loss_counts_only_labelled_targets():
    logits = torch.randn(1, 6, 10)
    labels = torch.tensor([[1, IGNORE_INDEX, 3, 4, IGNORE_INDEX, 9]])  # 9: padding
    parts = CausalLMLoss(pad_id=9)(type("Out", (), {"logits": logits, "aux_loss": torch.zeros(()),
                                                    "expert_counts": None})(), {"labels": labels})
    assert parts.mask_BT.tolist() == [[0, 1, 1, 0, 0]]
    want = torch.nn.functional.cross_entropy(logits[0, 1:3], labels[0, 2:4])
    torch.testing.assert_close(parts.loss, want)
