"""Tokenizer: train the organisation's own byte-level BPE, or reuse an existing tokenizer folder.

Either way the result is saved as a `transformers` fast tokenizer folder
(`AutoTokenizer.from_pretrained(folder)` loads it) and described by `tokenizer_info`.
Redaction placeholders (<EMAIL>, ...) are special tokens of a trained tokenizer, so each is
one token and never split into pieces a model could learn to complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections.abc import Iterable, Iterator

from forge_ray.prepare.pii import PLACEHOLDERS, placeholder


def special_tokens(cfg, pii_cfg) -> list[str]:
    """EOS, PAD, (BOS), the redaction placeholders and the configured extras, without repeats."""
    tokens = [cfg.eos_token, cfg.pad_token] + ([cfg.bos_token] if cfg.bos_token else [])
    tokens += list(PLACEHOLDERS.values()) + [placeholder(p.name) for p in pii_cfg.patterns]
    tokens += [placeholder(d.name) for d in pii_cfg.deny_lists] + list(cfg.special_tokens)
    return list(dict.fromkeys(tokens))


def train_tokenizer(texts: Iterable[str], cfg, pii_cfg, out_dir: str, max_bytes: int | None = None) -> dict:
    """Train a byte-level BPE on `texts` (up to `max_bytes` of them) and save it to `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = special_tokens(cfg, pii_cfg)
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_capped(texts, max_bytes), trainer=trainer)
    save_fast_tokenizer(tok, cfg, specials, out_dir)
    return tokenizer_info(out_dir)


def save_fast_tokenizer(tok, cfg, specials: list[str], out_dir: str) -> None:
    """Write the folder `transformers` reads as a `PreTrainedTokenizerFast` (no transformers import:
    the prepare workers stay light)."""
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    named = {"eos_token": cfg.eos_token, "pad_token": cfg.pad_token}
    if cfg.bos_token:
        named["bos_token"] = cfg.bos_token
    extra = [t for t in specials if t not in named.values()]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **named,
        "additional_special_tokens": extra,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1 << 30,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
        json.dump({**named, "additional_special_tokens": extra}, f, indent=2, sort_keys=True)


def reuse_tokenizer(cfg, out_dir: str) -> dict:
    """Copy an existing tokenizer folder (continued pre-training from open weights)."""
    from transformers import AutoTokenizer

    from forge_ray.errors import ConfigError

    if not os.path.isdir(cfg.path):
        raise ConfigError("prepare.tokenizer.path", [f"not a tokenizer folder: {cfg.path}"])
    tok = AutoTokenizer.from_pretrained(cfg.path)
    if not getattr(tok, "is_fast", False) or tok.eos_token_id is None:
        raise ConfigError("prepare.tokenizer.path", [f"{cfg.path}: needs a fast tokenizer with an EOS token"])
    if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
        tok.add_special_tokens({"pad_token": cfg.pad_token})
    tok.save_pretrained(out_dir)
    return tokenizer_info(out_dir)


def tokenizer_info(folder: str) -> dict:
    """The manifest's `tokenizer` entry: ids of the special tokens and a hash of the files."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json")) as f:
        config = json.load(f)

    def token_id(name: str) -> int | None:
        value = config.get(name)
        if isinstance(value, dict):  # transformers may save AddedToken dicts
            value = value.get("content")
        return tok.token_to_id(value) if value else None

    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        h.update(name.encode() + b"\0")
        with open(os.path.join(folder, name), "rb") as f:
            h.update(f.read())
    return {
        "path": "tokenizer",
        "sha256": h.hexdigest(),
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "eos_token_id": token_id("eos_token"),
        "pad_token_id": token_id("pad_token"),
        "bos_token_id": token_id("bos_token"),
    }


def _capped(texts: Iterable[str], max_bytes: int | None) -> Iterator[str]:
    total = 0
    for t in texts:
        yield t
        total += len(t)
        if max_bytes is not None and total >= max_bytes:
            return


def encoder(tokenizer_json: str):
    """A `tokenizers.Tokenizer` from its JSON (shipped to Ray tasks as a string, no shared disk)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer_json)


def build_tokenizer(train_text, cfg, pii_cfg, fs, out_dir: str) -> tuple[dict, str]:
    """Train (in a Ray task that streams the training split) or reuse the tokenizer; write its
    files to `out_dir` on `fs`. Returns (manifest entry, tokenizer JSON for the encoders)."""
    import tempfile

    import ray

    files = ray.get(ray.remote(num_cpus=1)(_tokenizer_files).remote(train_text, cfg, pii_cfg))
    fs.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as local:
        for name, data in sorted(files.items()):
            with fs.open(posixpath.join(out_dir, name), "wb") as f:
                f.write(data)
            with open(os.path.join(local, name), "wb") as f:
                f.write(data)
        info = tokenizer_info(local)
    return info, files["tokenizer.json"].decode()


def _tokenizer_files(train_text, cfg, pii_cfg) -> dict[str, bytes]:
    """The Ray task: the tokenizer folder's files, by name."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        if cfg.mode == "reuse":
            reuse_tokenizer(cfg, d)
        else:
            texts = (t for b in train_text.iter_batches(batch_format="pyarrow", batch_size=256)
                     for t in b["text"].to_pylist())
            train_tokenizer(texts, cfg, pii_cfg, d, max_bytes=int(cfg.max_train_mb * 1e6))
        out = {}
        for name in os.listdir(d):
            with open(os.path.join(d, name), "rb") as f:
                out[name] = f.read()
        return out
