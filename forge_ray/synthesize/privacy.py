"""Privacy checks on every synthetic sample before it is kept; the first failing check is its drop reason.

    index = PrivacyIndex.build(records, cfg.privacy, scope="all", canaries=[...])   # driver, once
    verdict = index.check(sample, record_values, rescan_spans)                         # per sample

Checks, in order (every failure is also counted on its own, so a sample failing two is seen twice
in `check_failures` and once in `dropped`):
- `canary`: a planted canary string appears;
- `source_value`: a value detected in the sample's own source record appears (as written, without
  separators for numbers, or a person's name token as a whole word);
- `restricted_value`: a value detected in *any* restricted record appears as an entity of the sample
  (a fake the strategy inserted, or what the re-scan finds): a fake that happens to equal another
  record's value, or a value copied across records, is dropped too;
- `shared_ngram`: a run of `ngram_tokens` tokens (words and punctuation, lower-cased) is shared with
  any restricted record: exact, by 64-bit hashes of every window in a sorted array;
- `pii_rescan`: the prepare scanner finds an entity that no fake of the strategy covers;
- `too_close`: closer than `min_distance` to the closest restricted record (only when set).
Reported, not enforced: the distance to the closest restricted record (MinHash estimate of the
Jaccard distance of word 3-grams) and the longest run of tokens shared with one restricted record
(exact from `probe_tokens` up: windows chained by their position in that record).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

TOKEN = re.compile(r"\w+|[^\w\s]")
_MUL = np.uint64(0x9E3779B97F4A7C15)
_PERMS = 64
_SHINGLE = 3


def tokens(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    found = list(TOKEN.finditer(text.lower()))
    return [m.group(0) for m in found], [(m.start(), m.end()) for m in found]


def _token_hashes(toks: list[str]) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") for t in toks],
                    dtype=np.uint64)


def window_hashes(th: np.ndarray, n: int) -> np.ndarray:
    """64-bit hash of every window of n consecutive token hashes (polynomial, wrapping)."""
    if len(th) < n:
        return np.zeros(0, np.uint64)
    acc = np.zeros(len(th) - n + 1, np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            acc = acc * _MUL + th[k : len(th) - n + 1 + k]
    return acc


def _span_tokens(spans, offsets) -> list[tuple[int, int]]:
    """Token index range [a, b) of each entity span (the tokens it overlaps)."""
    out = []
    for s, e, _ in spans:
        idx = [i for i, (s2, e2) in enumerate(offsets) if s < e2 and s2 < e]
        if idx:
            out.append((idx[0], idx[-1] + 1))
    return out


def _windows_in_scope(ranges: list[tuple[int, int]], count: int, n: int) -> np.ndarray:
    """Identifier windows: those holding a whole entity, or lying inside one longer than a window.
    A window with only part of an entity (a kept country code, '+44 20') is not one: a surrogate
    keeps such parts by design, and the whole value is what identifies."""
    keep = np.zeros(count, bool)
    starts = np.arange(count)
    for a, b in ranges:
        keep |= ((starts <= a) & (starts + n >= b)) | ((starts >= a) & (starts + n <= b))
    return keep


def minhash(th: np.ndarray) -> np.ndarray:
    """[64] uint64 signature over the word 3-grams (or the words of a shorter text)."""
    sh = window_hashes(th, _SHINGLE) if len(th) >= _SHINGLE else th
    if len(sh) == 0:
        return np.full(_PERMS, np.iinfo(np.uint64).max, np.uint64)
    seeds = (np.arange(1, _PERMS + 1, dtype=np.uint64) * np.uint64(0xBF58476D1CE4E5B9)) | np.uint64(1)
    with np.errstate(over="ignore"):
        mixed = (sh[None, :] ^ (seeds[:, None] >> np.uint64(7))) * seeds[:, None]
    return mixed.min(axis=1)


def value_forms(value: str) -> list[str]:
    """The forms a value is matched by: folded (>= 4 characters), and compact when it has digits (>= 6)."""
    folded = " ".join(value.lower().split())
    compact = re.sub(r"[\W_]", "", folded)
    out = [folded] if len(folded) >= 4 else []
    if len(compact) >= 6 and any(ch.isdigit() for ch in compact):
        out.append(compact)
    return out


@dataclass
class Verdict:
    failed: list[str]
    distance: float
    shared_tokens: int


class PrivacyIndex:
    """The restricted side of the checks, built once on the driver and shipped to the check tasks."""

    def __init__(self, ngrams, probes, signatures, values, canaries, n, probe, min_distance):
        self.ngrams, self.probes, self.signatures = ngrams, probes, signatures
        self.values, self.canaries = values, canaries
        # every restricted value, as written (case and spaces folded) and without separators when it has digits
        self.all_values = {f for vals in values.values() for _, v in vals for f in value_forms(v)}
        self.n, self.probe, self.min_distance = n, probe, min_distance

    @classmethod
    def build(cls, records, cfg, scope: str, canaries: list[str]) -> PrivacyIndex:
        """From the scanned restricted records (SourceRecord) and the `privacy` section."""
        ngrams, probes, where, sigs, values = [], [], [], [], {}
        for k, r in enumerate(records):
            toks, offsets = tokens(r.text)
            th = _token_hashes(toks)
            # A record with no detected entity has nothing a surrogate replaces: all of it counts.
            ranges = _span_tokens(r.spans, offsets) if scope == "identifiers" and r.spans else None
            for size, out in ((cfg.ngram_tokens, ngrams), (cfg.probe_tokens, probes)):
                wh = window_hashes(th, size)
                keep = _windows_in_scope(ranges, len(wh), size) if ranges is not None else np.ones(len(wh), bool)
                out.append(wh[keep])
            # (record, position) of each probe window: consecutive shared windows chain only when
            # they are consecutive in one record, so the longest shared run is exact
            where.append((np.int64(k) << np.int64(32)) + np.flatnonzero(keep).astype(np.int64))
            sigs.append(minhash(th))
            values[r.index] = r.values()
        ngram_index = np.unique(np.concatenate(ngrams)) if ngrams else np.zeros(0, np.uint64)
        probe_h = np.concatenate(probes) if probes else np.zeros(0, np.uint64)
        probe_at = np.concatenate(where) if where else np.zeros(0, np.int64)
        order = np.argsort(probe_h, kind="stable")
        return cls(ngram_index, (probe_h[order], probe_at[order]),
                   np.stack(sigs) if sigs else np.zeros((0, _PERMS), np.uint64),
                   values, [c for c in canaries if c], cfg.ngram_tokens, cfg.probe_tokens, cfg.min_distance)

    def stats(self) -> dict:
        return {"restricted_ngrams": int(len(self.ngrams)), "restricted_records": int(len(self.signatures)),
                "canaries": len(self.canaries)}

    def check(self, text: str, index: int, inserted, rescan_spans) -> Verdict:
        """Failed checks (in order), distance to the closest restricted record, longest shared run."""
        failed = []
        if any(c in text for c in self.canaries):
            failed.append("canary")
        if self._has_source_value(text, self.values.get(index, [])):
            failed.append("source_value")
        entities = [text[a:b] for a, b in inserted] + [text[a:b] for a, b, _ in rescan_spans or []]
        if any(f in self.all_values for v in entities for f in value_forms(v)):
            failed.append("restricted_value")
        th = _token_hashes(tokens(text)[0])
        if np.isin(window_hashes(th, self.n), self.ngrams).any():
            failed.append("shared_ngram")
        if rescan_spans is not None:
            if any(not any(s < e2 and s2 < e for s2, e2 in inserted) for s, e, _ in rescan_spans):
                failed.append("pii_rescan")
        distance = self._distance(th)
        if self.min_distance is not None and distance < self.min_distance:
            failed.append("too_close")
        return Verdict(failed, distance, self._shared_run(th))

    @staticmethod
    def _has_source_value(text: str, values) -> bool:
        low = " ".join(text.lower().split())
        compact = re.sub(r"[\W_]", "", low)
        for entity, value in values:
            v = " ".join(value.lower().split())
            if len(v) >= 4 and v in low:
                return True
            c = re.sub(r"[\W_]", "", v)
            if len(c) >= 6 and any(ch.isdigit() for ch in c) and c in compact:
                return True
            if entity == "PERSON":
                for tok in re.findall(r"\w{3,}", value):
                    if re.search(rf"\b{re.escape(tok)}\b", text):
                        return True
        return False

    def _distance(self, th: np.ndarray) -> float:
        if not len(self.signatures):
            return 1.0
        same = (self.signatures == minhash(th)[None, :]).mean(axis=1)
        return float(1.0 - same.max())

    def _shared_run(self, th: np.ndarray) -> int:
        """Longest run of tokens shared with one restricted record (probe_tokens - 1 when none is)."""
        hashes, at = self.probes
        wh = window_hashes(th, self.probe)
        lo, hi = np.searchsorted(hashes, wh, "left"), np.searchsorted(hashes, wh, "right")
        best, live = 0, {}  # live: (record << 32 | position) -> windows in the run ending there
        for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
            live = {p: live.get(p - 1, 0) + 1 for p in at[a:b].tolist()}
            best = max(best, max(live.values(), default=0))
        return self.probe - 1 + best


def distribution(values: list[float]) -> dict:
    """Quantiles and a 10-bin histogram over [0, 1] of the distances to the closest restricted record."""
    if not values:
        return {"count": 0}
    a = np.asarray(values, dtype=np.float64)
    hist, _ = np.histogram(a, bins=10, range=(0.0, 1.0))
    q = {f"p{p:02d}": round(float(np.quantile(a, p / 100)), 4) for p in (0, 1, 5, 25, 50)}
    return {"count": len(values), "mean": round(float(a.mean()), 4), **q, "histogram_0_to_1": hist.tolist()}
