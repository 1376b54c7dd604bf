"""presidio's pattern recognisers (e-mail, IBAN, card, IP, phone), run only where they can match.

Hints: cheap C-level `re` searches that every match of a presidio recogniser's patterns must
contain (necessary conditions read off those patterns), so text without a hint cannot hold a
match and the recogniser is not run on it. It runs on windows around the hints instead of the
whole text: the maximal run of characters its matches can be made of ("members") around each
hint, plus `context` characters on each side for the look-arounds. A match is made of members
only, so it lies inside one run, and the patterns' look-arounds (\\b, (?<![\\w:]), (?![\\w:]|\\.\\d),
(?<![A-Z0-9]), the card's (?!1\\d{12}(?!\\d))) look no further than the first non-member on each
side: with that character in the window (context 1), or where a string edge behaves like it
(whitespace for e-mail and IP, context 0), the spans are exactly those of a whole-text run.
Each hint is tied to a hash of the patterns it was read from (presidio 2.2.366): if an upgrade
changes them, that recogniser runs on every whole text again until the hints are re-derived
(`test_prepare_pii` checks both the hash and the spans).

presidio's e-mail check calls `tldextract`, whose default extractor downloads the public
suffix list on first use; here it gets an extractor with no suffix-list URLs (the bundled
snapshot), so nothing calls out.
"""

from __future__ import annotations

import hashlib
import re
import sys

import regex as rx  # the engine of presidio's patterns

from forge_ray.prepare.pii.spans import Span

PRESIDIO_ENTITIES = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "IBAN_CODE": "IBAN",
                     "CREDIT_CARD": "CREDIT_CARD", "IP_ADDRESS": "IP_ADDRESS"}
# Stretches of text that could hold a phone number: `phonenumbers` is run on these only, not on
# the whole text (it is by far the slowest detector, and most text has no digit runs at all).
_PHONE_CANDIDATE = re.compile(r"[+(]?\d[\d \t().\-/]{5,}\d")


# The "members" of each hint, as a character class of the `regex` module: the characters a match
# can be made of. Not-whitespace is spelled out: `regex`'s \s leaves out U+001C-U+001F, which
# str.isspace() (Python's notion, and `re`'s \s) counts as whitespace.
_TOKEN = r"[^\s\x1c-\x1f]"
# presidio's patterns run on the `regex` module, whose \d knows more digits (a newer Unicode) than
# Python's `re` and str.isdecimal: the card hint and its members use the `regex` module's \d.
_CARD = r"[\d\- ]"
_IBAN = r"[A-Z0-9 \-]"


HINTS = {
    # '@' is literal in its pattern; no match holds whitespace.
    "OfflineEmailRecognizer": ("26328d841a1fcf85", re.compile("@"), _TOKEN, 0),
    # Needs 4 digits, an optional '-' or ' ' and 3 more digits (digit groups 4, 3-4, 3-4, 3-5).
    "CreditCardRecognizer": ("b79ae6f2c6137756", rx.compile(r"\d{4}[- ]?\d{3}"), _CARD, 1),
    # Case-sensitive pattern: two capitals then two ASCII digits; groups of [A-Z0-9] split by ' ' or '-'.
    "IbanRecognizer": ("c7a636c94951bbae", re.compile(r"[A-Z]{2}[0-9]{2}"), _IBAN, 1),
    # Every IPv4 form (also the mapped / embedded IPv6 ones) holds a dotted quad; every IPv6
    # form holds two colons with at most 4 hex digits between them (`h:h`, `::`); no whitespace.
    "IpRecognizer": ("058d8815004d0847",
                     re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|:[0-9a-fA-F]{0,4}:"), _TOKEN, 0),
}


def patterns_hash(recognizer) -> str:
    """What a hint was read from: the recogniser's regexes and flags."""
    h = hashlib.sha256(repr(recognizer.global_regex_flags).encode())
    for p in recognizer.patterns:
        h.update(b"\0" + p.regex.encode())
    return h.hexdigest()[:16]


class Members:
    """A run of member characters around a position, found by the `regex` module in C: forwards,
    and backwards with a reverse pattern anchored at the position."""

    def __init__(self, char_class: str):
        self.forward = rx.compile(char_class + "*")
        self.backward = rx.compile("(?r)" + char_class + "*")

    def run(self, text: str, start: int, end: int) -> tuple[int, int]:
        return self.backward.match(text, 0, start).start(), self.forward.match(text, end).end()


def windows(text: str, hint: re.Pattern, members: Members, context: int) -> list[tuple[int, int]]:
    """(start, end) of the run of `members` around each match of `hint`, widened by `context`
    characters on each side (hint matches are made of members)."""
    out: list[tuple[int, int]] = []
    n = len(text)
    for m in hint.finditer(text):
        if out and m.start() < out[-1][1]:
            continue  # in the run of the window before
        start, end = members.run(text, m.start(), m.end())
        out.append((max(0, start - context), min(n, end + context)))
    return out


def offline_tld_extractor():
    """A tldextract extractor that never fetches the public suffix list (bundled snapshot only)."""
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


def build_recognizers(entities: set[str]) -> list[tuple]:
    """(recogniser, hint, member, context) of each wanted presidio pattern recogniser; hint None
    (whole-text runs) when presidio's patterns are not the ones the hint was read from."""
    CreditCardRecognizer, EmailRecognizer, IbanRecognizer, IpRecognizer, _ = presidio_classes()
    tld = offline_tld_extractor()

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str):  # noqa: D102 - same rule, offline extractor
            return tld(pattern_text).fqdn != ""

    wanted = {"EMAIL": OfflineEmailRecognizer, "IBAN": IbanRecognizer, "CREDIT_CARD": CreditCardRecognizer,
              "IP_ADDRESS": IpRecognizer}
    out = []
    for name, cls in wanted.items():
        if name in entities:
            rec = cls()
            digest, hint, members, context = HINTS.get(cls.__name__, ("", None, None, 0))
            known = digest == patterns_hash(rec)
            out.append((rec, hint, Members(members), context) if known else (rec, None, None, 0))
    return out


def find_patterns(text: str, recognizers: list[tuple], min_score: float) -> list[Span]:
    spans = []
    for rec, hint, member, context in recognizers:
        wins = [(0, len(text))] if hint is None else windows(text, hint, member, context)
        for start, end in wins:
            piece = text if (start, end) == (0, len(text)) else text[start:end]
            for r in rec.analyze(piece, entities=rec.supported_entities, nlp_artifacts=None):
                if r.score >= min_score:
                    spans.append(Span(start + r.start, start + r.end, PRESIDIO_ENTITIES[r.entity_type]))
    return spans


class PhoneFinder:
    """Phone numbers, by presidio's PhoneRecognizer (phonenumbers), run last and on candidates only.

    It is by far the slowest detector, so it sees only digit runs that no other detector has
    claimed (IBANs, cards, IPs, keys, national IDs), and a '+<country>' number is checked once
    (any region finds it), not once per configured region. Finds are memoised per candidate:
    they depend on that string alone, and the same candidates recur across records.
    """

    def __init__(self, regions: list[str], min_score: float):
        Phone = presidio_classes()[4]
        self.all = Phone(supported_regions=tuple(regions))
        self.intl = Phone(supported_regions=tuple(regions[:1]) or ("US",))
        self.min_score = min_score
        self.memo: dict[str, tuple[tuple[int, int], ...]] = {}

    def find(self, text: str, found: list[Span]) -> list[Span]:
        from forge_ray.prepare.pii.ids import ID_LABEL

        out = []
        for m in _PHONE_CANDIDATE.finditer(text):
            if any(s.start < m.end() and m.start() < s.end for s in found):
                continue
            if ID_LABEL.search(text, max(0, m.start() - 24), m.start()):
                continue  # labelled as an identifier ("NHS number 943 476 5910"): not a phone
            out += [Span(m.start() + a, m.start() + b, "PHONE") for a, b in self._spans(m.group())]
        return out

    def _spans(self, candidate: str) -> tuple[tuple[int, int], ...]:
        spans = self.memo.get(candidate)
        if spans is None:
            rec = self.intl if candidate.lstrip("(").startswith("+") else self.all
            spans = tuple((r.start, r.end) for r in rec.analyze(candidate, entities=rec.supported_entities,
                                                                 nlp_artifacts=None)
                          if r.score >= self.min_score)
            if len(self.memo) >= 1 << 16:
                self.memo.clear()
            self.memo[candidate] = spans
        return spans


def presidio_classes() -> tuple:
    """presidio's pattern recognisers, imported without its NLP engines' optional heavy imports.

    `import presidio_analyzer` imports its Hugging Face NLP engine, which imports transformers
    and torch when they are installed (~10-20 s per Ray worker, for nothing the pattern
    recognisers use). With them marked missing during the import, presidio takes its own
    "not installed" path; a process that already has them loaded keeps them.
    """
    blocked = [m for m in ("transformers", "torch") if m not in sys.modules]
    for m in blocked:
        sys.modules[m] = None  # type: ignore[assignment]  # makes `import m` raise ImportError
    try:
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
        )
    finally:
        for m in blocked:
            if sys.modules.get(m) is None:
                del sys.modules[m]
    return CreditCardRecognizer, EmailRecognizer, IbanRecognizer, IpRecognizer, PhoneRecognizer
