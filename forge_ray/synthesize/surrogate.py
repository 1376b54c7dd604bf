"""The generator interface, and the `surrogate` strategy: the record with every entity replaced.

    class Generator:                      # one per strategy; a test injects its own (a leaky one)
        def generate(self, records, samples, seed, source) -> list[Sample]

    SurrogateGenerator(shift_days=365).generate([record], 2, seed=0, source="tickets")

A surrogate keeps the record's structure and domain language and replaces each detected span with
a fake of its type and format (forge_ray/synthesize/fakes.py). One `Fakes` per sample: the same
person is the same fake throughout the sample, and a person's name tokens are also replaced where
they stand alone ("Ms Okafor" after "Amara Okafor"), which the scanner may not have flagged.
"""

from __future__ import annotations

import re

from forge_ray.synthesize.fakes import Fakes
from forge_ray.synthesize.records import Sample, SourceRecord, sample_rng

PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]{1,31})>")


class Generator:
    """Makes `samples` synthetic samples per record, each from its own seeded stream."""

    strategy = "custom"
    # every restricted value (PrivacyIndex.all_values), set by the run before generation: fakes avoid them
    real_values: frozenset[str] = frozenset()

    def describe(self) -> dict:
        """What the manifest records about the generator (prompts, teacher, templates)."""
        return {}

    def generate(self, records: list[SourceRecord], samples: int, seed: int, source: str) -> list[Sample]:
        return [self.one(r, j, seed, source) for r in records for j in range(samples)]

    def one(self, record: SourceRecord, j: int, seed: int, source: str) -> Sample:
        raise NotImplementedError


def _splice(text: str, spans, value) -> tuple[str, list[tuple[int, int]]]:
    """`text` with each (start, end, entity) span, in order, replaced by `value(entity, original)`
    (a span overlapping the one before is skipped); the replacements' ranges in the result."""
    out, inserted, last, pos = [], [], 0, 0
    for start, end, entity in spans:
        if start < last:
            continue
        keep, new = text[last:start], value(entity, text[start:end])
        out += [keep, new]
        pos += len(keep)
        inserted.append((pos, pos + len(new)))
        pos += len(new)
        last = end
    out.append(text[last:])
    return "".join(out), inserted


def replace_spans(text: str, spans, fakes: Fakes) -> tuple[str, list[tuple[int, int]]]:
    """`text` with each (start, end, entity) span replaced by its fake; the fakes' ranges in the result."""
    return _splice(text, sorted(spans), fakes.fake)


def replace_name_tokens(text: str, inserted: list[tuple[int, int]], fakes: Fakes) -> tuple[str, list[tuple[int, int]]]:
    """Name tokens of replaced persons that still stand alone outside the inserted ranges, replaced too."""
    tokens = {t: f for t, f in fakes.tokens.items() if len(t) >= 3}
    if not tokens:
        return text, inserted
    pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)) + r")\b")
    spans, marks = [], sorted(inserted)
    for m in pattern.finditer(text):
        if not any(s <= m.start() < e for s, e in marks):
            spans.append((m.start(), m.end(), "PERSON"))
    if not spans:
        return text, inserted
    out, new, last, shift = [], [], 0, 0
    events = sorted([(s, e, "fake") for s, e in marks] + [(s, e, "name") for s, e, _ in spans])
    for s, e, kind in events:
        out.append(text[last:s])
        value = text[s:e] if kind == "fake" else tokens[text[s:e]]
        new.append((s + shift, s + shift + len(value)))
        out.append(value)
        shift += len(value) - (e - s)
        last = e
    out.append(text[last:])
    return "".join(out), new


def surrogate(record: SourceRecord, fakes: Fakes) -> tuple[str, list[tuple[int, int]]]:
    text, inserted = replace_spans(record.text, record.spans, fakes)
    return replace_name_tokens(text, inserted, fakes)


def fill_placeholders(text: str, fakes: Fakes) -> tuple[str, list[tuple[int, int]]]:
    """`<ENTITY>` placeholders (a teacher's output) filled with fakes, one value per entity type."""
    spans = [(m.start(), m.end(), m.group(1)) for m in PLACEHOLDER.finditer(text)]
    cache: dict[str, str] = {}
    return _splice(text, spans, lambda entity, _: cache.setdefault(entity, fakes.fake(entity, None)))


class SurrogateGenerator(Generator):
    """Every detected entity replaced by a consistent fake of the same type and format."""

    strategy = "surrogate"

    def __init__(self, shift_days: int = 365):
        self.shift_days = shift_days

    def describe(self) -> dict:
        return {"date_shift_days": self.shift_days}

    def one(self, record: SourceRecord, j: int, seed: int, source: str) -> Sample:
        fakes = Fakes(sample_rng(seed, source, record.index, j), self.shift_days, self.real_values)
        for _, value in record.values():  # no fake may equal any original of the record
            fakes.avoid.add(value.strip().lower())
        text, inserted = surrogate(record, fakes)
        return Sample(record.index, j, text, inserted)
