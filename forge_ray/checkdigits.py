"""Check digits of national identifiers: the validators that the PII scan (prepare/pii/ids.py)
redacts by and that the embedded corpora (corpora/fake_pii.py) and synthetic surrogates make
valid fakes with. Pure functions of the identifier's characters, shared by both rooms.
"""

from __future__ import annotations

from collections import Counter


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
