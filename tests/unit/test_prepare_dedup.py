"""Dedup signatures: exact copies share the exact bucket, near-copies share an LSH band, others do not."""

from __future__ import annotations

import random

import numpy as np

from forge_ray.config.prepare import DedupConfig
from forge_ray.prepare.dedup import (
    EXACT_BAND,
    Signer,
    affine32_permutations,
    bucket_edges,
    components,
    lsh_params,
    resolve,
)

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar".split()


def text(seed: int, n: int = 120) -> str:
    r = random.Random(seed)
    return " ".join(r.choice(WORDS) + str(r.randint(0, 9)) for _ in range(n))


def shared(a: list[int], b: list[int]) -> set[int]:
    return {x >> 55 for x in set(a) & set(b)}


def test_exact_near_and_different_texts():
    signer = Signer(DedupConfig(threshold=0.8), seed=0)
    base = text(1)
    words = base.split()
    words[60] = "zulu"
    near, other = " ".join(words), text(2)
    a = signer.buckets(base)
    assert len(a) == 1 + signer.bands
    assert EXACT_BAND in shared(a, signer.buckets("  " + base.upper() + "\n"))  # normalised copy
    bands = shared(a, signer.buckets(near))
    assert bands and EXACT_BAND not in bands
    assert not shared(a, signer.buckets(other))


def test_lsh_parameters_cover_the_permutations():
    bands, rows = lsh_params(0.8, 128)
    assert bands * rows <= 128 and bands >= 2


def test_lsh_parameters_and_permutations_are_datasketchs():
    """forge computes both without importing datasketch (scipy); they must be datasketch's."""
    from datasketch import MinHash
    from datasketch.lsh import _optimal_param

    for num_perm in (32, 128):
        for threshold in (0.5, 0.7, 0.8, 0.85, 0.9, 0.95):
            assert lsh_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)
    for seed in (0, 7):
        a, b = MinHash(num_perm=128, seed=seed, scheme="affine32").permutations
        ours = affine32_permutations(128, seed)
        assert np.array_equal(ours[0], a) and np.array_equal(ours[1], b)


def test_a_bucket_links_its_records_to_its_smallest_key():
    bucket = (3 << 55) | 12345
    out = bucket_edges({"bucket": np.array([bucket] * 3), "key": np.array([30, 10, 20])})
    assert out["key"].tolist() == [20, 30] and out["root"].tolist() == [10, 10] and not out["exact"].any()
    exact = bucket_edges({"bucket": np.array([(EXACT_BAND << 55) | 1] * 2), "key": np.array([5, 4])})
    assert exact["key"].tolist() == [5] and exact["exact"].tolist() == [True]
    assert bucket_edges({"bucket": np.array([bucket]), "key": np.array([1])})["key"].size == 0


def edges_of(*buckets: tuple[int, list[int]]) -> dict:
    """The edges of several buckets (band, keys) as the dedup groupby yields them."""
    rows = [((band << 55) | i, k) for i, (band, keys) in enumerate(buckets) for k in keys]
    return bucket_edges({"bucket": np.array([b for b, _ in rows]), "key": np.array([k for _, k in rows])})


def test_a_chain_across_buckets_is_one_cluster():
    """A~B share band 0, B~C share band 5: one component, only A (the smallest key) is kept."""
    a, b, c = 10, 20, 30
    e = edges_of((0, [a, b]), (5, [b, c]))
    dropped, exact = resolve(e["key"], e["root"], e["exact"])
    assert dropped.tolist() == [b, c] and not exact.any()
    # Per bucket, B (the smallest of band 5's bucket {B, C}) would be kept when A~C and B~C only:
    e = edges_of((0, [a, c]), (5, [b, c]))
    assert resolve(e["key"], e["root"], e["exact"])[0].tolist() == [b, c]


def test_components_match_a_reference_union_find():
    r = random.Random(3)
    a = np.array([r.randrange(200) for _ in range(300)])
    b = np.array([r.randrange(200) for _ in range(300)])
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        rx, ry = find(x), find(y)
        parent[max(rx, ry)] = min(rx, ry)
    nodes, roots = components(a, b)
    assert nodes.tolist() == sorted(parent) and roots.tolist() == [find(n) for n in nodes.tolist()]


def test_exact_copies_are_named_exact():
    e = edges_of((EXACT_BAND, [4, 5]), (2, [4, 6]))
    dropped, exact = resolve(e["key"], e["root"], e["exact"])
    assert dict(zip(dropped.tolist(), exact.tolist(), strict=True)) == {5: True, 6: False}
