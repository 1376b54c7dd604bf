"""The row-level stages of prepare, as Ray Data batch functions (pyarrow batches in and out).

Every row keeps its `outcome` ("ok", "redacted", "dropped", "quarantined") and `reason`
through every stage: a stage only looks at rows still in play (ok / redacted) and passes the
others through, so the final counts reconcile with the input, record for record.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from forge_ray.data.dedup import Signer
from forge_ray.data.pii import PiiScanner
from forge_ray.data.quality import failed_rule

LIVE = ("ok", "redacted")
ROUTED = "routed_restricted"  # dropped from the shards, written to restricted/ for synthesis


def _rows(batch: pa.Table) -> list[dict]:
    return batch.to_pylist()


def read_stage(unit: dict, validators: dict) -> list[dict]:
    from forge_ray.data.read import read_unit

    return read_unit(unit, validators[unit["source"]])


def pii_stage(batch: pa.Table, pii_cfg, policies: dict[str, str]) -> pa.Table:
    """Redact, drop or route to restricted every live record with personal data or secrets."""
    scanner = _cached(PiiScanner, pii_cfg)
    rows = _rows(batch)
    for r in rows:
        if r["outcome"] not in LIVE:
            continue
        redacted, counts = scanner.redact(r["text"])
        if not counts:
            continue
        r["pii"] = json.dumps(counts, sort_keys=True)
        policy = policies[r["source"]]
        if policy == "redact":
            r["text"], r["outcome"] = redacted, "redacted"
        elif policy == "drop":
            r["text"], r["outcome"], r["reason"] = "", "dropped", "pii"
        else:  # restrict: the original goes to the synthetic-data stage, never to the shards
            r["raw"], r["text"], r["outcome"], r["reason"] = r["text"], "", "dropped", ROUTED
    return pa.Table.from_pylist(rows, schema=batch.schema)


def quality_stage(batch: pa.Table, cfg, exempt: list[str]) -> pa.Table:
    rows = _rows(batch)
    for r in rows:
        if r["outcome"] in LIVE:
            rule = failed_rule(r["text"], cfg, prose=r["source"] not in exempt)
            if rule:
                r["text"], r["outcome"], r["reason"] = "", "dropped", f"quality_{rule}"
    return pa.Table.from_pylist(rows, schema=batch.schema)


def split_hash(seed: int, source: str, rec_id: str, key: int) -> float:
    """A uniform number in [0, 1) per document: the held-out split is a function of the document."""
    h = hashlib.blake2b(f"{seed}\0{source}\0{rec_id}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def sign_stage(batch: pa.Table, dedup_cfg, seed: int) -> pa.Table:
    """Add the dedup buckets and the split hash of every live record."""
    signer = _cached(Signer, dedup_cfg, seed)
    rows = _rows(batch)
    buckets, hashes = [], []
    for r in rows:
        live = r["outcome"] in LIVE
        buckets.append(signer.buckets(r["text"]) if live else [])
        hashes.append(split_hash(seed, r["source"], r["id"], r["key"]))
    table = pa.Table.from_pylist(rows, schema=batch.schema)
    table = table.append_column("buckets", pa.array(buckets, pa.list_(pa.int64())))
    return table.append_column("split_hash", pa.array(hashes, pa.float64()))


def bucket_rows(batch: pa.Table) -> dict:
    """One row (bucket, key) per bucket of every live record: the input of the dedup shuffle."""
    import numpy as np

    keys, buckets = [], []
    for key, bs in zip(batch["key"].to_pylist(), batch["buckets"].to_pylist(), strict=True):
        keys += [key] * len(bs)
        buckets += bs
    return {"bucket": np.asarray(buckets, np.int64), "key": np.asarray(keys, np.int64)}


def finalize_stage(batch: pa.Table, dups: dict[int, str], eval_fraction: float,
                   forced_eval: dict[str, float]) -> pa.Table:
    """Apply the dedup decisions and assign each kept document to train or eval."""
    rows = _rows(batch)
    splits = []
    for r in rows:
        if r["outcome"] in LIVE and r["key"] in dups:
            r["text"], r["outcome"], r["reason"] = "", "dropped", dups[r["key"]]
        held_out = r["split_hash"] < eval_fraction or r["split_hash"] == forced_eval.get(r["source"])
        splits.append("eval" if held_out else "train")
    table = pa.Table.from_pylist(rows, schema=batch.schema)
    return table.append_column("split", pa.array(splits, pa.string()))


def tokenize_stage(batch: pa.Table, tokenizer_json: str) -> pa.Table:
    """Token ids of every kept document (EOS is added by the packer)."""
    from forge_ray.data.tokenizer import encoder

    enc = _cached(encoder, tokenizer_json)
    texts = batch["text"].to_pylist()
    ids = [e.ids for e in enc.encode_batch(texts, add_special_tokens=False)] if texts else []
    return pa.table({
        "source": batch["source"], "split": batch["split"], "key": batch["key"], "pii": batch["pii"],
        "outcome": batch["outcome"], "input_ids": pa.array(ids, pa.list_(pa.int32())),
    })


_CACHE: dict = {}


def _cached(factory, *args):
    """One instance per worker process and arguments: recognisers and tokenizers are built once,
    not once per batch (Ray reuses worker processes across tasks)."""
    key = (factory.__name__, *(a.model_dump_json() if hasattr(a, "model_dump_json") else a for a in args))
    if key not in _CACHE:
        if len(_CACHE) > 8:
            _CACHE.clear()
        _CACHE[key] = factory(*args)
    return _CACHE[key]
