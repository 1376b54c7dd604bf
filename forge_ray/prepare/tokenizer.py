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


# The files of a tokenizer folder, copied byte for byte on reuse (the chat template lives in
# tokenizer_config.json's `chat_template`, or beside it in chat_template.jinja / .json).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt")


def reuse_problem(path: str | None) -> str | None:
    """Why the folder at `path` (local or a URI) cannot be reused as it is, or None when it can.

    forge reads fast tokenizers (`tokenizer.json`) only; a sentencepiece-only folder
    (`tokenizer.model`) is named as such, with the one-off conversion that fixes it."""
    if not path:
        return "no tokenizer folder given (prepare.tokenizer.path, or model.init_from)"
    from forge_ray.storage import url_to_fs

    fs, root = url_to_fs(path)
    if not fs.isdir(root):
        return f"not a tokenizer folder: {path} does not exist or is not a folder"
    if fs.isfile(posixpath.join(root, "tokenizer.json")):
        return None
    if fs.isfile(posixpath.join(root, "tokenizer.model")):
        return (f"{path} holds a sentencepiece tokenizer.model but no tokenizer.json: forge reuses fast "
                "tokenizers only; convert it once with transformers (AutoTokenizer.from_pretrained(folder)"
                ".save_pretrained(folder) writes tokenizer.json; needs the sentencepiece package)")
    return f"not a tokenizer folder: {path} has no tokenizer.json"


def reuse_tokenizer(cfg, out_dir: str) -> dict:
    """Copy an existing tokenizer folder as it is (continued pre-training from open weights).

    Nothing is added: the vocabulary, the special tokens and their ids, BOS/EOS and the chat
    template stay the model's. Padding needs no new token: it is masked, and its id is one of the
    tokenizer's own tokens that the data never holds (`padding_token`)."""
    import shutil

    from forge_ray.errors import ConfigError

    if cfg.path and "://" in cfg.path:  # on an object store: this node's verified copy (registry.cache)
        from forge_ray.registry import local_folder

        cfg = cfg.model_copy(update={"path": local_folder(cfg.path)})
    problem = reuse_problem(cfg.path)
    if problem:
        raise ConfigError("prepare.tokenizer.path", [problem])
    os.makedirs(out_dir, exist_ok=True)
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(cfg.path, name)):
            shutil.copyfile(os.path.join(cfg.path, name), os.path.join(out_dir, name))
    try:
        return tokenizer_info(out_dir, explicit_pad(cfg))
    except ValueError as e:
        raise ConfigError("prepare.tokenizer", [f"{cfg.path}: {e}"]) from None


def explicit_pad(cfg) -> str | None:
    """`prepare.tokenizer.pad_token` when the forge file set it (a default is not a request)."""
    return cfg.pad_token if "pad_token" in cfg.model_fields_set else None


def _config(folder: str) -> dict:
    path = os.path.join(folder, "tokenizer_config.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _named(config: dict, name: str) -> str | None:
    value = config.get(name)
    if isinstance(value, dict):  # transformers may save AddedToken dicts
        value = value.get("content")
    return value or None


def chat_template(folder: str) -> str | None:
    """The tokenizer folder's chat template as it ships (tokenizer_config.json's `chat_template`,
    else chat_template.jinja / chat_template.json), or None."""
    template = _config(folder).get("chat_template")
    if template is None and os.path.isfile(os.path.join(folder, "chat_template.jinja")):
        with open(os.path.join(folder, "chat_template.jinja")) as f:
            template = f.read()
    if template is None and os.path.isfile(os.path.join(folder, "chat_template.json")):
        with open(os.path.join(folder, "chat_template.json")) as f:
            template = json.load(f).get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        template = "\n".join(t.get("template", "") for t in template)
    return template


def padding_token(tok, config: dict, template: str | None, requested: str | None = None) -> str:
    """The token whose id pads the last sequence of a split (and which the loss masks).

    In order: the one the forge file names; the tokenizer's own pad token unless it is EOS (EOS is
    trained on); else the first of its special tokens that is neither EOS nor BOS nor used by the
    chat template (text never holds it); else its unknown token. ValueError when none is left."""
    eos, bos = _named(config, "eos_token"), _named(config, "bos_token")
    if requested is not None:
        if tok.token_to_id(requested) is None:
            raise ValueError(f"pad_token {requested!r} is not in the tokenizer's vocabulary "
                             "(no token is added: name one of its own tokens, or leave pad_token unset)")
        if requested == eos:
            raise ValueError(f"pad_token {requested!r} is the EOS token, which is trained on: padding is masked")
        return requested
    own = _named(config, "pad_token")
    if own and own != eos and tok.token_to_id(own) is not None:
        return own
    for _, added in sorted(tok.get_added_tokens_decoder().items()):
        if added.special and added.content not in (eos, bos) and added.content not in (template or ""):
            return added.content
    unk = _named(config, "unk_token")
    if unk and unk != eos and tok.token_to_id(unk) is not None:
        return unk
    raise ValueError("the tokenizer has no token free for padding (its pad token is EOS or unset, and every "
                     "special token is EOS, BOS or in the chat template): set prepare.tokenizer.pad_token to one "
                     "of its tokens that the data never contains")


def tokenizer_info(folder: str, pad_token: str | None = None) -> dict:
    """The manifest's `tokenizer` entry: ids of the special tokens, where the chat template lives
    and a hash of the files. `pad_token`: the forge file's explicit choice (see `padding_token`)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    config = _config(folder)
    template = chat_template(folder)

    def token_id(name: str) -> int | None:
        value = _named(config, name)
        return tok.token_to_id(value) if value else None

    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        h.update(name.encode() + b"\0")
        with open(os.path.join(folder, name), "rb") as f:
            h.update(f.read())
    bos = token_id("bos_token")
    probe = tok.encode("a", add_special_tokens=True).ids
    return {
        "path": "tokenizer",
        "sha256": h.hexdigest(),
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "eos_token_id": token_id("eos_token"),
        "pad_token_id": tok.token_to_id(padding_token(tok, config, template, pad_token)),
        "bos_token_id": bos,
        "adds_bos": bool(bos is not None and probe[:1] == [bos]),  # the model's tokenizer prepends BOS
        "chat_template": template is not None,  # carried as-is in the folder and every export
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


def document_prefix(tok) -> list[int]:
    """The ids the tokenizer's post-processor puts before a document's text (a reused model's BOS,
    e.g. Llama's `<|begin_of_text|>`), [] when it adds none (forge's own trained tokenizer).

    Pretraining documents start with them as the model saw in its own pretraining; what the
    post-processor appends (some add EOS) is left out: the packer ends every document with EOS."""
    probe = "a"
    plain = tok.encode(probe, add_special_tokens=False).ids
    full = tok.encode(probe, add_special_tokens=True).ids
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i]
    return []  # the post-processor rewrote the text's own ids: add nothing rather than guess


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
        info = tokenizer_info(local, explicit_pad(cfg) if cfg.mode == "reuse" else None)
    if cfg.mode == "reuse":
        info["source"] = cfg.path  # the folder reused: named when a model's embeddings do not fit it
    return info, files["tokenizer.json"].decode()


def _tokenizer_files(train_text, cfg, pii_cfg) -> dict[str, bytes]:
    """The Ray task: the tokenizer folder's files, by name."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        if cfg.mode == "reuse":
            reuse_tokenizer(cfg, d)  # raises here, in the task, on a folder it cannot use
        else:
            texts = (t for b in train_text.iter_batches(batch_format="pyarrow", batch_size=256)
                     for t in b["text"].to_pylist())
            train_tokenizer(texts, cfg, pii_cfg, d, max_bytes=int(cfg.max_train_mb * 1e6))
        out = {}
        for name in os.listdir(d):
            with open(os.path.join(d, name), "rb") as f:
                out[name] = f.read()
        return out
