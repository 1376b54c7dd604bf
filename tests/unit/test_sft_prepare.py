"""The SFT prepare path on the driver (no Ray): chat records -> a dataset version with a loss mask,
malformed records quarantined with their reason, personal data redacted in every turn, and the
training stream's labels ignoring everything but the assistant's tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forge_ray.config import validate_config
from forge_ray.corpora.instructions import instruction_records
from forge_ray.testing.sft import train_tokenizer

GOOD = [{"id": "g1", "messages": [{"role": "user", "content": "Mail me at jane.doe@example.com please"},
                                  {"role": "assistant", "content": "I wrote to jane.doe@example.com."}]}]
BAD = [{"id": "b1", "messages": [{"role": "user", "content": "Anyone there?"}]},
       {"id": "b2", "messages": [{"role": "user", "content": "Hi"}, {"role": "wizard", "content": "Hello"}]}]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from forge_ray.prepare.run import prepare_dataset

    tmp = tmp_path_factory.mktemp("sftprep")
    records = instruction_records(60, seed=3)
    texts = [m["content"] or "" for r in records for m in r["messages"]] * 3
    tok = train_tokenizer(texts + ["<|user|>\n<|assistant|>\n<|system|>\n<|tool|>\n"] * 20, tmp / "tok", 600)
    data = tmp / "root" / "chat" / "a.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in records + GOOD + BAD + records[:5]) + "{oops\n")
    config = validate_config({
        "project": {"name": "sftprep", "storage_root": str(tmp / "root")},
        "data": {"sources": [{"name": "chat", "uri": "{storage_root}/chat", "format": "chat", "license": "MIT",
                              "sensitivity": "internal"}]},
        "prepare": {"dataset": "sftprep", "seq_len": 256, "eval_fraction": 0.1,
                    "pii": {"entities": ["EMAIL"], "ner_model": None},
                    "tokenizer": {"mode": "reuse", "path": str(tok)}},
        "train": {"objective": "sft", "global_batch_size": 4, "micro_batch_size": 2, "steps": 3},
    })
    return config, prepare_dataset(config)


def test_counts_quarantine_and_duplicates(dataset):
    _, ds = dataset
    counts = ds.manifest["sources"]["chat"]["counts"]
    assert counts["input"] == 60 + 1 + 2 + 5 + 1
    assert counts["quarantined"] == {"no_assistant_turn": 1, "unknown_role": 1, "invalid_json": 1}
    assert counts["dropped"] == {"duplicate": 5} and counts["redacted"] == 1
    lines = ds.storage.read_bytes(f"datasets/sftprep/{ds.version}/quarantine/chat.jsonl").decode().splitlines()
    assert sorted(json.loads(x)["reason"] for x in lines) == ["invalid_json", "no_assistant_turn", "unknown_role"]
    assert all(set(json.loads(x)) == {"reason", "position", "sha256"} for x in lines)


def test_shards_carry_the_mask_and_the_default_template_travels_with_the_tokenizer(dataset):
    _, ds = dataset
    tok = ds.load_tokenizer()
    assert ds.has_loss_mask and tok.chat_template and ds.manifest["sft"]["chat_template"] == "default"
    table = pa_concat([ds.read_split("chat", s) for s in ("train", "eval")])
    ids = np.array(table.column("input_ids").to_pylist())
    mask = np.array(table.column("loss_mask").to_pylist())
    text = tok.decode(ids[mask == 1])
    assert "jane.doe@example.com" not in tok.decode(ids.reshape(-1)) and "<EMAIL>" in text  # every turn scanned
    assert "<|user|>" not in text and "<|assistant|>" not in text  # headers and prompts are not targets
    turns = sum(m["role"] == "assistant" for r in instruction_records(60, seed=3) + GOOD for m in r["messages"])
    assert text.count(tok.eos_token) == turns  # each assistant turn ends with its EOS, nothing else is a target


def pa_concat(tables):
    import pyarrow as pa

    return pa.concat_tables(tables)


def test_the_stream_labels_only_the_assistant_tokens(dataset):
    from forge_ray.mixture import build_plan
    from forge_ray.mixture.reader import IGNORE_INDEX, read_samples

    config, ds = dataset
    plan = build_plan(ds, config.mixture, global_batch_size=4, total_steps=3)
    src, rows = plan.batch(0)
    s = read_samples(plan, src, rows)
    table = ds.read_split("chat", "train")
    mask = np.array(table.column("loss_mask").to_pylist())[rows]
    assert (s["labels"][mask == 1] == s["input_ids"][mask == 1]).all()
    assert (s["labels"][mask == 0] == IGNORE_INDEX).all()


def test_the_objective_must_match_the_dataset(dataset):
    from forge_ray.config.model import ModelConfig
    from forge_ray.config.train import TrainConfig
    from forge_ray.errors import ConfigError
    from forge_ray.train.driver import check_objective

    config, ds = dataset
    model = ModelConfig(vocab_size=600, family="moe", moe={"num_experts": 4})
    check_objective(config, ds, model)  # sft on a masked dataset: fine
    def with_train(**changes):
        train = TrainConfig.model_validate({**config.train.model_dump(), **changes})
        return config.model_copy(update={"train": train})

    with pytest.raises(ConfigError, match="set train.objective to 'sft'"):
        check_objective(with_train(objective="pretrain"), ds, model)
    mlp_only = with_train(lora={"targets": ["gate_proj"]})
    with pytest.raises(ConfigError, match="name no module of this model"):
        check_objective(mlp_only, ds, model)
