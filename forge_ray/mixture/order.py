"""The global sample order: stratified batches, evenly spread slots, per-source row permutations.

Everything here is a pure function of its arguments (no global random state), so the same
(seed, dataset version, mixture, batch size, steps) gives the same order on every machine and
for every number of workers.

- **Batch quotas.** Source i with c_i planned samples over S batches gets c_i // S samples in
  every batch plus one extra in exactly c_i % S of them; the extras are handed out by
  cumulative deficit, so every prefix of the run stays within one sample per source of its
  share and each batch's share is within the rounding of the batch size.
- **Slots in a batch.** A source's q samples in a batch sit at positions (j + u) / q, j < q,
  with a per-batch random offset u: spread evenly, so every rank's slice and every micro batch
  is mixed too.
- **Rows.** The j-th sample drawn from a source is row perm_e[j mod n] of epoch e = j // n,
  where perm_e is a seeded permutation of its n rows: no row repeats within an epoch.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_int(*parts: object) -> int:
    """A 64-bit integer from strings / ints, the same in every process (unlike hash())."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def batch_quotas(counts: np.ndarray, batch_size: int, steps: int) -> np.ndarray:
    """Cumulative samples per source before each batch: int64 [steps + 1, sources].

    Batch k takes `cum[k+1] - cum[k]` samples of each source; `cum[steps] == counts`.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != batch_size * steps:
        raise ValueError(f"counts sum to {counts.sum()}, not batch_size x steps = {batch_size * steps}")
    base, extras = counts // steps, counts % steps
    per_batch = int(batch_size - base.sum())  # extras handed out in every batch
    cum = np.zeros((steps + 1, len(counts)), dtype=np.int64)
    used = np.zeros(len(counts), dtype=np.int64)
    order = np.arange(len(counts))
    for k in range(steps):
        extra = np.zeros(len(counts), dtype=np.int64)
        if per_batch:
            need = extras - used
            forced = need == steps - k  # must take an extra in every batch left, or miss its count
            deficit = (k + 1) * extras / steps - used
            # rank: forced first, then largest deficit, then source order; only sources that need one
            key = np.where(need > 0, np.where(forced, 2.0, 0.0) + 1.0 + deficit / (steps + 1), -np.inf)
            extra[np.lexsort((order, -key))[:per_batch]] = 1
            used += extra
        cum[k + 1] = cum[k] + base + extra
    return cum


def batch_sources(quota: np.ndarray, seed: int, step: int) -> np.ndarray:
    """Source index of every slot of one batch, each source's slots spread evenly: int64 [G]."""
    rng = np.random.default_rng([seed, step, 0x5107])
    offsets = rng.random(len(quota))
    times, labels = [], []
    for src, q in enumerate(quota):
        if q:
            times.append((np.arange(q) + offsets[src]) / q)
            labels.append(np.full(q, src, dtype=np.int64))
    if not labels:
        return np.zeros(0, dtype=np.int64)
    times_a, labels_a = np.concatenate(times), np.concatenate(labels)
    return labels_a[np.lexsort((labels_a, times_a))]


def ordinals(labels: np.ndarray, num_sources: int) -> np.ndarray:
    """For each slot, how many earlier slots of the batch hold the same source: int64 [G]."""
    out = np.empty(len(labels), dtype=np.int64)
    for src in range(num_sources):
        where = np.flatnonzero(labels == src)
        out[where] = np.arange(len(where))
    return out


def epoch_permutation(seed: int, version: str, source: str, epoch: int, rows: int) -> np.ndarray:
    """The row order of one epoch over a source: a permutation of 0..rows-1 (int64)."""
    rng = np.random.default_rng([seed, stable_int(version, source), epoch])
    return rng.permutation(rows).astype(np.int64)
