"""The scanner: every detector of the selected entities over a text, merged, then redacted."""

from __future__ import annotations

import re
from functools import cached_property

import regex as rx

from forge_ray.prepare.pii.context import find_context
from forge_ray.prepare.pii.ids import ID_ENTITIES, find_ids
from forge_ray.prepare.pii.spans import Span, merge

STRUCTURED = ("EMAIL", "PHONE", "IBAN", "CREDIT_CARD", "IP_ADDRESS", "SECRET")
ENTITIES = (*STRUCTURED, "PERSON", "ADDRESS", "DATE_OF_BIRTH", *ID_ENTITIES)
PLACEHOLDERS = {e: f"<{e}>" for e in ENTITIES}


class PatternTimeout(Exception):
    """A custom pattern ran past `pattern_timeout_s` on one record (catastrophic backtracking)."""

    def __init__(self, name: str):
        super().__init__(f"custom pattern {name} timed out")
        self.name = name


def placeholder(entity: str) -> str:
    return PLACEHOLDERS.get(entity, f"<{entity}>")


class PiiScanner:
    """Finds and redacts PII in texts; built from a `PiiConfig` and the entities to look for
    (default: the config's), picklable (detectors are built lazily, in the process that scans)."""

    def __init__(self, cfg, entities: list[str] | tuple[str, ...] | None = None):
        self.cfg = cfg
        self.entity_list = tuple(cfg.entities if entities is None else entities)
        self.entities = set(self.entity_list)
        # Custom patterns run on the `regex` module, which can stop a match after a timeout.
        self.custom = [(p.name, rx.compile(p.regex)) for p in cfg.patterns]
        self.deny = [(d.name, re.compile(r"\b(?:" + "|".join(re.escape(t) for t in d.terms) + r")\b", re.I))
                     for d in cfg.deny_lists]

    def __getstate__(self):
        return {"cfg": self.cfg, "entities": self.entity_list}

    def __setstate__(self, state):
        self.__init__(state["cfg"], state["entities"])

    @cached_property
    def _presidio(self) -> list:
        from forge_ray.prepare.pii.presidio import build_recognizers

        return build_recognizers(self.entities)

    @cached_property
    def _secrets(self):
        from forge_ray.prepare.pii.keys import SecretFinder

        return SecretFinder(self.cfg.entropy_min_length, self.cfg.entropy_bits)

    @cached_property
    def _phones(self):
        from forge_ray.prepare.pii.presidio import PhoneFinder

        return PhoneFinder(list(self.cfg.phone_regions), self.cfg.min_score)

    @cached_property
    def _names(self):
        from forge_ray.prepare.pii.names import NameFinder

        return NameFinder(self.cfg.ner_model)

    def find(self, text: str) -> list[Span]:
        """Non-overlapping spans, sorted; overlapping finds merge into the longest one's entity.
        Raises PatternTimeout when a custom pattern runs past its time on this text."""
        from forge_ray.prepare.pii.presidio import find_patterns

        spans = find_ids(text, self.entities)  # first: on a tie, a checked identifier wins
        spans += find_patterns(text, self._presidio, self.cfg.min_score)
        if "SECRET" in self.entities:
            spans += self._secrets.find(text)
        spans += find_context(text, self.entities)
        for name, regex in self.custom:
            try:
                spans += [Span(m.start(), m.end(), name)
                          for m in regex.finditer(text, timeout=self.cfg.pattern_timeout_s) if m.end() > m.start()]
            except TimeoutError:
                raise PatternTimeout(name) from None
        for name, regex in self.deny:
            spans += [Span(m.start(), m.end(), name) for m in regex.finditer(text)]
        if "PERSON" in self.entities:
            spans += self._names.find(text)
        if "PHONE" in self.entities:
            spans += self._phones.find(text, merge(list(spans)))
        return merge(spans)

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """(text with each span replaced by its placeholder, count per entity)."""
        spans = self.find(text)
        if not spans:
            return text, {}
        out, counts, last = [], {}, 0
        for s in spans:
            out += [text[last : s.start], placeholder(s.entity)]
            counts[s.entity] = counts.get(s.entity, 0) + 1
            last = s.end
        out.append(text[last:])
        return "".join(out), counts
