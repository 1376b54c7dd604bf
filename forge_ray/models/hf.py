"""Hugging Face weight layout, both ways: Llama (dense) and Mixtral (MoE) folders.

forge's parameter names (`forge_ray.models.names`) map to HF's through one table, `NAMES`, used
both ways (`{}`: a layer, then an expert). Around it, three rules of the layouts:

- the Mixtral layout has an MoE block in every layer: a dense layer of a model with
  `moe.every_n_layers > 1` is written as E copies of its MLP with a zero router (every token then
  gets weights 1/k on k identical experts: the same function);
- reading also accepts transformers 5's spelling (`mlp.gate`, `mlp.experts.{e}`) and its fused
  experts (`mlp.experts.gate_up_proj` [E, 2F, D], `mlp.experts.down_proj` [E, D, F]);
- tied embeddings: no `lm_head.weight` is written, and one is made from the embedding on reading.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from forge_ray.config.model import ModelConfig

# forge name -> HF name (the on-disk Llama / Mixtral layout, which transformers 5 and vLLM read).
NAMES = {
    "embed_tokens.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
    "layers.{}.input_layernorm.weight": "model.layers.{}.input_layernorm.weight",
    "layers.{}.post_attention_layernorm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "layers.{}.self_attn.q_proj.weight": "model.layers.{}.self_attn.q_proj.weight",
    "layers.{}.self_attn.k_proj.weight": "model.layers.{}.self_attn.k_proj.weight",
    "layers.{}.self_attn.v_proj.weight": "model.layers.{}.self_attn.v_proj.weight",
    "layers.{}.self_attn.o_proj.weight": "model.layers.{}.self_attn.o_proj.weight",
    "layers.{}.mlp.gate_proj.weight": "model.layers.{}.mlp.gate_proj.weight",
    "layers.{}.mlp.up_proj.weight": "model.layers.{}.mlp.up_proj.weight",
    "layers.{}.mlp.down_proj.weight": "model.layers.{}.mlp.down_proj.weight",
    "layers.{}.mlp.router.weight": "model.layers.{}.block_sparse_moe.gate.weight",
    "layers.{}.mlp.experts.{}.gate_proj.weight": "model.layers.{}.block_sparse_moe.experts.{}.w1.weight",
    "layers.{}.mlp.experts.{}.down_proj.weight": "model.layers.{}.block_sparse_moe.experts.{}.w2.weight",
    "layers.{}.mlp.experts.{}.up_proj.weight": "model.layers.{}.block_sparse_moe.experts.{}.w3.weight",
}
_FROM_HF = {hf: forge for forge, hf in NAMES.items()}
_INDEX = re.compile(r"(?<=\.)\d+(?=\.)")  # a layer or expert number: a whole dotted component
_DENSE_MLP = re.compile(r"^layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight$")
_FUSED = re.compile(r"^(model\.layers\.\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$")
ARCHITECTURES = {"dense": "LlamaForCausalLM", "moe": "MixtralForCausalLM"}


def _rename(name: str, table: dict[str, str]) -> str | None:
    target = table.get(_INDEX.sub("{}", name))
    return None if target is None else target.format(*_INDEX.findall(name))


def to_hf_name(name: str) -> str:
    hf = _rename(name, NAMES)
    if hf is None:
        raise KeyError(f"{name!r} is not a parameter name of forge's models")
    return hf


def to_hf_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """forge state dict (all experts, global numbers) -> HF Llama / Mixtral tensor names."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if cfg.tie_embeddings and name == "lm_head.weight":
            continue
        if cfg.family == "moe" and (m := _DENSE_MLP.match(name)):
            layer, proj = m.groups()
            for e in range(cfg.moe.num_experts):
                out[to_hf_name(f"layers.{layer}.mlp.experts.{e}.{proj}_proj.weight")] = t.clone()
            out.setdefault(to_hf_name(f"layers.{layer}.mlp.router.weight"),
                           t.new_zeros(cfg.moe.num_experts, cfg.hidden_size))
        else:
            out[to_hf_name(name)] = t
    return {k: v.contiguous() for k, v in out.items()}


def _on_disk_layout(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """transformers 5's Mixtral tensors (`mlp.gate`, `mlp.experts.{e}`, fused experts) -> the on-disk
    names of `NAMES`; a name without the `model.` prefix gets it."""
    out: dict[str, torch.Tensor] = {}
    for name, t in hf.items():
        if not name.startswith(("model.", "lm_head.")):
            name = f"model.{name}"
        if m := _FUSED.match(name):
            experts = f"{m.group(1)}.block_sparse_moe.experts"
            if m.group(2) == "gate_up_proj":
                gate, up = t.chunk(2, dim=1)
                for e in range(t.shape[0]):
                    out[f"{experts}.{e}.w1.weight"], out[f"{experts}.{e}.w3.weight"] = gate[e], up[e]
            else:
                for e in range(t.shape[0]):
                    out[f"{experts}.{e}.w2.weight"] = t[e]
            continue
        if cfg.family == "moe":
            name = re.sub(r"\.mlp\.(gate\.weight$|experts\.)", r".block_sparse_moe.\1", name)
        out[name] = t
    return out


def from_hf_state(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """HF Llama / Mixtral tensors (on-disk or transformers-5 layout) -> forge state dict; tensors the
    table does not name keep their name without `model.` (the model's strict load then names them)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in _on_disk_layout(hf, cfg).items():
        out[_rename(name, _FROM_HF) or name.removeprefix("model.")] = t
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
