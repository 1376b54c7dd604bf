"""Dedup: exact (normalised content hash) and near-duplicate (MinHash + LSH), sharded by bucket.

Each kept record emits one bucket id per LSH band (its band of MinHash values, hashed) and
one for its exact content hash. Ray Data groups the rows by shard of buckets (a shuffle, so the
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
        self._words: dict[str, int] = {}

    def __getstate__(self):
        return {"cfg": self.cfg, "seed": self.seed}

    def __setstate__(self, state):
        self.__init__(state["cfg"], state["seed"])

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
        """128 (num_perm) minimum hash values over the text's word n-gram shingles.

        Vectorised: each distinct word is hashed once (blake2b), a shingle's 32-bit hash is a
        mix of its words' hashes (a polynomial in 64-bit arithmetic, then the murmur3 64-bit
        finaliser), and the permutations are datasketch's (its `affine32` scheme for this seed:
        h -> a * h + b mod 2**32, a odd) applied to all shingles at once. A set of distinct
        shingles gives the same values in any order, so the signature is a function of the text.
        """
        words = _WORD.findall(norm) or [""]  # an empty text: one empty shingle
        n = self.cfg.shingle_words
        if self._perms is None:
            from datasketch import MinHash

            first = MinHash(num_perm=self.cfg.num_perm, seed=self.seed, scheme="affine32")
            a, b = first.permutations
            self._perms = (a.astype(np.uint32), b.astype(np.uint32))
        a, b = self._perms
        wh = self._word_hashes(words)
        count = max(1, len(wh) - n + 1)
        with np.errstate(over="ignore"):
            h = np.zeros(count, np.uint64)
            for k in range(min(n, len(wh))):
                h = h * _MUL + wh[k : k + count]
            h = _fmix64(h + np.uint64(min(n, len(wh))))
            hv = np.unique((h >> np.uint64(32)).astype(np.uint32))
            # rows of at most 4096 shingles: bounded memory for long documents
            out = np.full(len(a), 0xFFFFFFFF, np.uint32)
            for i in range(0, len(hv), 4096):
                out = np.minimum(out, (hv[i : i + 4096, None] * a + b).min(axis=0))
        return out.astype(np.uint64)

    def _word_hashes(self, words: list[str]) -> np.ndarray:
        """blake2b of each word, from a per-process cache (words recur across records)."""
        cache = self._words
        if len(cache) > 1 << 20:
            cache.clear()
        for w in set(words).difference(cache):
            cache[w] = _h64(w.encode())
        return np.fromiter(map(cache.__getitem__, words), np.uint64, len(words))


_MUL = np.uint64(0x9E3779B97F4A7C15)


def _h64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _fmix64(h: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser (an avalanching bijection), on a uint64 array."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def duplicates_in_bucket(group: dict) -> dict:
    """Ray Data `map_groups` body: rows {key, reason} for all but the smallest key of each bucket.

    A group holds one shard of buckets (`bucket % shards`), not one bucket: the work is a few
    vectorised calls per shard instead of one Python call per bucket, most of which hold a
    single record. A key may come out more than once (from several buckets).
    """
    buckets = np.asarray(group["bucket"], dtype=np.int64)
    keys = np.asarray(group["key"], dtype=np.int64)
    order = np.lexsort((keys, buckets))
    buckets, keys = buckets[order], keys[order]
    first = np.ones(len(keys), bool)
    first[1:] = buckets[1:] != buckets[:-1]
    smallest = keys[first][np.cumsum(first) - 1]  # the smallest key of each row's bucket
    dup = keys != smallest
    exact = (buckets[dup] >> 55) == EXACT_BAND
    return {"key": keys[dup], "reason": np.where(exact, "exact_duplicate", "near_duplicate").astype(object)}
