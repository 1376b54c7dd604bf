"""Dedup signatures: exact copies share the exact bucket, near-copies share an LSH band, others do not."""

from __future__ import annotations

import random

import numpy as np

from forge_ray.config.prepare import DedupConfig
from forge_ray.prepare.dedup import EXACT_BAND, Signer, duplicates_in_bucket, lsh_params

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


def test_a_bucket_keeps_its_smallest_key():
    bucket = (3 << 55) | 12345
    out = duplicates_in_bucket({"bucket": np.array([bucket] * 3), "key": np.array([30, 10, 20])})
    assert out["key"].tolist() == [20, 30] and set(out["reason"]) == {"near_duplicate"}
    exact = duplicates_in_bucket({"bucket": np.array([(EXACT_BAND << 55) | 1] * 2), "key": np.array([5, 4])})
    assert exact["key"].tolist() == [5] and exact["reason"].tolist() == ["exact_duplicate"]
    assert duplicates_in_bucket({"bucket": np.array([bucket]), "key": np.array([1])})["key"].size == 0
