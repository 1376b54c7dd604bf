"""Hugging Face weight layout, both ways: Llama (dense) and Mixtral (MoE) folders.

Native names are HF module names without the `model.` prefix; MoE layers differ:

    layers.{i}.mlp.moe.deepspeed_moe.gate.wg.weight                         <-> model.layers.{i}.block_sparse_moe.gate.weight
    layers.{i}.mlp.moe.deepspeed_moe.experts.deepspeed_experts.{e}.gate_proj <-> ...block_sparse_moe.experts.{e}.w1
                                                          ... .up_proj       <-> ...experts.{e}.w3
                                                          ... .down_proj     <-> ...experts.{e}.w2

The Mixtral layout has an MoE block in every layer; a dense layer of a model with
`moe.every_n_layers > 1` is written as E copies of its MLP with a zero router: every
token then gets weights 1/k on k identical experts, the same function.
Reading also accepts transformers 5's fused form (`mlp.experts.gate_up_proj` / `down_proj`).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from forge_ray.config.model import ModelConfig

_MOE = "mlp.moe.deepspeed_moe"
_EXPERT = re.compile(rf"^layers\.(\d+)\.{re.escape(_MOE)}\.experts\.deepspeed_experts\.(\d+)\.(\w+)_proj\.weight$")
_GATE = re.compile(rf"^layers\.(\d+)\.{re.escape(_MOE)}\.gate\.wg\.weight$")
_DENSE_MLP = re.compile(r"^layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight$")
_W = {"gate": "w1", "down": "w2", "up": "w3"}
_W_INV = {v: k for k, v in _W.items()}
ARCHITECTURES = {"dense": "LlamaForCausalLM", "moe": "MixtralForCausalLM"}


def to_hf_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Native (canonical, all experts) state dict -> HF Llama / Mixtral tensor names."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if cfg.tie_embeddings and name == "lm_head.weight":
            continue
        if m := _EXPERT.match(name):
            layer, e, kind = m.groups()
            out[f"model.layers.{layer}.block_sparse_moe.experts.{e}.{_W[kind]}.weight"] = t
        elif m := _GATE.match(name):
            out[f"model.layers.{m.group(1)}.block_sparse_moe.gate.weight"] = t
        elif cfg.family == "moe" and (m := _DENSE_MLP.match(name)):
            layer, kind = m.groups()
            for e in range(cfg.moe.num_experts):
                out[f"model.layers.{layer}.block_sparse_moe.experts.{e}.{_W[kind]}.weight"] = t.clone()
            out.setdefault(
                f"model.layers.{layer}.block_sparse_moe.gate.weight",
                t.new_zeros(cfg.moe.num_experts, cfg.hidden_size),
            )
        elif name == "lm_head.weight":
            out[name] = t
        else:
            out[f"model.{name}"] = t
    return {k: v.contiguous() for k, v in out.items()}


def from_hf_state(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """HF Llama / Mixtral tensors (either on-disk or transformers-5 fused) -> native state dict."""
    out: dict[str, torch.Tensor] = {}
    for name, t in hf.items():
        name = name.removeprefix("model.").replace(".block_sparse_moe.", ".mlp.")
        if m := re.match(r"^layers\.(\d+)\.mlp\.experts\.(\d+)\.(w[123])\.weight$", name):
            layer, e, w = m.groups()
            out[f"layers.{layer}.{_MOE}.experts.deepspeed_experts.{e}.{_W_INV[w]}_proj.weight"] = t
        elif cfg.family == "moe" and (m := re.match(r"^layers\.(\d+)\.mlp\.gate\.weight$", name)):
            out[f"layers.{m.group(1)}.{_MOE}.gate.wg.weight"] = t
        elif m := re.match(r"^layers\.(\d+)\.mlp\.experts\.gate_up_proj$", name):
            gate, up = t.chunk(2, dim=1)  # [E, 2F, D]
            for e in range(t.shape[0]):
                base = f"layers.{m.group(1)}.{_MOE}.experts.deepspeed_experts.{e}"
                out[f"{base}.gate_proj.weight"], out[f"{base}.up_proj.weight"] = gate[e], up[e]
        elif m := re.match(r"^layers\.(\d+)\.mlp\.experts\.down_proj$", name):
            for e in range(t.shape[0]):
                out[f"layers.{m.group(1)}.{_MOE}.experts.deepspeed_experts.{e}.down_proj.weight"] = t[e]
        else:
            out[name] = t
    if cfg.tie_embeddings or "lm_head.weight" not in out:
        out["lm_head.weight"] = out["embed_tokens.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def hf_config(cfg: ModelConfig, *, bos: int | None, eos: int, pad: int | None, dtype: torch.dtype):
    """A transformers `LlamaConfig` / `MixtralConfig` describing `cfg`."""
    from transformers import LlamaConfig, MixtralConfig

    common = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.ffn_hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        initializer_range=cfg.init_std,
        dtype=dtype,
    )
    if cfg.family == "dense":
        c = LlamaConfig(**common, attention_bias=False, mlp_bias=False)
    else:
        c = MixtralConfig(
            **common,
            num_local_experts=cfg.moe.num_experts,
            num_experts_per_tok=cfg.moe.top_k,
            router_aux_loss_coef=cfg.moe.aux_loss_coef,
            sliding_window=None,
        )
    c.architectures = [ARCHITECTURES[cfg.family]]
    return c


def model_config_from_hf(folder: str | Path, base: ModelConfig) -> ModelConfig:
    """`base` with the architecture of the HF checkpoint in `folder` (name and MoE extras kept)."""
    raw = json.loads((Path(folder) / "config.json").read_text())
    arch = (raw.get("architectures") or [""])[0]
    if arch not in ARCHITECTURES.values():
        raise ValueError(f"{folder}: architecture {arch!r} is not one of {sorted(ARCHITECTURES.values())}")
    theta = raw.get("rope_theta") or (raw.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    fields = dict(
        family="moe" if arch == "MixtralForCausalLM" else "dense",
        vocab_size=raw["vocab_size"],
        hidden_size=raw["hidden_size"],
        num_layers=raw["num_hidden_layers"],
        num_heads=raw["num_attention_heads"],
        num_kv_heads=raw.get("num_key_value_heads") or raw["num_attention_heads"],
        ffn_hidden_size=raw["intermediate_size"],
        max_seq_len=raw.get("max_position_embeddings", base.max_seq_len),
        rope_theta=float(theta),
        norm_eps=raw.get("rms_norm_eps", base.norm_eps),
        tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
    )
    head_dim = raw.get("head_dim")
    if head_dim and head_dim != raw["hidden_size"] // raw["num_attention_heads"]:
        raise ValueError(f"{folder}: head_dim {head_dim} != hidden_size / num_attention_heads is not supported")
    data = base.model_dump()
    data.update(fields)
    if fields["family"] == "moe":
        data["moe"] = {**data["moe"], "num_experts": raw["num_local_experts"],
                       "top_k": raw["num_experts_per_tok"], "every_n_layers": 1}
    return ModelConfig.model_validate(data)


def read_hf_state(folder: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def load_hf_folder(folder: str | Path, base: ModelConfig) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(model config, native state dict) of an HF Llama / Mixtral checkpoint folder."""
    cfg = model_config_from_hf(folder, base)
    return cfg, from_hf_state(read_hf_state(folder), cfg)


def save_hf_folder(
    state: dict[str, torch.Tensor],
    cfg: ModelConfig,
    out_dir: str | Path,
    *,
    tokenizer_dir: str | Path | None,
    eos: int,
    bos: int | None = None,
    pad: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write an HF folder: model.safetensors, config.json, generation_config.json, tokenizer files."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype) for k, v in to_hf_state(state, cfg).items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    hf_config(cfg, bos=bos, eos=eos, pad=pad, dtype=dtype).save_pretrained(str(out))
    GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, do_sample=False).save_pretrained(str(out))
    if tokenizer_dir is not None:
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file():
                shutil.copy2(f, out / f.name)
    return out
