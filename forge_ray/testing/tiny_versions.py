"""Tiny random-init versions (a few M params) for tests and benchmarks, built offline.

    from forge_ray.testing.tiny_versions import publish_tiny
    publish_tiny(storage, "m", "v1", family="dense", seed=1)

The tokenizer is a byte-level BPE trained here with `tokenizers` on the Python reference docs
that ship with the standard library, so nothing is downloaded.
"""

from __future__ import annotations

import functools
import os
import tempfile

from forge_ray.registry.canary import DEFAULT_PROMPTS, record_canaries
from forge_ray.registry.publish import publish_version
from forge_ray.registry.store import VersionInfo

VOCAB = 512


@functools.cache
def _tokenizer_json() -> str:
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(topics.values())[:200], trainer)
    return tok.to_str()


def build_tiny(out_dir: str, family: str = "dense", seed: int = 0, layers: int = 2, hidden: int = 128) -> str:
    """Save a random-init Llama (dense) or Mixtral (moe) model with a tokenizer into `out_dir`."""
    import torch
    from tokenizers import Tokenizer
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MixtralConfig,
        MixtralForCausalLM,
        PreTrainedTokenizerFast,
    )

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
                                        bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    common = dict(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden,
                  num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 128),  # head_dim 64 (vLLM CPU attention needs >= 32)
                  max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                  initializer_range=0.2, tie_word_embeddings=False)
    torch.manual_seed(seed)
    if family == "dense":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif family == "moe":
        model = MixtralForCausalLM(MixtralConfig(**common, num_local_experts=4, num_experts_per_tok=2))
    else:
        raise ValueError(f"family must be dense or moe, not {family!r}")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def publish_tiny(storage, model: str, version: str, family: str = "dense", seed: int = 0,
                 canary_tokens: int = 16, **kwargs) -> VersionInfo:
    """Build a tiny model, record its canaries and publish it as a candidate of `model`."""
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = build_tiny(os.path.join(tmp, "hf"), family, seed, **kwargs)
        manifest = {"code_version": "test", "canaries": record_canaries(hf_dir, DEFAULT_PROMPTS, canary_tokens),
                    "lineage": {"run": f"tiny-{family}-seed{seed}"}, "metrics": {}}
        return publish_version(storage, model, version, hf_dir, manifest)
