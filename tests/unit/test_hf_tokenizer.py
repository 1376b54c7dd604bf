"""Reusing an open model's tokenizer keeps it as it is: no token added, ids and chat template unchanged.

The tokenizer is built here (`tokenizers` + transformers' `PreTrainedTokenizerFast`), shaped like an
instruct model's: EOS doubles as its pad token, a chat template, and special tokens besides.
"""

from __future__ import annotations

import json

import pytest

from forge_ray.config.prepare import TokenizerConfig
from forge_ray.errors import ConfigError
from forge_ray.prepare.tokenizer import chat_template, reuse_tokenizer, tokenizer_info

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|tool|>"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def instruct_tokenizer(folder, *, pad: str | None = "<|im_end|>", in_config: bool = False) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["hello world, the tokenizer of an open model"] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token=pad,
                                   additional_special_tokens=["<|tool|>"])
    fast.chat_template = TEMPLATE
    fast.save_pretrained(str(folder))
    if in_config:  # the layout of most published folders: the template inside tokenizer_config.json
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config["chat_template"] = (folder / "chat_template.jinja").read_text()
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        (folder / "chat_template.jinja").unlink()
    return str(folder)


@pytest.mark.parametrize("pad", ["<|im_end|>", None])
@pytest.mark.parametrize("in_config", [False, True])
def test_reuse_adds_no_token_and_keeps_ids_and_chat_template(tmp_path, pad, in_config):
    from transformers import AutoTokenizer

    src = instruct_tokenizer(tmp_path / "model", pad=pad, in_config=in_config)
    info = reuse_tokenizer(TokenizerConfig(mode="reuse", path=src), str(tmp_path / "out"))
    original, reused = AutoTokenizer.from_pretrained(src), AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert info["vocab_size"] == len(original) == len(reused)
    assert reused.get_vocab() == original.get_vocab()
    assert info["eos_token_id"] == original.eos_token_id == reused.eos_token_id
    assert reused.pad_token == original.pad_token  # the folder is not rewritten
    # padding is masked with a token of its own, neither EOS (trained on) nor in the chat template
    assert info["pad_token_id"] == original.convert_tokens_to_ids("<|endoftext|>")
    assert info["chat_template"] and chat_template(str(tmp_path / "out")) == chat_template(src)
    assert reused.chat_template == original.chat_template
    messages = [{"role": "user", "content": "hello"}]
    assert reused.apply_chat_template(messages, tokenize=False) == original.apply_chat_template(messages, tokenize=False)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "model" / name).read_bytes()


def test_an_explicit_pad_token_must_be_the_tokenizers_own(tmp_path):
    src = instruct_tokenizer(tmp_path / "model")
    info = reuse_tokenizer(TokenizerConfig(mode="reuse", path=src, pad_token="<|tool|>"), str(tmp_path / "a"))
    assert info["pad_token_id"] == SPECIALS.index("<|tool|>")
    with pytest.raises(ConfigError, match=r"'<\|pad\|>' is not in the tokenizer's vocabulary"):
        reuse_tokenizer(TokenizerConfig(mode="reuse", path=src, pad_token="<|pad|>"), str(tmp_path / "b"))


def test_init_from_makes_the_tokenizer_default_to_its_folder(tmp_path):
    from forge_ray.config.loader import load_yaml, validate_config
    from tests.conftest import DEMO_CONFIG

    raw = load_yaml(DEMO_CONFIG)
    raw["model"]["init_from"] = str(tmp_path / "open")
    assert validate_config(raw).prepare.tokenizer.mode == "train"  # the file chose: it stands
    del raw["prepare"]["tokenizer"]["mode"]
    config = validate_config(raw)
    assert (config.prepare.tokenizer.mode, config.prepare.tokenizer.path) == ("reuse", str(tmp_path / "open"))


class _Dataset:
    """The PreparedDataset surface `resolve_model` reads (a fake: the real one is tested by its room)."""

    def __init__(self, vocab: int, source: str, tokenizer_path: str):
        self.manifest = {"tokenizer": {"vocab_size": vocab, "source": source}}
        self.tokenizer_path = tokenizer_path


def test_a_tokenizer_larger_than_the_embeddings_names_both_sizes_and_folders(tmp_path):
    from forge_ray.config import load_config
    from forge_ray.train.driver import resolve_model
    from tests.conftest import DEMO_CONFIG
    from tests.unit.test_families import hf_model

    hf_model("llama").save_pretrained(tmp_path / "open")  # 101 embeddings
    config = load_config(DEMO_CONFIG, [f"model.init_from={tmp_path / 'open'}"])
    assert resolve_model(config, _Dataset(101, str(tmp_path / "open"), "ds/tokenizer")).vocab_size == 101
    with pytest.raises(ConfigError, match=rf"\(101 embeddings, {tmp_path / 'open'}\) is smaller than the dataset "
                       rf"tokenizer's \(102 tokens, {tmp_path / 'other'} -> ds/tokenizer\)"):
        resolve_model(config, _Dataset(102, str(tmp_path / "other"), "ds/tokenizer"))


def _with_post_processor(folder, single: str) -> str:
    """The instruct tokenizer with a post-processor as Llama's (`single` e.g. "<|endoftext|> $A")."""
    from tokenizers import Tokenizer, processors

    path = folder / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    specials = [(t, tok.token_to_id(t)) for t in SPECIALS if t in single]
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=specials)
    tok.save(str(path))
    return path.read_text()


@pytest.mark.parametrize("single, prefix", [
    ("<|endoftext|> $A", ["<|endoftext|>"]),  # BOS only (Llama 3's <|begin_of_text|>)
    ("<|endoftext|> $A <|im_end|>", ["<|endoftext|>"]),  # BOS and EOS: EOS is the packer's to add
    ("$A", []),  # no special tokens added (forge's own trained tokenizer)
])
def test_pretraining_documents_start_with_bos_where_the_tokenizer_adds_one(tmp_path, single, prefix):
    import pyarrow as pa
    from tokenizers import Tokenizer

    from forge_ray.prepare.stages import tokenize_stage

    src = instruct_tokenizer(tmp_path / "model")
    tokenizer_json = _with_post_processor(tmp_path / "model", single)
    tok = Tokenizer.from_str(tokenizer_json)
    texts = ["hello world", "the tokenizer"]
    batch = pa.table({"source": ["a", "a"], "split": ["train"] * 2, "key": ["k1", "k2"], "pii": [0, 0],
                      "outcome": ["kept"] * 2, "text": texts})
    ids = tokenize_stage(batch, tokenizer_json)["input_ids"].to_pylist()
    want = [tok.token_to_id(t) for t in prefix]
    assert ids == [want + tok.encode(t, add_special_tokens=False).ids for t in texts]
    if prefix:  # the manifest says so too
        info = tokenizer_info(src)
        assert info["bos_token_id"] is None or info["bos_token_id"] == want[0]


def test_a_sentencepiece_only_folder_is_refused_naming_the_folder_and_the_missing_file(tmp_path):
    from forge_ray.config.loader import load_yaml, validate_config
    from forge_ray.prepare.run import prepare_dataset
    from tests.conftest import DEMO_CONFIG

    folder = tmp_path / "open"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(b"\x0a\x03sp")  # a sentencepiece model, no tokenizer.json
    (folder / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ConfigError, match=rf"{folder} holds a sentencepiece tokenizer.model but no tokenizer.json"):
        reuse_tokenizer(TokenizerConfig(mode="reuse", path=str(folder)), str(tmp_path / "out"))
    raw = load_yaml(DEMO_CONFIG)
    raw["model"]["init_from"] = str(folder)  # the tokenizer defaults to it
    raw["prepare"]["tokenizer"].pop("mode", None)
    raw["project"]["storage_root"] = str(tmp_path / "store")
    config = validate_config(raw)
    with pytest.raises(ConfigError, match=rf"{folder} holds a sentencepiece tokenizer.model but no tokenizer.json"):
        prepare_dataset(config, address="ray://nowhere:1")  # refused before it connects to any cluster
    assert not (tmp_path / "out").exists()


def test_init_from_on_an_object_store_is_the_tokenizer_folder_too():
    from forge_ray.config.loader import load_yaml, validate_config
    from tests.conftest import DEMO_CONFIG

    raw = load_yaml(DEMO_CONFIG)
    raw["model"]["init_from"] = "s3://models/open-llama"
    raw["prepare"]["tokenizer"].pop("mode", None)
    tok = validate_config(raw).prepare.tokenizer
    assert (tok.mode, tok.path) == ("reuse", "s3://models/open-llama")
