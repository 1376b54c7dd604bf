"""Fixtures for instruction-tuning tests and the SFT benchmark: the embedded instruction set on
disk, a tokenizer for it as forge trains them (no chat template of its own), a base model folder,
and the forge file that fine-tunes it.

    paths = sft_workspace(tmp, n=1200)            # SftWorkspace(root, data, tokenizer, base)
    config = sft_config(paths, ["train.steps=100", "train.lora.rank=8"])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from forge_ray.config import ForgeConfig, validate_config
from forge_ray.config.loader import apply_overrides

# Conversations prepare must quarantine (no assistant turn, an unknown role, a tool result without a call).
MALFORMED_CONVERSATIONS = [
    {"id": "bad-1", "messages": [{"role": "user", "content": "Anyone there?"}]},
    {"id": "bad-2", "messages": [{"role": "user", "content": "Hi"}, {"role": "wizard", "content": "Hello"}]},
    {"id": "bad-3", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "{}"},
                                 {"role": "assistant", "content": "y"}]},
]
TINY_MODEL = {"name": "sft-tiny", "family": "dense", "hidden_size": 128, "num_layers": 2, "num_heads": 4,
              "num_kv_heads": 2, "ffn_hidden_size": 256, "max_seq_len": 512}


@dataclass
class SftWorkspace:
    root: Path  # the storage root
    data: Path  # the instruction set (jsonl, format: chat)
    tokenizer: Path  # a forge-trained tokenizer folder
    base: Path  # the base model: an HF folder (random init, the tokenizer's vocabulary)


def train_tokenizer(texts: list[str], out_dir: Path, vocab_size: int = 1024) -> Path:
    """A byte-level BPE as `prepare` trains one (eos <|endoftext|>, pad <|pad|>), saved as a folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from forge_ray.config.prepare import TokenizerConfig
    from forge_ray.prepare.tokenizer import save_fast_tokenizer

    cfg = TokenizerConfig(vocab_size=vocab_size)
    specials = [cfg.eos_token, cfg.pad_token]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    save_fast_tokenizer(tok, cfg, specials, str(out_dir))
    return out_dir


def base_model(tokenizer_dir: Path, out_dir: Path, model: dict | None = None, seed: int = 0) -> Path:
    """A seeded random-init model of `model` (TINY_MODEL by default) as an HF folder."""
    import json

    from forge_ray.config.model import ModelConfig
    from forge_ray.models import build_model
    from forge_ray.models.hf import save_hf_folder
    from forge_ray.train.deepspeed_adapter import moe_layer

    info = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    vocab = len(info["model"]["vocab"]) + sum(1 for t in info["added_tokens"] if t["id"] >= len(info["model"]["vocab"]))
    cfg = ModelConfig(**{**TINY_MODEL, **(model or {}), "vocab_size": vocab})
    specials = {t["content"]: t["id"] for t in info["added_tokens"]}
    save_hf_folder(build_model(cfg, seed=seed, moe_layer=moe_layer).state_dict(), cfg, out_dir, tokenizer_dir=tokenizer_dir,
                   eos=specials["<|endoftext|>"], pad=specials["<|pad|>"])
    return out_dir


def sft_workspace(tmp: Path, n: int = 1200, seed: int = 0, vocab_size: int = 1024) -> SftWorkspace:
    from forge_ray.corpora.instructions import instruction_records, write_instructions

    tmp = Path(tmp)
    data = write_instructions(tmp / "root" / "corpora" / "instructions" / "train.jsonl", n=n, seed=seed)
    texts = [m["content"] or "" for r in instruction_records(n, seed) for m in r["messages"]]
    texts += ["<|system|>\n<|user|>\n<|assistant|>\n<|tool|>\n<tool_call></tool_call>"] * 50  # the template's markers
    tok = train_tokenizer(texts, tmp / "tokenizer", vocab_size)
    return SftWorkspace(root=tmp / "root", data=data, tokenizer=tok, base=base_model(tok, tmp / "base"))


def sft_config(ws: SftWorkspace, overrides: list[str] | None = None) -> ForgeConfig:
    """The forge file of jobs/configs/sft.yaml, pointed at the workspace (a tiny dense model, 1 worker)."""
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "jobs" / "configs" / "sft.yaml").read_text())
    raw["project"]["storage_root"] = str(ws.root)
    raw["prepare"]["tokenizer"]["path"] = str(ws.tokenizer)
    raw["model"]["init_from"] = str(ws.base)
    return validate_config(apply_overrides(raw, overrides or []), "sft.yaml")
