"""Dedup: exact (normalised content hash) and near-duplicate (MinHash + LSH), sharded by bucket.

Each kept record emits one bucket id per LSH band (its band of MinHash values, hashed) and
one for its exact content hash. Ray Data groups the rows by bucket (a hash shuffle, so the
index is spread over the cluster, never held by one process); in every bucket with more than
one record all but the smallest record key are duplicates. Keys are (source, file, position),
so the first occurrence in the forge file's source order is the one kept, across sources too.

A record that shares a band with a kept one is dropped even if it is a duplicate only through
a chain (A~B, B~C); the LSH parameters (bands x rows) are datasketch's optimum for the
threshold, so pairs well below the threshold rarely collide.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np

_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
_BAND_BITS = 8  # bucket id = band index in the top 8 bits, 55 bits of hash below
EXACT_BAND = (1 << _BAND_BITS) - 1


def normalise(text: str) -> str:
    """NFKC, lower case, whitespace collapsed: what 'the same content' means for exact dedup."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def _h55(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 9


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) minimising false positives + negatives at `threshold` (datasketch)."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


class Signer:
    """Bucket ids of a text (picklable; built from a `DedupConfig` and the prepare seed)."""

    def __init__(self, cfg, seed: int):
        self.cfg = cfg
        self.seed = seed
        self.bands, self.rows = lsh_params(cfg.threshold, cfg.num_perm)
        self._perms = None  # datasketch draws the permutations per MinHash object: draw them once

    def buckets(self, text: str) -> list[int]:
        norm = normalise(text)
        out = []
        if self.cfg.exact:
            out.append((EXACT_BAND << 55) | _h55(norm.encode()))
        if self.cfg.near:
            hv = self.minhash(norm)
            for b in range(self.bands):
                band = hv[b * self.rows : (b + 1) * self.rows]
                out.append((b << 55) | _h55(band.tobytes()))
        return out

    def minhash(self, norm: str) -> np.ndarray:
        from datasketch import MinHash

        words = _WORD.findall(norm)
        n = self.cfg.shingle_words
        shingles = {" ".join(words[i : i + n]).encode() for i in range(max(1, len(words) - n + 1))}
        if self._perms is None:
            first = MinHash(num_perm=self.cfg.num_perm, seed=self.seed)
            self._perms = (first.permutations, first.scheme)
        m = MinHash(num_perm=self.cfg.num_perm, seed=self.seed, permutations=self._perms[0], scheme=self._perms[1])
        m.update_batch(list(shingles))
        return m.hashvalues.astype(np.uint64)


def duplicates_in_bucket(group: dict) -> dict:
    """Ray Data `map_groups` body: rows {key, reason} for all but the smallest key of a bucket."""
    keys = np.asarray(group["key"], dtype=np.int64)
    if len(keys) < 2:
        return {"key": np.zeros(0, np.int64), "reason": np.zeros(0, dtype=object)}
    bucket = int(group["bucket"][0])
    reason = "exact_duplicate" if (bucket >> 55) == EXACT_BAND else "near_duplicate"
    dups = np.unique(keys[keys != keys.min()])
    return {"key": dups, "reason": np.array([reason] * len(dups), dtype=object)}
