"""Dense -> MoE upcycling: at step 0 the MoE computes the dense model's logits, its export is a
Mixtral that transformers loads with the same logits, and the experts drift apart in training."""

from __future__ import annotations

import pytest
import torch

from forge_ray.config.model import ModelConfig
from forge_ray.models import build_model
from forge_ray.models.hf import save_hf_folder
from forge_ray.models.upcycle import upcycle_folder, upcycled_config
from forge_ray.train.deepspeed_adapter import moe_layer
from tests.unit.test_families import V, hf_model, logits


@pytest.mark.parametrize("every_n_layers", [1, 2])
def test_upcycled_moe_equals_its_dense_source_at_step_0_and_exports_as_mixtral(tmp_path, every_n_layers):
    from transformers import AutoModelForCausalLM

    dense = hf_model("llama")
    dense.save_pretrained(tmp_path / "dense")
    base = ModelConfig(family="moe", upcycle_from=str(tmp_path / "dense"),
                       moe={"num_experts": 4, "top_k": 2, "every_n_layers": every_n_layers})
    cfg = upcycled_config(tmp_path / "dense", base)
    assert (cfg.family, cfg.hf_architecture, cfg.moe.num_experts) == ("moe", "mixtral", 4)
    moe = build_model(cfg, moe_layer=moe_layer).eval()
    moe.load_state_dict(upcycle_folder(tmp_path / "dense", cfg, seed=0))
    ids = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(logits(moe, ids), logits(dense, ids), atol=1e-5, rtol=1e-5)
    assert moe(ids).expert_counts.count_nonzero() > 2  # a random router: tokens spread over the experts

    save_hf_folder(moe.state_dict(), cfg, tmp_path / "export", tokenizer_dir=None, eos=2)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert type(exported).__name__ == "MixtralForCausalLM"
    torch.testing.assert_close(logits(exported, ids), logits(dense, ids), atol=1e-5, rtol=1e-5)


def test_upcycled_moe_trains_and_its_experts_drift_apart(tmp_path):
    hf_model("llama").save_pretrained(tmp_path / "dense")
    cfg = upcycled_config(tmp_path / "dense", ModelConfig(family="moe", moe={"num_experts": 4, "top_k": 2}))
    model = build_model(cfg, moe_layer=moe_layer)
    model.load_state_dict(upcycle_folder(tmp_path / "dense", cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(0, V, (4, 16), generator=torch.Generator().manual_seed(2))
    losses = []
    for _ in range(8):
        out = model(ids)
        loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
        (loss + 0.01 * out.aux_loss).backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    experts = model.layers[0].mlp.experts
    assert not torch.equal(experts[0].gate_proj.weight, experts[1].gate_proj.weight)


def test_a_source_the_mixtral_layout_cannot_hold_is_refused(tmp_path):
    hf_model("qwen2").save_pretrained(tmp_path / "qwen2")
    with pytest.raises(ValueError, match="q/k/v biases or q/k norms"):
        upcycled_config(tmp_path / "qwen2", ModelConfig(family="moe"))
    with pytest.raises(ValueError, match="needs model.family 'moe'"):
        ModelConfig(upcycle_from=str(tmp_path / "qwen2"))
