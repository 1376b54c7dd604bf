"""Each open-weights family: a tiny random model built with transformers' own config class (no
download), imported -> forge model with the same logits, exported -> transformers loads it with the
same class and the same logits. Tolerance: 1e-5 absolute and relative (float32, same operations in
a different order)."""

from __future__ import annotations

import json

import pytest
import torch

from forge_ray.config.model import ModelConfig
from forge_ray.models import build_model
from forge_ray.models.hf import load_hf_folder, save_hf_folder
from forge_ray.train.deepspeed_adapter import moe_layer

V = 101
COMMON = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, initializer_range=0.2, max_position_embeddings=64)
LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
# case -> (transformers config class, model class, extra config fields)
CASES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "llama-3.1-rope": ("LlamaConfig", "LlamaForCausalLM", {"rope_parameters": LLAMA3}),
    "llama-tied": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": True}),
    "mistral-window": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 5, "head_dim": 8}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16}),  # head_dim != hidden / heads, as Qwen3 has
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2}),
}


def hf_model(case: str, seed: int = 0):
    import transformers

    config_cls, model_cls, extra = CASES[case]
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**COMMON, **extra)).eval()
    with torch.no_grad():  # transformers starts biases and norms at 0 / 1: make them count
        for name, p in model.named_parameters():
            if name.endswith(("bias", "norm.weight", "layernorm.weight")):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
    return model


def logits(model, ids):
    with torch.no_grad():
        out = model(ids)
    return out.logits


@pytest.mark.parametrize("case", sorted(CASES))
def test_import_then_export_keeps_the_family_and_its_logits(tmp_path, case):
    from transformers import AutoModelForCausalLM

    hf = hf_model(case)
    hf.save_pretrained(tmp_path / "hf")
    cfg, state = load_hf_folder(tmp_path / "hf", ModelConfig())
    ours = build_model(cfg, moe_layer=moe_layer).eval()
    ours.load_state_dict(state)
    ids = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(logits(ours, ids), logits(hf, ids), atol=1e-5, rtol=1e-5)

    save_hf_folder(ours.state_dict(), cfg, tmp_path / "export", tokenizer_dir=None, eos=2)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert type(exported).__name__ == CASES[case][1]
    assert json.loads((tmp_path / "export" / "config.json").read_text())["architectures"] == [CASES[case][1]]
    torch.testing.assert_close(logits(exported, ids), logits(hf, ids), atol=1e-5, rtol=1e-5)


def test_an_unknown_rope_scaling_type_is_refused(tmp_path):
    hf_model("llama").config.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["architectures"] = ["LlamaForCausalLM"]
    raw["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    raw.pop("rope_parameters", None)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="rope scaling type 'yarn' is not supported"):
        load_hf_folder(tmp_path, ModelConfig())


def test_an_unsupported_architecture_names_the_supported_list(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    with pytest.raises(ValueError, match=r"'GPT2LMHeadModel' is not supported; supported: .*Qwen3ForCausalLM"):
        load_hf_folder(tmp_path, ModelConfig())
