"""Hugging Face weight layout, both ways: Llama, Mistral, Qwen2, Qwen3 (dense) and Mixtral (MoE) folders.

The dense families share Llama's tensor names (Qwen2 adds q/k/v biases, Qwen3 q/k norms); which
family a folder is, and its config.json, is `models/families.py`.

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

import re
import shutil
from pathlib import Path

import torch

from forge_ray.config.model import ModelConfig
from forge_ray.models.families import SUPPORTED, hf_config, model_config_from_hf

__all__ = ["NAMES", "SUPPORTED", "from_hf_state", "hf_config", "load_hf_folder", "model_config_from_hf",
           "read_hf_state", "save_hf_folder", "to_hf_name", "to_hf_state"]

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
    "layers.{}.self_attn.q_proj.bias": "model.layers.{}.self_attn.q_proj.bias",
    "layers.{}.self_attn.k_proj.bias": "model.layers.{}.self_attn.k_proj.bias",
    "layers.{}.self_attn.v_proj.bias": "model.layers.{}.self_attn.v_proj.bias",
    "layers.{}.self_attn.q_norm.weight": "model.layers.{}.self_attn.q_norm.weight",
    "layers.{}.self_attn.k_norm.weight": "model.layers.{}.self_attn.k_norm.weight",
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
    """(model config, native state dict) of an HF checkpoint folder of a supported family."""
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
    if tokenizer_dir is not None:  # may be a whole model folder (GRPO reuses its base's tokenizer)
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file() and not (out / f.name).exists() and not _model_file(f.name):
                shutil.copy2(f, out / f.name)
    return out


def _model_file(name: str) -> bool:
    """Weights, manifests and checksums of a model folder: never copied in as tokenizer files."""
    return name.endswith((".safetensors", ".bin", ".pt", ".pth", ".index.json")) or name in (
        "manifest.json", "checksums.json", "_COMPLETE")
