"""SFT data mixed with pre-training data by weight through the mixture (docs/sft.md): a pre-training
row has no loss mask, so every real token of it is a target; an SFT row's targets are its assistant
tokens. The forge file may name the pre-training dataset's sources; the objective check accepts the mix."""

from __future__ import annotations

import hashlib
import io
import posixpath

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from forge_ray.config import validate_config
from forge_ray.config.mixture import MixtureConfig
from forge_ray.errors import ConfigError
from forge_ray.mixture import MixtureError, build_plan
from forge_ray.mixture.datasets import mixed_datasets
from forge_ray.mixture.reader import IGNORE_INDEX, read_samples
from forge_ray.prepare.dataset import (
    MANIFEST,
    open_dataset,
    shard_relpath,
    version_dir,
    write_latest,
)
from forge_ray.prepare.sft_dataset import sft_shard_table
from forge_ray.storage import Storage
from forge_ray.testing.synthetic_dataset import EOS, PAD, VOCAB, write_synthetic_dataset
from forge_ray.train.loss import lm_token_loss
from tests.conftest import REPO

SEQ = 32


def write_sft(storage: Storage, n: int = 24, vocab: int = VOCAB, name: str = "chat"):
    """An SFT-format dataset: one source `instructions`, rows of two conversations whose second half
    (the 'assistant' turn) is masked in, padding at the end of each row."""
    rng = np.random.default_rng(1)
    ids = rng.integers(2, PAD, size=(n, SEQ), dtype=np.int32)
    pos = np.zeros((n, SEQ), np.int32)
    mask = np.zeros((n, SEQ), np.int8)
    for conv in (0, 12):
        pos[:, conv: conv + 12] = np.arange(12)
        mask[:, conv + 6: conv + 12] = 1
    ids[:, 24:] = PAD
    version = f"sft{n}v{vocab}"
    manifest = {"dataset": name, "version": version, "seq_len": SEQ, "source_order": ["instructions"],
                "code_version": "test", "config_hash": "test", "loss_mask": True,
                "tokenizer": {"path": "tokenizer", "sha256": "1" * 64, "vocab_size": vocab, "eos_token_id": EOS,
                              "pad_token_id": PAD, "bos_token_id": None},
                "sources": {}}
    with storage.atomic_dir(version_dir(name, version)) as tmp:
        splits = {}
        for split in ("train", "eval"):
            rel = shard_relpath("instructions", split, 0)
            buf = io.BytesIO()
            pq.write_table(sft_shard_table(ids, pos, mask, 0), buf)
            storage.fs.makedirs(posixpath.dirname(f"{tmp}/{rel}"), exist_ok=True)
            with storage.fs.open(f"{tmp}/{rel}", "wb") as f:
                f.write(buf.getvalue())
            shard = {"rows": n, "sha256": hashlib.sha256(buf.getvalue()).hexdigest(), "bytes": len(buf.getvalue())}
            splits[split] = {"documents": 2 * n, "sequences": n, "tokens": n * 24, "padding_tokens": n * 8,
                             "target_tokens": int(mask.sum()), "shards": [{"path": rel, **shard}]}
        manifest["sources"]["instructions"] = {"inputs": [], "counts": {"input": 2 * n, "kept": 2 * n},
                                               "splits": splits}
        storage.write_json(f"{tmp[len(storage.root) + 1:]}/{MANIFEST}", manifest)
    write_latest(storage, name, version)
    return open_dataset(storage, name, version), ids, mask


@pytest.fixture
def datasets(tmp_path):
    storage = Storage(str(tmp_path))
    pre = write_synthetic_dataset(storage, "pre", {"docs": 40}, seq_len=SEQ)
    sft, ids, mask = write_sft(storage)
    return storage, sft, pre, ids, mask


def test_mixed_datasets_opens_the_named_ones_once(datasets):
    storage, sft, pre, *_ = datasets
    got = mixed_datasets(sft, MixtureConfig(datasets=["pre"]))
    assert [(d.dataset, d.version) for d in got] == [("chat", sft.version), ("pre", pre.version)]
    assert mixed_datasets([sft, pre], MixtureConfig(datasets=[f"pre@{pre.version}"])) == [sft, pre]
    assert mixed_datasets(sft, MixtureConfig()) == [sft]


def test_a_missing_dataset_or_another_tokenizer_is_named(datasets):
    storage, sft, *_ = datasets
    with pytest.raises(MixtureError, match="mixture.datasets 'nope': no prepared dataset 'nope'"):
        mixed_datasets(sft, MixtureConfig(datasets=["nope"]))
    write_sft(storage, vocab=VOCAB + 8, name="other")
    with pytest.raises(MixtureError, match=r"'other': its tokenizer differs from chat/sft24v512's \(vocab_size 520 vs 512\)"):
        mixed_datasets(sft, MixtureConfig(datasets=["other"]))


def test_pretraining_rows_train_on_every_real_token_sft_rows_on_the_assistant_only(datasets):
    _, sft, pre, sft_ids, sft_mask = datasets
    cfg = MixtureConfig(weights={"instructions": 1.0, "docs": 1.0}, datasets=["pre"])
    plan = build_plan(sft, cfg, global_batch_size=8, total_steps=6)
    assert plan.sources == ["instructions", "docs"]
    shares = {s.name: s.share.samples for s in plan.source_plans}
    assert shares == {"instructions": 24, "docs": 24}  # by weight, 1:1
    seen = set()
    for step in range(plan.total_steps):
        src, rows = plan.batch(step)
        batch = read_samples(plan, src, rows)
        ids, labels = batch["input_ids"], batch["labels"]
        tok_loss, targets = lm_token_loss(torch.zeros(len(rows), SEQ, VOCAB), torch.as_tensor(labels), PAD)
        for i, (s, r) in enumerate(zip(src, rows, strict=True)):
            name = plan.sources[int(s)]
            seen.add(name)
            if name == "docs":  # no loss mask: every token but padding is a target
                assert np.array_equal(labels[i], ids[i])
                assert targets[i].sum().item() == int((ids[i, 1:] != PAD).sum())
            else:  # the assistant spans only
                assert np.array_equal(ids[i], sft_ids[r])
                want = np.where(sft_mask[r] == 1, sft_ids[r], IGNORE_INDEX)
                assert np.array_equal(labels[i], want)
                assert targets[i].sum().item() == int(sft_mask[r, 1:].sum())
    assert seen == {"instructions", "docs"}


def sft_forge_file(tmp_path, mixture: dict) -> dict:
    raw = yaml.safe_load((REPO / "jobs" / "configs" / "sft.yaml").read_text())
    raw["project"]["storage_root"] = str(tmp_path)
    raw["mixture"] = mixture
    return raw


def test_forge_file_may_weigh_the_mixed_datasets_sources(tmp_path):
    raw = sft_forge_file(tmp_path, {"weights": {"instructions": 0.7, "docs": 0.3}, "datasets": ["pre"]})
    cfg = validate_config(raw, "sft.yaml")
    assert cfg.train.objective == "sft" and cfg.mixture.datasets == ["pre"]
    raw["mixture"] = {"weights": {"instructions": 0.7, "docs": 0.3}}  # without the dataset: an unknown source
    with pytest.raises(ConfigError, match=r"mixture.weights names unknown source\(s\) \['docs'\]"):
        validate_config(raw, "sft.yaml")
    raw["mixture"] = {"datasets": ["pre@"]}
    with pytest.raises(ConfigError, match="datasets are 'name' or 'name@version'"):
        validate_config(raw, "sft.yaml")


def test_objective_check_accepts_sft_over_a_mix_and_refuses_pretrain_on_conversations(datasets, tmp_path):
    from forge_ray.train.driver import check_objective

    _, sft, pre, *_ = datasets
    cfg = validate_config(sft_forge_file(tmp_path, {"datasets": ["pre"]}), "sft.yaml")
    model = cfg.model.model_copy(update={"vocab_size": VOCAB})
    check_objective(cfg, sft, model)  # SFT data with pre-training data mixed in
    cfg.mixture.datasets = ["chat"]
    check_objective(cfg, pre, model)  # the other way round: the pre-training dataset first
    cfg.mixture.datasets = []
    with pytest.raises(ConfigError, match="train.objective 'sft' needs a dataset prepared from chat"):
        check_objective(cfg, pre, model)
    cfg.train.objective = "pretrain"
    cfg.mixture.datasets = ["chat"]
    with pytest.raises(ConfigError, match=f"dataset chat/{sft.version} holds conversations"):
        check_objective(cfg, pre, model)
