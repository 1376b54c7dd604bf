"""National identifiers with their check digits, and passport numbers by their context.

Each rule is a pattern, a validator (the check digit or letter where the identifier has one;
the ranges the issuer never assigns where it has none: US SSN) and, for the formats a random
number passes too easily (a mod-11 or mod-10 check: 1 in 10 or 11), a context: a keyword
within `LOOKBACK` characters before the value ("NHS", "BSN", "Steuer-ID" ...). A value whose
check fails is not redacted as an identifier (it may still be caught as another kind).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from forge_ray.prepare.pii.spans import Span

LOOKBACK = 48  # characters before a value searched for its context keyword


def ssn_ok(v: str) -> bool:
    """US SSN: no check digit; area 000, 666 and 900-999, group 00 and serial 0000 are never issued."""
    return v[:3] not in ("000", "666") and v[0] != "9" and v[3:5] != "00" and v[5:] != "0000"


def nhs_ok(v: str) -> bool:
    """UK NHS number: mod 11 with weights 10..2; a remainder giving 10 is never issued."""
    check = 11 - sum(int(c) * (10 - i) for i, c in enumerate(v[:9])) % 11
    return check != 10 and check % 11 == int(v[9])


def nir_ok(v: str) -> bool:
    """French NIR (numéro de sécurité sociale): key = 97 - (first 13 digits mod 97); Corsica's
    departments 2A / 2B count as 19 / 18."""
    body = v[:13].replace("2A", "19").replace("2B", "18")
    return body.isdigit() and 97 - int(body) % 97 == int(v[13:])


def de_tax_ok(v: str) -> bool:
    """German Steuer-IdNr: ISO 7064 MOD 11,10 check digit; in the first ten digits exactly one
    digit repeats (twice or three times)."""
    repeats = [n for n in Counter(v[:10]).values() if n > 1]
    if v[0] == "0" or repeats not in ([2], [3]):
        return False
    product = 10
    for c in v[:10]:
        total = (int(c) + product) % 10 or 10
        product = total * 2 % 11
    return (11 - product) % 10 == int(v[10])


_CF_ODD = dict(zip("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                   [1, 0, 5, 7, 9, 13, 15, 17, 19, 21] + [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11,
                                                          3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23], strict=True))


def it_cf_ok(v: str) -> bool:
    """Italian codice fiscale: the 16th letter from the odd / even position tables, mod 26."""
    total = sum(_CF_ODD[c] if i % 2 == 0 else (int(c) if c.isdigit() else ord(c) - 65) for i, c in enumerate(v[:15]))
    return chr(65 + total % 26) == v[15]


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def es_dni_ok(v: str) -> bool:
    return _DNI_LETTERS[int(v[:8]) % 23] == v[8]


def es_nie_ok(v: str) -> bool:
    return es_dni_ok(str("XYZ".index(v[0])) + v[1:])


def bsn_ok(v: str) -> bool:
    """Dutch BSN: the eleven-test (weights 9..2, the last digit -1)."""
    total = sum(int(c) * (9 - i) for i, c in enumerate(v[:8])) - int(v[8])
    return total % 11 == 0 and v != "000000000"


_NRIC_TABLES = {"S": ("JZIHGFEDCBA", 0), "T": ("JZIHGFEDCBA", 4), "F": ("XWUTRQPNMLK", 0),
                "G": ("XWUTRQPNMLK", 4), "M": ("XWUTRQPNJLK", 3)}


def nric_ok(v: str) -> bool:
    """Singapore NRIC / FIN: weights 2,7,6,5,4,3,2 plus a per-series offset, mod 11, into the
    series' letter table (M series: as Singapore's FormSG validator checks it; not published by ICA)."""
    table, offset = _NRIC_TABLES[v[0]]
    return table[(sum(int(c) * w for c, w in zip(v[1:8], (2, 7, 6, 5, 4, 3, 2), strict=True)) + offset) % 11] == v[8]


def passport_ok(v: str) -> bool:
    """A passport number after its keyword: 6-9 capitals and digits, at least 3 of them digits."""
    return sum(c.isdigit() for c in v) >= 3


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
