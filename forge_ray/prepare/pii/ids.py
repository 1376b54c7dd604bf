"""National identifiers with their check digits, and passport numbers by their context.

Each rule is a pattern, a validator (the check digit or letter where the identifier has one;
the ranges the issuer never assigns where it has none: US SSN) and, for the formats a random
number passes too easily (a mod-11 or mod-10 check: 1 in 10 or 11), a context: a keyword
within `LOOKBACK` characters before the value ("NHS", "BSN", "Steuer-ID" ...). A value whose
check fails is not redacted as an identifier (it may still be caught as another kind).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from forge_ray.checkdigits import (
    bsn_ok,
    de_tax_ok,
    es_dni_ok,
    es_nie_ok,
    it_cf_ok,
    nhs_ok,
    nir_ok,
    nric_ok,
    passport_ok,
    ssn_ok,
)
from forge_ray.prepare.pii.spans import Span

LOOKBACK = 48  # characters before a value searched for its context keyword


def _ctx(words: str) -> re.Pattern:
    return re.compile(words, re.I)


_SSN_CTX = _ctx(r"\bSSN\b|social security|s[ée]curit[ée] sociale|sozialversicherung")


@dataclass(frozen=True)
class IdRule:
    entity: str
    pattern: re.Pattern          # group "v": the value (its separators are dropped before the check)
    valid: Callable[[str], bool]
    context: re.Pattern | None = None   # a keyword required before the value ...
    context_if: Callable[[re.Match], bool] = lambda m: True  # ... for the matches this says

    def find(self, text: str) -> list[Span]:
        out = []
        for m in self.pattern.finditer(text):
            value = re.sub(r"[\s.\-]", "", m.group("v"))
            if not self.valid(value):
                continue
            if self.context is not None and self.context_if(m):
                if not self.context.search(text, max(0, m.start() - LOOKBACK), m.start()):
                    continue
            out.append(Span(m.start("v"), m.end("v"), self.entity))
        return out


RULES = [
    IdRule("US_SSN", re.compile(r"(?<![\w-])(?P<v>\d{3}(?P<s>[- ]?)\d{2}(?P=s)\d{4})(?![\w-])"), ssn_ok,
           _SSN_CTX, context_if=lambda m: m.group("s") == ""),
    IdRule("UK_NHS", re.compile(r"(?<![\w-])(?P<v>\d{3}(?P<s>[- ]?)\d{3}(?P=s)\d{4})(?![\w-])"), nhs_ok,
           _ctx(r"\bNHS\b|national health")),
    IdRule("FR_NIR", re.compile(r"(?<![\w])(?P<v>[1-478] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2})(?!\w)"),
           nir_ok),
    IdRule("DE_TAX_ID", re.compile(r"(?<![\w-])(?P<v>[1-9]\d(?P<s> ?)\d{3}(?P=s)\d{3}(?P=s)\d{3})(?![\w-])"), de_tax_ok,
           _ctx(r"steuer|\bid-?nr|identifikationsnummer|\btax\b|\bTIN\b|fiscal")),
    IdRule("IT_FISCAL_CODE", re.compile(r"\b(?P<v>[A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}"
                                        r"[A-Z][0-9LMNPQRSTUV]{3}[A-Z])\b"), it_cf_ok),
    IdRule("ES_DNI", re.compile(r"\b(?P<v>\d{8}-?[A-Z])\b"), es_dni_ok),
    IdRule("ES_NIE", re.compile(r"\b(?P<v>[XYZ]-?\d{7}-?[A-Z])\b"), es_nie_ok),
    IdRule("NL_BSN", re.compile(r"(?<!\w)(?<!\d\.)(?P<v>\d{9}|\d{4}\.\d{2}\.\d{3}|\d{3} \d{3} \d{3})(?!\w|\.\d)"), bsn_ok,
           _ctx(r"\bBSN\b|burgerservice|sofi-?nummer|citizen service")),
    IdRule("SG_NRIC", re.compile(r"\b(?P<v>[STFGM]\d{7}[A-Z])\b"), nric_ok),
    IdRule("PASSPORT", re.compile(
        r"(?i:passport|passeport|reisepass|passnummer|pass-nr\.?|pasaporte|passaporto|paspoort)"
        r"(?i:\s*(?:no\.?|number|nr\.?|n°|num[ée]ro|nummer|#))?\s*[:#]?\s*(?i:(?:is|est|ist|lautet)\s+)?"
        r"(?P<v>[A-Z0-9]{6,9})\b"), passport_ok),
]
ID_ENTITIES = tuple(r.entity for r in RULES)
# The keywords that label a number as an identifier: a digit run right after one is not a phone
# number even when its check digit is wrong (the phone finder skips it).
ID_LABEL = re.compile(r"\b(?:NHS|BSN|SSN|NIR|DNI|NIE|NRIC|FIN|IdNr|TIN|Steuer\S*|tax ID|codice fiscale"
                      r"|s[ée]curit[ée] sociale|passport|passeport|\S*pass(?:nummer|-Nr)|sozialversicherung\S*)\b", re.I)
_DIGIT = re.compile(r"\d")


def find_ids(text: str, entities: set[str]) -> list[Span]:
    if not _DIGIT.search(text):  # every rule's value has a digit: a C-level skip of plain prose
        return []
    return [s for rule in RULES if rule.entity in entities for s in rule.find(text)]
