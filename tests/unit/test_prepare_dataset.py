"""The prepared-dataset reader: versions, LATEST, incomplete versions, shard checks."""

from __future__ import annotations

import numpy as np
import pytest

from forge_ray.prepare.dataset import (
    DatasetError,
    open_dataset,
    shard_relpath,
    shard_table,
    version_dir,
    write_latest,
    write_shard,
)
from forge_ray.storage import Storage


def make_version(storage: Storage, version: str, rows: int = 3) -> None:
    with storage.atomic_dir(version_dir("d", version)) as tmp:
        rel = shard_relpath("docs", "train", 0)
        info = write_shard(storage.fs, f"{tmp}/{rel}", shard_table(np.ones((rows, 4)), np.zeros((rows, 4)), 0))
        split = {"documents": 1, "sequences": rows, "tokens": rows * 4, "padding_tokens": 0,
                 "shards": [{"path": rel, "rows": rows, "sha256": info["sha256"]}]}
        empty = {"documents": 0, "sequences": 0, "tokens": 0, "padding_tokens": 0, "shards": []}
        manifest = {"dataset": "d", "version": version, "seq_len": 4, "source_order": ["docs"],
                    "tokenizer": {"path": "tokenizer", "sha256": "0" * 64, "vocab_size": 10, "eos_token_id": 0,
                                  "pad_token_id": 1, "bos_token_id": None},
                    "sources": {"docs": {"splits": {"train": split, "eval": empty}}}}
        import json

        with storage.fs.open(f"{tmp}/manifest.json", "wb") as f:
            f.write(json.dumps(manifest).encode())


def test_latest_and_explicit_versions(tmp_path):
    storage = Storage(str(tmp_path))
    with pytest.raises(DatasetError, match="forge prepare"):
        open_dataset(storage, "d")
    make_version(storage, "v1", rows=3)
    write_latest(storage, "d", "v1")
    make_version(storage, "v2", rows=5)
    ds = open_dataset(str(tmp_path), "d")
    assert ds.version == "v1" and ds.num_sequences("docs", "train") == 3
    write_latest(storage, "d", "v2")
    ds = open_dataset(storage, "d")
    assert ds.version == "v2" and ds.read_split("docs", "train")["row"].to_pylist() == [0, 1, 2, 3, 4]
    assert ds.sources == ["docs"] and ds.read_split("docs", "eval").num_rows == 0
    ds.verify()
    with pytest.raises(KeyError, match="no source 'code'"):
        ds.shard_paths("code", "train")


def test_incomplete_or_tampered_versions_are_refused(tmp_path):
    storage = Storage(str(tmp_path))
    (tmp_path / "datasets" / "d" / "half").mkdir(parents=True)
    with pytest.raises(DatasetError, match="incomplete"):
        open_dataset(storage, "d", "half")
    with pytest.raises(DatasetError, match="incomplete"):
        write_latest(storage, "d", "half")
    make_version(storage, "v1")
    ds = open_dataset(storage, "d", "v1")
    path = storage.path(version_dir("d", "v1"), shard_relpath("docs", "train", 0))
    with open(path, "r+b") as f:
        f.seek(10)
        f.write(b"\xff")
    with pytest.raises(DatasetError, match="sha256"):
        ds.verify()


def test_memory_storage_round_trip():
    storage = Storage("memory://dataset-test")
    make_version(storage, "m1", rows=2)
    write_latest(storage, "d", "m1")
    ds = open_dataset(storage, "d")
    assert [ds.read_shard(u).num_rows for u in ds.shard_paths("docs", "train")] == [2]
    assert ds.shard_paths("docs", "train")[0].startswith("memory://")
