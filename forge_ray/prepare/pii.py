"""Suitability: find personal data and secrets in a text, and redact them with typed placeholders.

Detectors (no model download, no network):
- presidio-analyzer pattern recognisers: e-mail, phone (via `phonenumbers`, international
  formats), IBAN (mod-97 checked), payment cards (Luhn checked), IPv4 / IPv6;
- detect-secrets' regex plugins: AWS, GitHub, GitLab, Slack, Stripe, JWT, OpenAI, npm, PyPI, ...
  plus whole PEM private-key blocks and high-entropy tokens (detect-secrets' Shannon entropy);
- the config's custom patterns and deny-lists.

presidio's e-mail check calls `tldextract`, whose default extractor downloads the public
suffix list on first use; here it gets an extractor with no suffix-list URLs (the bundled
snapshot), so nothing calls out.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from functools import cached_property

import regex as rx  # the engine of presidio's patterns

PLACEHOLDERS = {
    "EMAIL": "<EMAIL>", "PHONE": "<PHONE>", "IBAN": "<IBAN>", "CREDIT_CARD": "<CREDIT_CARD>",
    "IP_ADDRESS": "<IP_ADDRESS>", "SECRET": "<SECRET>",
}
_PRESIDIO = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "IBAN_CODE": "IBAN",
             "CREDIT_CARD": "CREDIT_CARD", "IP_ADDRESS": "IP_ADDRESS"}
# detect-secrets plugins left out: IP addresses are presidio's job; the keyword, basic-auth and
# quoted-string entropy plugins need file context (we test bare-token entropy ourselves).
_SKIP_PLUGINS = {"IPPublicDetector", "KeywordDetector", "Base64HighEntropyString", "HexHighEntropyString",
                 "PrivateKeyDetector"}
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*-----|\Z)", re.S)
_SECRET_LINE = re.compile(r"[A-Za-z0-9+/=_\-]{16,}|://[^\s/@]+@")
_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-]")  # one character of a token; `_long_token` adds the length
# Stretches of text that could hold a phone number: `phonenumbers` is run on these only, not on
# the whole text (it is by far the slowest detector, and most text has no digit runs at all).
_PHONE_CANDIDATE = re.compile(r"[+(]?\d[\d \t().\-/]{5,}\d")

# Hints: cheap C-level `re` searches that every match of a presidio recogniser's patterns must
# contain (necessary conditions read off those patterns), so text without a hint cannot hold a
# match and the recogniser is not run on it. It runs on windows around the hints instead of the
# whole text: the maximal run of characters its matches can be made of ("members") around each
# hint, plus `context` characters on each side for the look-arounds. A match is made of members
# only, so it lies inside one run, and the patterns' look-arounds (\b, (?<![\w:]), (?![\w:]|\.\d),
# (?<![A-Z0-9]), the card's (?!1\d{12}(?!\d))) look no further than the first non-member on each
# side: with that character in the window (context 1), or where a string edge behaves like it
# (whitespace for e-mail and IP, context 0), the spans are exactly those of a whole-text run.
# Each hint is tied to a hash of the patterns it was read from (presidio 2.2.366): if an upgrade
# changes them, that recogniser runs on every whole text again until the hints are re-derived
# (`test_prepare_pii` checks both the hash and the spans).
_CARD_CHARS = frozenset("- ")
_IBAN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -")


def _is_token_char(c: str) -> bool:
    return not c.isspace()


# presidio's patterns run on the `regex` module, whose \d knows more digits (a newer Unicode) than
# Python's `re` and str.isdecimal: the card hint and its members use the `regex` module's \d.
_RX_DIGIT = rx.compile(r"\d")


def _is_card_char(c: str) -> bool:
    return c in _CARD_CHARS or _RX_DIGIT.match(c) is not None


_HINTS = {
    # '@' is literal in its pattern; no match holds whitespace.
    "OfflineEmailRecognizer": ("26328d841a1fcf85", re.compile("@"), _is_token_char, 0),
    # Needs 4 digits, an optional '-' or ' ' and 3 more digits (digit groups 4, 3-4, 3-4, 3-5).
    "CreditCardRecognizer": ("b79ae6f2c6137756", rx.compile(r"\d{4}[- ]?\d{3}"), _is_card_char, 1),
    # Case-sensitive pattern: two capitals then two ASCII digits; groups of [A-Z0-9] split by ' ' or '-'.
    "IbanRecognizer": ("c7a636c94951bbae", re.compile(r"[A-Z]{2}[0-9]{2}"), _IBAN_CHARS.__contains__, 1),
    # Every IPv4 form (also the mapped / embedded IPv6 ones) holds a dotted quad; every IPv6
    # form holds two colons with at most 4 hex digits between them (`h:h`, `::`); no whitespace.
    "IpRecognizer": ("058d8815004d0847",
                     re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|:[0-9a-fA-F]{0,4}:"), _is_token_char, 0),
}


def patterns_hash(recognizer) -> str:
    """What a hint was read from: the recogniser's regexes and flags."""
    h = hashlib.sha256(repr(recognizer.global_regex_flags).encode())
    for p in recognizer.patterns:
        h.update(b"\0" + p.regex.encode())
    return h.hexdigest()[:16]


def _windows(text: str, hint: re.Pattern, member, context: int) -> list[tuple[int, int]]:
    """(start, end) of the run of `member` characters around each match of `hint`, widened by
    `context` characters on each side (hint matches are made of members)."""
    out: list[tuple[int, int]] = []
    n = len(text)
    for m in hint.finditer(text):
        if out and m.start() < out[-1][1]:
            continue  # in the run of the window before
        start, end = m.start(), m.end()
        while start > 0 and member(text[start - 1]):
            start -= 1
        while end < n and member(text[end]):
            end += 1
        out.append((max(0, start - context), min(n, end + context)))
    return out


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    entity: str


def offline_tld_extractor():
    """A tldextract extractor that never fetches the public suffix list (bundled snapshot only)."""
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


def placeholder(entity: str) -> str:
    return PLACEHOLDERS.get(entity, f"<{entity}>")


class PiiScanner:
    """Finds and redacts PII in texts; built from a `PiiConfig`, picklable (recognisers are lazy)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.entities = set(cfg.entities)
        self.custom = [(p.name, re.compile(p.regex)) for p in cfg.patterns]
        self.custom += [
            (d.name, re.compile(r"\b(?:" + "|".join(re.escape(t) for t in d.terms) + r")\b", re.I))
            for d in cfg.deny_lists
        ]

    def __getstate__(self):
        return {"cfg": self.cfg}

    def __setstate__(self, state):
        self.__init__(state["cfg"])

    @cached_property
    def _recognizers(self) -> list:
        CreditCardRecognizer, EmailRecognizer, IbanRecognizer, IpRecognizer, _ = _presidio()
        tld = offline_tld_extractor()

        class OfflineEmailRecognizer(EmailRecognizer):
            def validate_result(self, pattern_text: str):  # noqa: D102 - same rule, offline extractor
                return tld(pattern_text).fqdn != ""

        wanted = {
            "EMAIL": OfflineEmailRecognizer, "IBAN": IbanRecognizer, "CREDIT_CARD": CreditCardRecognizer,
            "IP_ADDRESS": IpRecognizer,
        }
        out = []
        for name, cls in wanted.items():
            if name in self.entities:
                rec = cls()
                digest, *hint = _HINTS.get(cls.__name__, ("", None, None, 0))
                out.append((rec, *hint) if digest == patterns_hash(rec) else (rec, None, None, 0))
        return out

    @cached_property
    def _secret_regexes(self) -> list[re.Pattern]:
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

        regexes = []
        for cls in get_mapping_from_secret_type_to_class().values():
            if cls.__name__ in _SKIP_PLUGINS:
                continue
            regexes.extend(getattr(cls(), "denylist", ()))
        return regexes

    def _secret_patterns(self, text: str) -> list[Span]:
        """detect-secrets' regexes, run on the lines that could hold a key or token.

        Every format they match is a long token (16+ characters) or a URL with credentials, so
        lines without one are skipped: ~40 regexes over every line of a corpus cost more than
        all the other detectors together.
        """
        spans, done = [], -1
        for hit in _SECRET_LINE.finditer(text):  # no match crosses a newline: one line each
            if hit.start() < done:
                continue  # its line is done
            offset = text.rfind("\n", 0, hit.start()) + 1
            done = text.find("\n", hit.end())
            done = len(text) if done < 0 else done
            line = text[offset:done]
            for regex in self._secret_regexes:
                spans += [Span(offset + m.start(), offset + m.end(), "SECRET")
                          for m in regex.finditer(line) if m.end() > m.start()]
        return spans

    @cached_property
    def _long_token(self) -> re.Pattern:
        return re.compile(f"{_TOKEN.pattern}{{{self.cfg.entropy_min_length},}}")

    def _high_entropy(self, text: str) -> list[Span]:
        from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString

        entropy = Base64HighEntropyString().calculate_shannon_entropy
        spans = []
        for m in self._long_token.finditer(text):
            tok = m.group()
            if (any(c.isdigit() for c in tok)
                    and any(c.isalpha() for c in tok) and entropy(tok) >= self.cfg.entropy_bits):
                spans.append(Span(m.start(), m.end(), "SECRET"))
        return spans

    def find(self, text: str) -> list[Span]:
        """Non-overlapping spans, sorted; overlapping finds merge into the longest one's entity."""
        spans: list[Span] = []
        for rec, hint, member, context in self._recognizers:
            windows = [(0, len(text))] if hint is None else _windows(text, hint, member, context)
            for start, end in windows:
                piece = text if (start, end) == (0, len(text)) else text[start:end]
                for r in rec.analyze(piece, entities=rec.supported_entities, nlp_artifacts=None):
                    if r.score >= self.cfg.min_score:
                        spans.append(Span(start + r.start, start + r.end, _PRESIDIO[r.entity_type]))
        if "SECRET" in self.entities:
            spans += [Span(m.start(), m.end(), "SECRET") for m in _PEM.finditer(text)]
            spans += self._secret_patterns(text)
            spans += self._high_entropy(text)
        for name, regex in self.custom:
            spans += [Span(m.start(), m.end(), name) for m in regex.finditer(text) if m.end() > m.start()]
        if "PHONE" in self.entities:
            spans += self._phones(text, _merge(list(spans)))
        return _merge(spans)

    def _phones(self, text: str, found: list[Span]) -> list[Span]:
        """Phone numbers, by presidio's PhoneRecognizer (phonenumbers), run last and on candidates only.

        It is by far the slowest detector, so it sees only digit runs that no other detector has
        claimed (IBANs, cards, IPs, keys), and a '+<country>' number is checked once (any region
        finds it), not once per configured region.
        """
        out = []
        for m in _PHONE_CANDIDATE.finditer(text):
            if any(s.start < m.end() and m.start() < s.end for s in found):
                continue
            out += [Span(m.start() + a, m.start() + b, "PHONE") for a, b in self._phone_spans(m.group())]
        return out

    def _phone_spans(self, candidate: str) -> tuple[tuple[int, int], ...]:
        """PhoneRecognizer's finds in one candidate, memoised: they depend on that string alone,
        and the same candidates (dates, versions, the same number) recur across records."""
        spans = self._phone_memo.get(candidate)
        if spans is None:
            rec = self._phone_intl if candidate.lstrip("(").startswith("+") else self._phone_all
            spans = tuple((r.start, r.end) for r in rec.analyze(candidate, entities=rec.supported_entities,
                                                                 nlp_artifacts=None)
                          if r.score >= self.cfg.min_score)
            if len(self._phone_memo) >= 1 << 16:
                self._phone_memo.clear()
            self._phone_memo[candidate] = spans
        return spans

    @cached_property
    def _phone_memo(self) -> dict[str, tuple[tuple[int, int], ...]]:
        return {}

    @cached_property
    def _phone_all(self):
        return _presidio()[4](supported_regions=tuple(self.cfg.phone_regions))

    @cached_property
    def _phone_intl(self):
        return _presidio()[4](supported_regions=tuple(self.cfg.phone_regions[:1]) or ("US",))

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


def _presidio() -> tuple:
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


def _merge(spans: list[Span]) -> list[Span]:
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
