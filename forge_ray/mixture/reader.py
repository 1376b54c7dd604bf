"""Reading planned samples out of the prepared shards (runs inside Ray Data tasks).

A sample is (source, row); the row lives in the shard whose cumulative row range holds it
(manifest order). Each shard is decoded once per process into [rows, seq_len] arrays and
kept in a small LRU cache, so the tasks that read consecutive steps reuse it. The shard's
own `row` column is checked against the plan: a dataset that does not match its manifest
fails loudly instead of training on the wrong sequences.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from forge_ray.mixture.plan import MixturePlan, PlanSource
from forge_ray.mixture.shares import MixtureError

_CACHE_BYTES = 512 << 20  # decoded shards kept per process

_cache: OrderedDict[str, tuple] = OrderedDict()
IGNORE_INDEX = -100  # a label that is not a target: the assistant-only loss of instruction tuning
_cache_bytes = 0
_lock = threading.Lock()


def _decoded_shard(source: PlanSource, index: int, seq_len: int) -> tuple:
    """(input_ids, position_ids, row, loss_mask or None) of one shard: int32 [n, L], int32 [n, L], int64 [n],
    int8 [n, L] (instruction-tuning shards only)."""
    global _cache_bytes
    uri = source.shard_uris[index]
    with _lock:
        if uri in _cache:
            _cache.move_to_end(uri)
            return _cache[uri]
    table = source.dataset.read_shard(uri)
    n = table.num_rows
    ids = table.column("input_ids").combine_chunks().flatten().to_numpy().reshape(n, seq_len)
    pos = table.column("position_ids").combine_chunks().flatten().to_numpy().reshape(n, seq_len)
    rows = table.column("row").to_numpy()
    mask = None
    if "loss_mask" in table.column_names:
        mask = table.column("loss_mask").combine_chunks().flatten().to_numpy().reshape(n, seq_len)
    if n != source.shard_rows[index]:
        raise MixtureError(f"{uri}: {n} rows, manifest says {source.shard_rows[index]}")
    entry = (ids, pos, rows, mask)
    with _lock:
        _cache[uri] = entry
        _cache_bytes += ids.nbytes + pos.nbytes + rows.nbytes + (mask.nbytes if mask is not None else 0)
        while _cache_bytes > _CACHE_BYTES and len(_cache) > 1:
            _, old = _cache.popitem(last=False)
            _cache_bytes -= sum(a.nbytes for a in old if a is not None)
    return entry


def read_samples(plan: MixturePlan, sources: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Token arrays of the samples (sources[i], rows[i]), in the given order.

    Returns int64 arrays: input_ids / position_ids / labels [n, seq_len]. Labels equal
    input_ids (the contract): padding, only ever in a source's last row, is the tokenizer's
    pad id (`plan.pad_token_id`), which the loss masks. In instruction-tuning shards (a
    `loss_mask` column) the labels of tokens outside the assistant's turns are IGNORE_INDEX; a row of a
    dataset without one (pre-training data mixed into an SFT run) keeps labels = input_ids: its mask
    is all ones, every real token a target.
    """
    n, seq_len = len(rows), plan.seq_len
    ids = np.empty((n, seq_len), dtype=np.int64)
    pos = np.empty((n, seq_len), dtype=np.int64)
    targets = None  # [n, seq_len] True where a token is a target; rows of maskless shards stay all True
    for src in np.unique(sources):
        sp = plan.source_plans[int(src)]
        where = np.flatnonzero(sources == src)
        bounds = np.cumsum((0,) + sp.shard_rows)
        shard_of = np.searchsorted(bounds, rows[where], side="right") - 1
        for shard in np.unique(shard_of):
            take = where[shard_of == shard]
            s_ids, s_pos, s_rows, s_mask = _decoded_shard(sp, int(shard), seq_len)
            offset = rows[take] - bounds[shard]
            if not np.array_equal(s_rows[offset], rows[take]):
                raise MixtureError(
                    f"{sp.shard_uris[shard]}: its `row` column does not match the manifest's row order"
                )
            ids[take] = s_ids[offset]
            pos[take] = s_pos[offset]
            if s_mask is not None:
                targets = np.ones((n, seq_len), dtype=bool) if targets is None else targets
                targets[take] = s_mask[offset] != 0
    labels = ids.copy() if targets is None else np.where(targets, ids, IGNORE_INDEX)
    return {"input_ids": ids, "position_ids": pos, "labels": labels}
