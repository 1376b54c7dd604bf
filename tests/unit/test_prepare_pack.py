"""Packing: EOS between documents, positions restart per document, exact-length rows, stable bytes."""

from __future__ import annotations

import fsspec
import numpy as np
import pyarrow.parquet as pq

from forge_ray.prepare.dataset import SHARD_SCHEMA
from forge_ray.prepare.pack import Packer

EOS, PAD = 0, 1


def pack(docs, seq_len=8, shard_sequences=2, root="/v"):
    fs = fsspec.filesystem("memory")
    p = Packer(fs, root, "src", "train", seq_len=seq_len, eos_id=EOS, pad_id=PAD, shard_sequences=shard_sequences)
    for d in docs:
        p.add(d)
    info = p.finish()
    rows = [r for s in info["shards"] for r in pq.read_table(fs.open(f"{root}/{s['path']}", "rb")).to_pylist()]
    return info, rows


def test_documents_are_packed_with_eos_and_restarting_positions():
    info, rows = pack([[5, 5, 5], [6] * 10, [7, 7], [8] * 3])
    assert [r["input_ids"] for r in rows] == [[5, 5, 5, 0, 6, 6, 6, 6], [6, 6, 6, 6, 6, 6, 0, 7], [7, 0, 8, 8, 8, 0, 1, 1]]
    assert [r["position_ids"] for r in rows] == [[0, 1, 2, 3, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6, 0],
                                                 [0, 1, 0, 1, 2, 3, 0, 0]]
    assert [r["row"] for r in rows] == [0, 1, 2]
    assert info["documents"] == 4 and info["tokens"] == 22 and info["padding_tokens"] == 2
    assert [s["rows"] for s in info["shards"]] == [2, 1] and info["sequences"] == 3


def test_exact_fit_has_no_padding_and_empty_split_has_no_shards():
    info, rows = pack([[9] * 7, [9] * 7])
    assert info["padding_tokens"] == 0 and len(rows) == 2
    empty, _ = pack([])
    assert empty == {"documents": 0, "sequences": 0, "tokens": 0, "padding_tokens": 0, "shards": []}


def test_shard_bytes_do_not_depend_on_the_run():
    r = np.random.default_rng(0)
    docs = [r.integers(2, 500, size=int(r.integers(1, 40))).tolist() for _ in range(50)]
    a, _ = pack(docs, seq_len=16, shard_sequences=5, root="/a")
    b, _ = pack(docs, seq_len=16, shard_sequences=5, root="/b")
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    fs = fsspec.filesystem("memory")
    assert pq.read_schema(fs.open(f"/a/{a['shards'][0]['path']}", "rb")).equals(SHARD_SCHEMA)
