"""Dedup: exact (normalised content hash) and near-duplicate (MinHash + LSH), sharded by bucket.

Each kept record emits one bucket id per LSH band (its band of MinHash values, hashed) and
one for its exact content hash. Ray Data groups the rows by shard of buckets (a shuffle, so the
index is spread over the cluster, never held by one process); every bucket with more than one
record yields edges from its records to its smallest key. Keys are (source, file, position),
so the first occurrence in the forge file's source order is the one kept, across sources too.

Buckets only give pairs: near-duplicates are clusters, the connected components of those pairs
across all buckets (A~B share one band, B~C another: A, B and C are one cluster). A union-find
over the bucket edges (`components`) keeps the smallest key of each cluster and drops the rest.
The LSH parameters (bands x rows) are datasketch's optimum for the threshold, so pairs well below
the threshold rarely collide.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
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


@functools.lru_cache(maxsize=16)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) minimising false positives + negatives at `threshold`: datasketch's
    `_optimal_param` (weights 0.5, 0.5), without its scipy import (~0.6 s in every process).

    Its integrands, 1 - (1 - s^r)^b and (1 - s^r)^b, are polynomials of degree b * r <= num_perm,
    which Gauss-Legendre quadrature with num_perm // 2 + 1 nodes integrates exactly; all (b, r)
    pairs at once, the first minimum in datasketch's (b, r) order on a tie.
    """
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)

    def on(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:  # nodes and weights on [lo, hi]
        return (hi - lo) / 2 * nodes + (hi + lo) / 2, (hi - lo) / 2 * weights

    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], np.float64)
    b, r = pairs[:, :1], pairs[:, 1:]
    s_lo, w_lo = on(0.0, threshold)
    s_hi, w_hi = on(threshold, 1.0)
    false_pos = (1 - (1 - s_lo**r) ** b) @ w_lo
    false_neg = ((1 - s_hi**r) ** b) @ w_hi
    best = int(np.argmin(0.5 * false_pos + 0.5 * false_neg))
    return int(pairs[best, 0]), int(pairs[best, 1])


def affine32_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of datasketch's `affine32` MinHash permutations for `seed` (h -> a * h + b mod 2**32,
    a odd), drawn as `MinHash(num_perm, seed, scheme="affine32")` draws them, without importing it."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


class Signer:
    """Bucket ids of a text (picklable; built from a `DedupConfig` and the prepare seed)."""

    def __init__(self, cfg, seed: int):
        self.cfg = cfg
        self.seed = seed
        self.bands, self.rows = lsh_params(cfg.threshold, cfg.num_perm)
        self._perms = None  # drawn once per process, on first use
        self._words: dict[str, int] = {}

    def __getstate__(self):
        return {"cfg": self.cfg, "seed": self.seed}

    def __setstate__(self, state):
        self.__init__(state["cfg"], state["seed"])

    def buckets(self, text: str) -> list[int]:
        return self.buckets_many([text])[0]

    def buckets_many(self, texts: list[str]) -> list[list[int]]:
        """Bucket ids of each text: its exact bucket, then one per LSH band (one vectorised pass
        over all the texts: per-text numpy calls cost more than the arithmetic on short records)."""
        norms = [normalise(t) for t in texts]
        out: list[list[int]] = [[] for _ in texts]
        if self.cfg.exact:
            for o, norm in zip(out, norms, strict=True):
                o.append((EXACT_BAND << 55) | _h55(norm.encode()))
        if self.cfg.near and texts:
            for o, ids in zip(out, self.band_ids(self.minhash_many(norms)).tolist(), strict=True):
                o.extend(ids)
        return out

    def band_ids(self, signatures: np.ndarray) -> np.ndarray:
        """(texts, bands) bucket ids: band index in the top bits, a 55-bit hash of its rows below."""
        bands = signatures[:, : self.bands * self.rows].reshape(len(signatures), self.bands, self.rows)
        with np.errstate(over="ignore"):
            h = np.zeros(bands.shape[:2], np.uint64)
            for r in range(self.rows):
                h = h * _MUL + bands[:, :, r]
            h = _fmix64(h + np.uint64(self.rows)) >> np.uint64(9)
        return (np.arange(self.bands, dtype=np.int64) << 55) | h.astype(np.int64)

    def minhash(self, norm: str) -> np.ndarray:
        return self.minhash_many([norm])[0]

    def minhash_many(self, norms: list[str]) -> np.ndarray:
        """(texts, num_perm) minimum hash values over each text's word n-gram shingles.

        Vectorised over all texts: each distinct word is hashed once (blake2b), a shingle's
        32-bit hash is a mix of its words' hashes (a polynomial in 64-bit arithmetic, then the
        murmur3 64-bit finaliser), and the permutations are datasketch's (its `affine32` scheme
        for this seed: h -> a * h + b mod 2**32, a odd) applied to every distinct (text, shingle)
        at once. A text of fewer words than a shingle has one shingle of all its words; an empty
        text one empty shingle. The values depend on the set of a text's shingles only.
        """
        n = self.cfg.shingle_words
        if self._perms is None:
            self._perms = affine32_permutations(self.cfg.num_perm, self.seed)
        a, b = self._perms
        words = [_WORD.findall(x) or [""] for x in norms]
        lengths = np.fromiter(map(len, words), np.int64, len(words))
        wh = self._word_hashes(list(itertools.chain.from_iterable(words)))
        width = np.minimum(lengths, n)  # words per shingle
        count = lengths - width + 1  # shingles per text
        doc = np.repeat(np.arange(len(words), dtype=np.uint64), count)
        first = np.repeat(np.cumsum(lengths) - lengths - (np.cumsum(count) - count), count) + np.arange(count.sum())
        w = np.repeat(width, count)
        with np.errstate(over="ignore"):
            h = np.zeros(len(first), np.uint64)
            for k in range(n):
                step = h * _MUL + wh[np.minimum(first + k, len(wh) - 1)]
                h = step if k == 0 else np.where(w > k, step, h)
            h = _fmix64(h + w.astype(np.uint64))
        # distinct (text, shingle) pairs, sorted by text
        pairs = np.sort((doc << np.uint64(32)) | (h >> np.uint64(32)))  # (np.unique hashes: slower here)
        pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]]
        owner = (pairs >> np.uint64(32)).astype(np.int64)
        hv = (pairs & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        out = np.full((len(words), len(a)), 0xFFFFFFFF, np.uint32)
        for i in range(0, len(hv), 4096):  # rows of at most 4096 shingles: bounded memory
            part, who = hv[i : i + 4096], owner[i : i + 4096]
            cuts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
            mins = np.minimum.reduceat(part[:, None] * a + b, cuts, axis=0)
            out[who[cuts]] = np.minimum(out[who[cuts]], mins)
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


def bucket_edges(group: dict) -> dict:
    """Ray Data `map_groups` body: one edge {key, root, exact} from every record of a bucket to the
    bucket's smallest key, for every bucket of two or more records.

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
    return {"key": keys[dup], "root": smallest[dup], "exact": (buckets[dup] >> 55) == EXACT_BAND}


def components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the graph with edges (a[i], b[i]): (its nodes, sorted; the smallest
    node of each one's component).

    Union-find in vectorised rounds: every edge whose ends have different roots hooks the larger
    root under the smaller one, then paths are compressed (pointer jumping) until each node points
    at its root. A parent is never larger than its child, so a component's root is its smallest node.
    """
    nodes, inverse = np.unique(np.concatenate([a, b]).astype(np.int64), return_inverse=True)
    u, v = inverse[: len(a)], inverse[len(a) :]
    parent = np.arange(len(nodes))
    while True:
        pu, pv = parent[u], parent[v]
        split = pu != pv
        if not split.any():
            return nodes, nodes[parent]
        np.minimum.at(parent, np.maximum(pu, pv)[split], np.minimum(pu, pv)[split])
        while not np.array_equal(jumped := parent[parent], parent):
            parent = jumped


def resolve(key: np.ndarray, root: np.ndarray, exact: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dropped keys, sorted; whether each was an exact copy) from the bucket edges: every record
    of a near-duplicate cluster (connected across buckets: A~B in one band, B~C in another) but the
    smallest key goes; 'exact' when the record shared an exact-content bucket with a smaller key."""
    nodes, roots = components(key, root)
    dropped = nodes[nodes != roots]
    return dropped, np.isin(dropped, key[exact])


class DupIndex:
    """The dropped keys, looked up like the dict `{key: reason}` (`key in dups`, `dups[key]`) by the
    Ray Data tasks that apply them. It travels as an object reference: the keys go from the task
    that resolved them to the workers through the object store, never through the driver."""

    def __init__(self, ref, count: int):
        self._ref, self.count = [ref], count  # in a list: Ray passes a nested reference unresolved
        self._arrays = None

    @classmethod
    def of(cls, dropped: dict[int, bool]) -> DupIndex:
        """An index held in this process ({key: exact?}), without the object store."""
        index = cls(None, len(dropped))
        keys = np.array(sorted(dropped), np.int64)
        index._arrays = (keys, np.array([dropped[k] for k in keys.tolist()], bool))
        return index

    def __getstate__(self):
        return {"_ref": self._ref, "count": self.count, "_arrays": None}

    def __len__(self) -> int:
        return self.count

    def _get(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            import ray

            self._arrays = ray.get(self._ref[0])
        return self._arrays

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Per key: "" (kept), "exact_duplicate" or "near_duplicate"."""
        dropped, exact = self._get()
        keys = np.asarray(keys, dtype=np.int64)
        at = np.minimum(np.searchsorted(dropped, keys), max(len(dropped) - 1, 0))
        hit = (dropped[at] == keys) if len(dropped) else np.zeros(len(keys), bool)
        reason = np.where(exact[at], "exact_duplicate", "near_duplicate") if len(dropped) else ""
        return np.where(hit, reason, "").astype(object)

    def __contains__(self, key) -> bool:
        return bool(self.lookup(np.array([key]))[0])

    def __getitem__(self, key) -> str:
        reason = self.lookup(np.array([key]))[0]
        if not reason:
            raise KeyError(key)
        return reason


def find_duplicates(scanned, parts: int, per_record: int) -> DupIndex:
    """The duplicates among the scanned records: a Ray Data groupby over shards of the dedup
    buckets yields the edges, one Ray task joins them into clusters (union-find).

    Shards (`bucket % shards`, ~1 M bucket rows each, at least 16), not single buckets, are the
    groups: one vectorised call per shard instead of one Python call per bucket.
    """
    import ray

    from forge_ray.prepare.stages import bucket_rows

    rows = scanned.count() * (1 + per_record)  # at most; count() of a materialised dataset is metadata
    shards = max(16, rows // 1_000_000 + 1)
    edges = (
        scanned.select_columns(["key", "buckets"])
        .map_batches(bucket_rows, batch_format="pyarrow", fn_kwargs={"shards": shards})
        .groupby("shard", num_partitions=parts)
        .map_groups(bucket_edges, batch_format="numpy")
        .materialize()
    )
    ref, count = ray.remote(num_cpus=1, num_returns=2)(_resolve_task).remote(edges)
    return DupIndex(ref, ray.get(count))


def _resolve_task(edges) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    cols = {"key": [], "root": [], "exact": []}
    for batch in edges.iter_batches(batch_format="numpy", batch_size=1 << 16):
        for c in cols:
            cols[c].append(np.asarray(batch[c]))
    key, root, exact = (np.concatenate(v) if v else np.zeros(0, t) for v, t in
                        zip(cols.values(), (np.int64, np.int64, bool), strict=True))
    dropped, is_exact = resolve(key, root, exact.astype(bool))
    return (dropped, is_exact), len(dropped)
