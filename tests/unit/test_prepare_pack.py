"""Packing: EOS between documents, positions restart per document, exact-length rows, stable bytes,
and the same shards however the documents are cut into blocks (the two passes the workers run)."""

from __future__ import annotations

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from forge_ray.prepare.dataset import SHARD_SCHEMA
from forge_ray.prepare.pack import block_pieces, block_totals, offsets, write_group

EOS, PAD = 0, 1


def pack(docs, seq_len=8, shard_sequences=2, blocks=1, root="/v"):
    """The workers' two passes, run in this process over `docs` cut into `blocks` blocks."""
    fs = fsspec.filesystem("memory")
    n = len(docs)
    table = pa.table({"source": ["src"] * n, "split": ["train"] * n, "key": pa.array(range(n), pa.int64()),
                      "pii": ['{"EMAIL": 1}'] * n, "input_ids": pa.array(docs, pa.list_(pa.int32()))})
    cuts = np.linspace(0, n, blocks + 1).astype(int)
    parts = [table.slice(a, b - a) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    starts, sums = offsets([r for p in parts for r in block_totals(p).to_pylist()])
    pieces = pa.concat_tables([block_pieces(p, starts, seq_len, shard_sequences, EOS) for p in parts])
    totals = {f"{s}/{sp}": v["tokens"] for (s, sp), v in sums.items()}
    written = []
    for shard in sorted(set(pieces["shard"].to_pylist())):
        group = pieces.filter(pa.compute.equal(pieces["shard"], shard))
        written += write_group(group, fs, root, seq_len, shard_sequences, PAD, totals, inline=False).to_pylist()
    rows = [r for w in written for r in pq.read_table(fs.open(f"{root}/{w['path']}", "rb")).to_pylist()]
    return sums.get(("src", "train")), written, rows


def test_documents_are_packed_with_eos_and_restarting_positions():
    sums, written, rows = pack([[5, 5, 5], [6] * 10, [7, 7], [8] * 3])
    assert [r["input_ids"] for r in rows] == [[5, 5, 5, 0, 6, 6, 6, 6], [6, 6, 6, 6, 6, 6, 0, 7], [7, 0, 8, 8, 8, 0, 1, 1]]
    assert [r["position_ids"] for r in rows] == [[0, 1, 2, 3, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6, 0],
                                                 [0, 1, 0, 1, 2, 3, 0, 0]]
    assert [r["row"] for r in rows] == [0, 1, 2]
    assert sums["documents"] == 4 and sums["tokens"] == 22 and sums["pii"] == {"EMAIL": 4}
    assert [w["rows"] for w in written] == [2, 1] and [w["padding"] for w in written] == [0, 2]


def test_exact_fit_has_no_padding_and_empty_split_has_no_shards():
    _, written, rows = pack([[9] * 7, [9] * 7])
    assert sum(w["padding"] for w in written) == 0 and len(rows) == 2
    assert pack([]) == (None, [], [])


def test_shards_do_not_depend_on_blocks_or_the_run():
    r = np.random.default_rng(0)
    docs = [r.integers(2, 500, size=int(r.integers(1, 40))).tolist() for _ in range(50)]
    _, one, rows = pack(docs, seq_len=16, shard_sequences=5, root="/a")
    for blocks in (2, 7, 50):
        _, many, again = pack(docs, seq_len=16, shard_sequences=5, blocks=blocks, root=f"/b{blocks}")
        assert [w["sha256"] for w in many] == [w["sha256"] for w in one] and again == rows
    flat = [t for d in docs for t in [*d, EOS]]
    assert [t for row in rows for t in row["input_ids"]][: len(flat)] == flat
    fs = fsspec.filesystem("memory")
    assert pq.read_schema(fs.open(f"/a/{one[0]['path']}", "rb")).equals(SHARD_SCHEMA)
