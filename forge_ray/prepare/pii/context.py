"""Dates of birth (a date after a birth keyword) and postal addresses (a street with its number,
then optionally a unit and a postcode with its city), in EU, UK, US and Singapore layouts.

Patterns only: the shapes are regular, and a number plus a street type plus a postcode is much
stronger evidence than any model's guess. Every repetition is bounded, so no text backtracks
for long. A lone "75001 Paris" or "Baker Street" is a place, not someone's address: an address
needs the house number and the street.
"""

from __future__ import annotations

import regex as rx

from forge_ray.prepare.pii.spans import Span

_MONTHS = (
    r"jan(?:uary|vier|uar)?|feb(?:ruary|ruar)?|f[ée]v(?:rier)?|m[aä]r(?:ch|s|z)?|maerz|apr(?:il)?|avr(?:il)?"
    r"|ma[iy]|jun[ei]?|juin|jul[iy]?|juil(?:let)?|aug(?:ust)?|ao[uû]t|sep(?:t(?:ember|embre)?)?"
    r"|o[ck]t(?:ober|obre)?|nov(?:ember|embre)?|de[cz](?:ember)?|d[ée]c(?:embre)?|j[äa]n(?:ner)?"
)
_DATE = (
    rf"(?:\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}[./-]\d{{1,2}}[./-](?:\d{{4}}|\d{{2}})"
    rf"|\d{{1,2}}(?:st|nd|rd|th|er|\.)?\s(?:of\s)?(?:{_MONTHS})\.?,?\s\d{{4}}"
    rf"|(?:{_MONTHS})\.?\s\d{{1,2}}(?:st|nd|rd|th)?,?\s\d{{4}})(?!\d)"
)
_BIRTH = (
    r"born(?:\son)?|date\sof\sbirth|birth\s?date|d\.?o\.?b\.?|birthday|n[ée]e?\s(?:le|en)|date\sde\snaissance"
    r"|naissance|geboren(?:\sam)?|geb\.(?:\sam)?|geburtsdatum|geburtstag"
)
DOB = rx.compile(rf"\b(?:{_BIRTH})(?:\s{{0,3}}(?:[:\-–(]|is|was|on|the|am|le|ist)){{0,3}}\s{{0,3}}(?P<v>{_DATE})"
                 rf"|(?<!\d)(?P<v>{_DATE})\s{{1,3}}(?:geboren|born)\b", rx.I)  # "am 3. Mai 1980 geboren"

_W = r"\p{Lu}[\p{L}'’\-]{0,30}\.?"           # a capitalised word
_NUM = r"\d{1,5}[A-Za-z]?(?:-\d{1,5})?"       # a house number: 12, 221B, 12-14
_EN_TYPE = (r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Place|Pl|Way|Terrace"
            r"|Crescent|Close|Square|Sq|Gardens|Parkway|Pkwy|Highway|Hwy|Row|Walk|Mews|Circle|Grove|Central|Link)")
_STREETS = [
    # EN / SG: 221B Baker Street, 1600 Pennsylvania Avenue NW, Blk 123 Ang Mo Kio Avenue 3
    rf"(?:(?:Blk|Block)\s)?{_NUM}\s(?:{_W}\s){{1,4}}{_EN_TYPE}\.?(?:\s\d{{1,3}}\b)?(?:\s(?:NW|NE|SW|SE|N|S|E|W)\b)?",
    # FR: 12 rue de la Paix, 3 bis, boulevard Saint-Michel
    rf"{_NUM}(?:\s?(?:bis|ter))?,?\s(?i:rue|avenue|av\.|boulevard|bd|place|chemin|all[ée]e|impasse|quai|route"
    rf"|cours|square|passage)\s(?:(?:de\sla|de\sl['’]|du|des|de|d['’]|la|le|les|l['’])\s?)?{_W}"
    rf"(?:\s(?:(?:de|du|des|la|le|et|sur|l['’]|d['’])\s?)?{_W}){{0,3}}",
    # DE / NL / AT / CH: Hauptstraße 5, Berliner Straße 12a, Keizersgracht 123
    rf"(?:{_W}\s)?\p{{Lu}}\p{{Ll}}{{1,30}}(?:straße|strasse|str\.|weg|platz|allee|gasse|ring|damm|ufer|chaussee"
    rf"|steig|pfad|straat|gracht|laan|plein|kade|singel|dijk)\s{_NUM}\b",
    rf"{_W}\s(?:Straße|Strasse|Str\.|Weg|Platz|Allee|Gasse|Ring|Damm)\s{_NUM}\b",
    # IT / ES: Via Giuseppe Garibaldi 5, Calle de Alcalá, 42
    rf"(?:Via|Viale|Piazza|Piazzale|Corso|Vicolo|Largo|Calle|C/|Avenida|Avda\.|Plaza|Paseo|Camino|Carrer)\s"
    rf"(?:(?:de|del|della|dei|di|delle|la|San)\s){{0,2}}{_W}(?:\s(?:(?:de|del|della|di|la)\s)?{_W}){{0,3}}"
    rf",?\s(?:n[º°.]\s?)?{_NUM}\b",
]
_UNIT = r"(?:,?\s(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Floor|Appartement|App\.|#)\s?[\w-]{1,6})?"
_TAILS = [
    rf",\s(?:{_W}\s){{0,2}}{_W},?\s[A-Z]{{2}}\s\d{{5}}(?:-\d{{4}})?\b",                        # US: City, ST 12345
    rf"(?:,\s(?:{_W}\s){{0,2}}{_W})?,?\s[A-Z]{{1,2}}\d[A-Z\d]?\s?\d[A-Z]{{2}}\b",              # UK: City, SW1A 1AA
    r",?\s(?:#\d{2}-\d{2,4},?\s)?Singapore\s\d{6}\b",                                    # SG
    rf",?\s(?:[A-Z]{{1,2}}-)?\d{{4,5}}(?:\s?[A-Z]{{2}})?\s{_W}"                                   # EU: 75001 Paris,
    rf"(?:[\s\-](?:(?:am|an\sder|im|sur|en|de|la|le|lès)\s)?{_W}){{0,2}}",                      # Frankfurt am Main
]
ADDRESS = rx.compile(rf"(?<![\w-])(?:{'|'.join(_STREETS)}){_UNIT}(?:{'|'.join(_TAILS)})?")
_HAS_DIGIT = rx.compile(r"\d")


def find_context(text: str, entities: set[str]) -> list[Span]:
    if not _HAS_DIGIT.search(text):  # both need a digit: a cheap skip of most prose
        return []
    spans = []
    if "DATE_OF_BIRTH" in entities:
        spans += [Span(m.start("v"), m.end("v"), "DATE_OF_BIRTH") for m in DOB.finditer(text)]
    if "ADDRESS" in entities:
        spans += [Span(m.start(), m.end() - _trailing(m.group()), "ADDRESS") for m in ADDRESS.finditer(text)]
    return spans


def _trailing(s: str) -> int:
    """Trailing punctuation a pattern took in (a sentence's full stop after 'St.')."""
    return len(s) - len(s.rstrip(",.;: "))
