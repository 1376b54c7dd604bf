"""A found span of personal data, and merging overlapping finds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    entity: str


def merge(spans: list[Span]) -> list[Span]:
    """Non-overlapping spans, sorted; overlapping finds merge into the longest one's entity
    (on a tie, the one found first: detectors run most specific first)."""
    spans.sort(key=lambda s: (s.start, -(s.end - s.start)))
    merged: list[Span] = []
    for s in spans:
        if merged and s.start < merged[-1].end:
            m = merged[-1]
            entity = m.entity if (m.end - m.start) >= (s.end - s.start) else s.entity
            merged[-1] = Span(m.start, max(m.end, s.end), entity)
        else:
            merged.append(s)
    return merged
