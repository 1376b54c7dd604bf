"""Quality filters: Gopher-style heuristics (Rae et al. 2021, appendix A), first failing rule wins.

Each rule has its own drop reason (`quality_<rule>`), so the manifest says how many records
each one removed. Length rules apply to every source; the prose rules (ratios, repetition)
are skipped for `quality.exempt_sources` such as code, where they would misfire.
"""

from __future__ import annotations

import functools
import re
from collections import Counter

_WORD = re.compile(r"\S+")
_ALPHA = re.compile(r"[^\W\d_]")
_ALPHA_WORD = re.compile(r"[^\W\d_]\S*")
_DIGIT = re.compile(r"\d")

RULES = (
    "min_words", "max_words", "mean_word_length", "symbol_ratio", "digit_ratio", "alpha_words", "stop_words",
    "duplicate_lines", "top_ngram", "duplicate_ngrams",
)


def _duplicate_line_ratio(text: str) -> float:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        return 0.0
    counts = Counter(lines)
    return sum(c - 1 for c in counts.values()) / len(lines)


def _top_ngram_ratio(words: list[str], n: int = 2) -> float:
    """Share of characters covered by the most frequent word n-gram."""
    if len(words) < n + 1:
        return 0.0
    grams = Counter(zip(*[words[i:] for i in range(n)], strict=False))
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    return count * sum(len(w) for w in gram) / max(1, sum(map(len, words)))


def _duplicate_ngram_ratio(words: list[str], n: int = 5) -> float:
    """Share of characters in word n-grams that occur more than once (each word counted once)."""
    if len(words) < 2 * n:
        return 0.0
    grams = list(zip(*[words[i:] for i in range(n)], strict=False))
    counts = Counter(grams)
    if len(counts) == len(grams):  # no n-gram occurs twice
        return 0.0
    covered = bytearray(len(words))
    ones = b"\x01" * n
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i : i + n] = ones
    total = sum(map(len, words))
    return sum(len(w) for w, c in zip(words, covered, strict=True) if c) / max(1, total)


@functools.lru_cache(maxsize=8)
def _lowered_set(words: tuple[str, ...]) -> frozenset[str]:
    return frozenset(w.lower() for w in words)


def failed_rule(text: str, cfg, prose: bool) -> str | None:
    """The first rule `text` fails (a name from RULES), or None if it passes them all."""
    words = text.split()  # the same tokens as _WORD.findall: both split on str.isspace()
    n = len(words)
    if n < cfg.min_words:
        return "min_words"
    if n > cfg.max_words:
        return "max_words"
    if not prose:
        return None
    mean_len = sum(map(len, words)) / n
    if not cfg.min_mean_word_length <= mean_len <= cfg.max_mean_word_length:
        return "mean_word_length"
    if (text.count("#") + text.count("...") + text.count("\u2026")) / n > cfg.max_symbol_ratio:
        return "symbol_ratio"
    if len(_DIGIT.findall(text)) / max(1, len(text)) > cfg.max_digit_ratio:
        return "digit_ratio"
    # a word with a letter: one match per such word (from its first letter to the word's end)
    if len(_ALPHA_WORD.findall(text)) / n < cfg.min_alpha_word_ratio:
        return "alpha_words"
    lowered = text.lower().split()  # the words, lowered (lowering makes and removes no whitespace)
    if cfg.stop_words and len(_lowered_set(tuple(cfg.stop_words)).intersection(lowered)) < cfg.min_stop_words:
        return "stop_words"
    if _duplicate_line_ratio(text) > cfg.max_duplicate_line_ratio:
        return "duplicate_lines"
    if _top_ngram_ratio(lowered) > cfg.max_top_ngram_ratio:
        return "top_ngram"
    if _duplicate_ngram_ratio(lowered) > cfg.max_duplicate_ngram_ratio:
        return "duplicate_ngrams"
    return None
