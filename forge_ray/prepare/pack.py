"""Pack: tokenized documents -> fixed-length sequences -> parquet shards, on the Ray Data workers.

Documents of one (source, split) are concatenated in input order, each followed by EOS, and cut
every `seq_len` tokens. `position_ids` restart at 0 at every document start (and at every
sequence start, for a document that continues from the previous sequence), so training can reset
positions and block attention across documents. Only the last sequence of a (source, split) is
padded (pad token, position 0), so every row has exactly `seq_len` tokens. Shard `i` holds rows
`[i * shard_sequences, (i + 1) * shard_sequences)`.

No process sees the whole stream. Two passes over the tokenized blocks:
1. `block_totals`: per block and (source, split), its documents and tokens (a few numbers);
   the driver turns them into each block's token offset in its (source, split) (`offsets`).
2. `block_pieces`: each block places its tokens at those offsets, computes their positions and
   cuts them at shard boundaries; a groupby on (source, split, shard) brings a shard's pieces
   together and `write_group` writes it. Every byte is a function of the tokens and offsets, so
   shards are identical whatever the scheduling.
"""

from __future__ import annotations

import hashlib
import json
import posixpath

import numpy as np
import pyarrow as pa

from forge_ray.prepare.dataset import SPLITS, shard_bytes, shard_relpath, shard_table

_PIECE = pa.schema([("source", pa.string()), ("split", pa.string()), ("shard", pa.int64()), ("start", pa.int64()),
                    ("input_ids", pa.list_(pa.int32())), ("position_ids", pa.list_(pa.int32()))])


def _groups(batch: pa.Table):
    """(source, split, row indices) of a batch, in order of first appearance."""
    seen: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(batch["source"].to_pylist(), batch["split"].to_pylist(), strict=True)):
        seen.setdefault(key, []).append(i)
    return [(s, sp, np.asarray(rows)) for (s, sp), rows in seen.items()]


def block_totals(batch: pa.Table) -> pa.Table:
    """Pass 1 (one batch = one block): per (source, split), the block's first key, documents,
    tokens (EOS included) and the redacted PII counts of its documents."""
    first = batch["key"][0].as_py() if batch.num_rows else -1
    lengths = batch["input_ids"].combine_chunks().value_lengths().to_numpy(zero_copy_only=False) + 1
    found = batch["pii"].to_pylist()
    rows = []
    for source, split, idx in _groups(batch):
        pii: dict[str, int] = {}
        for f in (found[i] for i in idx):
            for entity, n in json.loads(f or "{}").items():
                pii[entity] = pii.get(entity, 0) + n
        rows.append({"block": first, "source": source, "split": split, "documents": len(idx),
                     "tokens": int(lengths[idx].sum()), "pii": json.dumps(pii, sort_keys=True)})
    return pa.Table.from_pylist(rows, schema=pa.schema([("block", pa.int64()), ("source", pa.string()),
                                                        ("split", pa.string()), ("documents", pa.int64()),
                                                        ("tokens", pa.int64()), ("pii", pa.string())]))


def offsets(totals: list[dict]) -> tuple[dict[int, dict[str, int]], dict[tuple[str, str], dict]]:
    """({block: {"source/split": token offset}}, {(source, split): {documents, tokens, pii}}) from
    pass 1's rows: blocks in key order, which is input order."""
    starts: dict[int, dict[str, int]] = {}
    sums: dict[tuple[str, str], dict] = {}
    for t in sorted(totals, key=lambda t: t["block"]):
        s = sums.setdefault((t["source"], t["split"]), {"documents": 0, "tokens": 0, "pii": {}})
        starts.setdefault(t["block"], {})[f"{t['source']}/{t['split']}"] = s["tokens"]
        s["documents"] += t["documents"]
        s["tokens"] += t["tokens"]
        for entity, n in json.loads(t["pii"]).items():
            s["pii"][entity] = s["pii"].get(entity, 0) + n
    return starts, sums


def place(lengths: np.ndarray, start: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(global offset, position id) of every token of documents of `lengths` tokens (EOS
    included) laid end to end from token offset `start` of their (source, split)."""
    total = int(lengths.sum())
    g = start + np.arange(total, dtype=np.int64)
    doc_start = np.repeat(start + np.cumsum(lengths) - lengths, lengths)
    # a position counts from the document's start, or from its sequence's start if that is later
    return g, (g - np.maximum(doc_start, g - g % seq_len)).astype(np.int32)


def block_pieces(batch: pa.Table, starts: dict[int, dict[str, int]], seq_len: int, shard_sequences: int,
                 eos_id: int) -> pa.Table:
    """Pass 2: the block's tokens of each (source, split), EOS after each document, cut into one
    piece per shard they fall in."""
    meta: list[tuple] = []  # (source, split, shard, start) per piece
    cut_ids, cut_pos = [], []
    if batch.num_rows:
        block = starts[batch["key"][0].as_py()]
        ids = batch["input_ids"].combine_chunks()
        shard_tokens = seq_len * shard_sequences
        for source, split, idx in _groups(batch):
            docs = ids.take(pa.array(idx))
            lengths = docs.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64) + 1
            tokens = np.full(int(lengths.sum()), eos_id, np.int32)
            not_eos = np.ones(len(tokens), bool)
            not_eos[np.cumsum(lengths) - 1] = False
            tokens[not_eos] = docs.flatten().to_numpy(zero_copy_only=False)
            g, pos = place(lengths, block[f"{source}/{split}"], seq_len)
            shard = g // shard_tokens
            cuts = np.flatnonzero(np.diff(shard)) + 1
            for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(g)], strict=True):
                meta.append((source, split, int(shard[a]), int(g[a])))
                cut_ids.append(tokens[a:b])
                cut_pos.append(pos[a:b])
    lens = np.fromiter((len(x) for x in cut_ids), np.int32, len(cut_ids))
    off = pa.array(np.r_[0, np.cumsum(lens)].astype(np.int32))
    cols = list(zip(*meta, strict=True)) if meta else [[], [], [], []]
    return pa.Table.from_arrays([pa.array(cols[0], pa.string()), pa.array(cols[1], pa.string()),
                                 pa.array(cols[2], pa.int64()), pa.array(cols[3], pa.int64()),
                                 pa.ListArray.from_arrays(off, _flat(cut_ids)),
                                 pa.ListArray.from_arrays(off, _flat(cut_pos))], schema=_PIECE)


def _flat(pieces: list[np.ndarray]) -> pa.Array:
    return pa.array(np.concatenate(pieces) if pieces else np.zeros(0, np.int32))


def write_group(group: pa.Table, fs, out: str, seq_len: int, shard_sequences: int, pad_id: int,
                totals: dict[str, int], inline: bool) -> pa.Table:
    """`map_groups` body: the pieces of one shard, in order, padded if it ends its (source, split),
    written to `out` (or returned as bytes when `inline`: a filesystem only the driver has)."""
    order = np.argsort(group["start"].to_numpy())
    group = group.take(pa.array(order))
    source, split, index = group["source"][0].as_py(), group["split"][0].as_py(), group["shard"][0].as_py()
    ids = group["input_ids"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    pos = group["position_ids"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    first = index * seq_len * shard_sequences
    if group["start"][0].as_py() != first or len(ids) > seq_len * shard_sequences:
        raise RuntimeError(f"shard {source}/{split}/{index}: pieces do not tile it")  # a bug, never data
    padding = -len(ids) % seq_len
    if padding:
        if first + len(ids) != totals[f"{source}/{split}"]:
            raise RuntimeError(f"shard {source}/{split}/{index}: a short shard that does not end its split")
        ids = np.concatenate([ids, np.full(padding, pad_id, np.int32)])
        pos = np.concatenate([pos, np.zeros(padding, np.int32)])
    n = len(ids) // seq_len
    data = shard_bytes(shard_table(ids.reshape(n, seq_len), pos.reshape(n, seq_len), index * shard_sequences))
    rel = shard_relpath(source, split, index)
    if not inline:
        fs.makedirs(posixpath.dirname(posixpath.join(out, rel)), exist_ok=True)
        with fs.open(posixpath.join(out, rel), "wb") as f:
            f.write(data)
    return pa.table({"source": [source], "split": [split], "shard": [index], "path": [rel], "rows": [n],
                     "padding": [padding], "sha256": [hashlib.sha256(data).hexdigest()],
                     "data": [data if inline else b""]})


def pack_and_write(tokenized, fs, out: str, names: list[str], *, seq_len: int, shard_sequences: int, eos_id: int,
                   pad_id: int, parts: int) -> tuple[dict, dict]:
    """Pack a materialised tokenized dataset (source, split, key, pii, input_ids) and write its
    shards from the workers. Returns ({(source, split): manifest split entry}, {source: pii counts})."""
    first = tokenized.map_batches(block_totals, batch_format="pyarrow", batch_size=None)
    starts, sums = offsets(first.take_all())
    totals = {f"{s}/{sp}": v["tokens"] for (s, sp), v in sums.items()}
    written = (
        tokenized.map_batches(block_pieces, batch_format="pyarrow", batch_size=None,
                              fn_kwargs={"starts": starts, "seq_len": seq_len, "shard_sequences": shard_sequences,
                                         "eos_id": eos_id})
        .groupby(["source", "split", "shard"], num_partitions=parts)
        .map_groups(write_group, batch_format="pyarrow",
                    fn_kwargs={"fs": fs, "out": out, "seq_len": seq_len, "shard_sequences": shard_sequences,
                               "pad_id": pad_id, "totals": totals, "inline": "memory" in fs.protocol})
        .take_all()
    )
    shards: dict[tuple[str, str], list[dict]] = {(s, sp): [] for s in names for sp in SPLITS}
    for w in sorted(written, key=lambda w: (w["source"], w["split"], w["shard"])):
        if w["data"]:  # inline: the driver's own filesystem
            fs.makedirs(posixpath.dirname(posixpath.join(out, w["path"])), exist_ok=True)
            with fs.open(posixpath.join(out, w["path"]), "wb") as f:
                f.write(w["data"])
        shards[(w["source"], w["split"])].append(w)
    splits, pii = {}, {s: {} for s in names}
    for (s, sp), ws in shards.items():
        got = sums.get((s, sp), {"documents": 0, "tokens": 0, "pii": {}})
        splits[(s, sp)] = {"documents": got["documents"], "sequences": sum(w["rows"] for w in ws),
                           "tokens": got["tokens"], "padding_tokens": sum(w["padding"] for w in ws),
                           "shards": [{"path": w["path"], "rows": w["rows"], "sha256": w["sha256"]} for w in ws]}
        for entity, n in got["pii"].items():
            pii[s][entity] = pii[s].get(entity, 0) + n
    return splits, {s: dict(sorted(v.items())) for s, v in pii.items()}
