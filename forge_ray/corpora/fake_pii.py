"""Fake personal values for the tickets corpus, the PII tests and benchmarks/pii.py, by seed.

Every identifier carries a correct check digit or letter (found by trying each candidate with the
scanner's validator: the validators themselves are anchored to published examples in
tests/unit/test_pii_ids.py); `corrupt` breaks one. Addresses, dates of birth and passport numbers
come in the layouts of the countries the scanner covers.
"""

from __future__ import annotations

import random
import string

from forge_ray import checkdigits as ids

D = string.digits
U = string.ascii_uppercase


def _digits(r: random.Random, n: int, first: str = D) -> str:
    return r.choice(first) + "".join(r.choice(D) for _ in range(n - 1))


def _complete(body: str, alphabet: str, valid) -> str:
    """`body` plus the one check character of `alphabet` that `valid` accepts."""
    return next(body + c for c in alphabet if valid(body + c))


def us_ssn(r: random.Random) -> str:
    v = f"{r.randint(1, 899):03d}{r.randint(1, 99):02d}{r.randint(1, 9999):04d}"
    v = v if ids.ssn_ok(v) else "123" + v[3:]
    return f"{v[:3]}-{v[3:5]}-{v[5:]}"


def uk_nhs(r: random.Random) -> str:
    while True:
        body = _digits(r, 9, "4679")
        for c in D:
            if ids.nhs_ok(body + c):
                v = body + c
                return f"{v[:3]} {v[3:6]} {v[6:]}"


def fr_nir(r: random.Random) -> str:
    dept = r.choice(["75", "69", "13", "33", "2A", "59", "67"])
    body = f"{r.choice('12')}{r.randint(40, 99):02d}{r.randint(1, 12):02d}{dept}{r.randint(1, 999):03d}{r.randint(1, 999):03d}"
    key = 97 - int(body.replace("2A", "19").replace("2B", "18")) % 97
    v = f"{body}{key:02d}"
    return f"{v[0]} {v[1:3]} {v[3:5]} {v[5:7]} {v[7:10]} {v[10:13]} {v[13:]}"


def de_tax_id(r: random.Random) -> str:
    while True:
        digits = r.sample(D, 9)  # nine distinct digits, one of them twice: the IdNr's rule
        body = digits + [r.choice(digits)]
        r.shuffle(body)
        body = "".join(body)
        if body[0] != "0":
            v = _complete(body, D, ids.de_tax_ok)
            return v if r.random() < 0.5 else f"{v[:2]} {v[2:5]} {v[5:8]} {v[8:]}"


def it_fiscal_code(r: random.Random) -> str:
    body = ("".join(r.choice(U) for _ in range(6)) + f"{r.randint(40, 99)}" + r.choice("ABCDEHLMPRST")
            + f"{r.choice([r.randint(1, 28), r.randint(41, 68)]):02d}" + r.choice(U) + f"{r.randint(100, 999)}")
    return _complete(body, U, ids.it_cf_ok)


def es_dni(r: random.Random) -> str:
    return _complete(_digits(r, 8), U, ids.es_dni_ok)


def es_nie(r: random.Random) -> str:
    return _complete(r.choice("XYZ") + _digits(r, 7), U, ids.es_nie_ok)


def nl_bsn(r: random.Random) -> str:
    while True:
        body = _digits(r, 8, "123456789")
        for c in D:
            if ids.bsn_ok(body + c):
                return body + c


def sg_nric(r: random.Random) -> str:
    return _complete(r.choice("STFGM") + _digits(r, 7), U, ids.nric_ok)


def passport(r: random.Random) -> str:
    """US / UK: 9 digits; FR: 2 digits, 2 letters, 5 digits; DE: 9 of [CFGHJKLMNPRTVWXYZ0-9]; SG: E + 7 digits + letter."""
    kind = r.randrange(5)
    if kind == 0:
        return _digits(r, 9, "123456789")
    if kind == 1:
        return f"{r.randint(10, 99)}{r.choice(U)}{r.choice(U)}{_digits(r, 5)}"
    if kind == 2:
        alphabet = "CFGHJKLMNPRTVWXYZ"
        return r.choice("CFGHJK") + "".join(r.choice(alphabet + D) for _ in range(3)) + _digits(r, 5)
    if kind == 3:
        return f"E{_digits(r, 7)}{r.choice(U)}"
    return f"5{_digits(r, 8)}"


def corrupt(value: str) -> str:
    """The same identifier with its last check character changed (digit +1, letter +1)."""
    c = value[-1]
    new = str((int(c) + 1) % 10) if c.isdigit() else chr((ord(c) - 65 + 1) % 26 + 65)
    return value[:-1] + new


MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"],
    "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
           "November", "Dezember"],
}


def birth_date(r: random.Random, lang: str) -> str:
    y, m, d = r.randint(1940, 2005), r.randint(1, 12), r.randint(1, 28)
    kind = r.randrange(3)
    if kind == 0:
        return f"{y}-{m:02d}-{d:02d}"
    if kind == 1:
        return {"en": f"{m:02d}/{d:02d}/{y}" if r.random() < 0.5 else f"{d:02d}/{m:02d}/{y}",
                "fr": f"{d:02d}/{m:02d}/{y}", "de": f"{d:02d}.{m:02d}.{y}"}[lang]
    month = MONTHS[lang][m - 1]
    return {"en": f"{d} {month} {y}" if r.random() < 0.5 else f"{month} {d}, {y}",
            "fr": f"{'1er' if d == 1 else d} {month} {y}", "de": f"{d}. {month} {y}"}[lang]


_US = (["Maple", "Oak", "Cedar", "Elm", "Pine", "Washington", "Lincoln", "Sunset", "Highland", "Lake View"],
       ["Street", "Avenue", "Road", "Drive", "Lane", "Boulevard"],
       [("Springfield", "IL"), ("Portland", "OR"), ("Austin", "TX"), ("Denver", "CO"), ("New York", "NY")])
_UK = (["Baker", "Church", "Station", "Victoria", "Queens", "Mill", "Park", "High"],
       ["Street", "Road", "Lane", "Close", "Crescent", "Gardens"], ["London", "Manchester", "Leeds", "Bristol"])
_FR = (["rue de la Paix", "avenue Victor Hugo", "boulevard Saint-Michel", "place de la République", "rue des Lilas",
        "chemin du Moulin", "allée des Tilleuls", "rue Pasteur"], ["Paris", "Lyon", "Marseille", "Toulouse", "Nantes"])
_DE = (["Haupt", "Bahnhof", "Garten", "Schiller", "Goethe", "Linden", "Berg", "Kirch", "Wald", "Mozart"],
       ["straße", "weg", "allee", "platz", "gasse", "ring"], ["Berlin", "München", "Hamburg", "Köln", "Frankfurt am Main"])
_SG = ["Ang Mo Kio", "Bedok North", "Tampines", "Jurong West", "Toa Payoh"]


def address(r: random.Random, country: str) -> str:
    n = r.randint(1, 250)
    if country == "US":
        (city, state), street = r.choice(_US[2]), f"{r.choice(_US[0])} {r.choice(_US[1])}"
        unit = f", Apt {r.randint(1, 40)}" if r.random() < 0.3 else ""
        return f"{r.randint(10, 9999)} {street}{unit}, {city}, {state} {r.randint(10000, 99999)}"
    if country == "UK":
        post = f"{r.choice(['SW', 'N', 'E', 'M', 'LS', 'BS'])}{r.randint(1, 20)} {r.randint(1, 9)}{r.choice(U)}{r.choice(U)}"
        return f"{n} {r.choice(_UK[0])} {r.choice(_UK[1])}, {r.choice(_UK[2])} {post}"
    if country == "FR":
        return f"{n}{r.choice(['', ' bis'])} {r.choice(_FR[0])}, {r.randint(10, 95)}{r.randint(0, 999):03d} {r.choice(_FR[1])}"
    if country == "DE":
        street = f"{r.choice(_DE[0])}{r.choice(_DE[1])}" if r.random() < 0.8 else "Berliner Straße"
        return f"{street} {n}{r.choice(['', 'a', 'b'])}, {r.randint(10, 99)}{r.randint(0, 999):03d} {r.choice(_DE[2])}"
    if country == "SG":
        code = f"{r.randint(10, 82):02d}{r.randint(0, 9999):04d}"
        if r.random() < 0.5:
            return f"Blk {n} {r.choice(_SG)} Avenue {r.randint(1, 9)}, #{r.randint(2, 25):02d}-{r.randint(1, 999):02d}, Singapore {code}"
        return f"{n} {r.choice(['Anson', 'Orchard', 'Scotts', 'Cecil'])} Road, #{r.randint(2, 40):02d}-{r.randint(1, 99):02d}, Singapore {code}"
    if country == "NL":
        return f"{r.choice(['Keizers', 'Heren', 'Prinsen'])}gracht {n}, {r.randint(1000, 9999)} {r.choice(U)}{r.choice(U)} Amsterdam"
    if country == "IT":
        return f"Via {r.choice(['Roma', 'Garibaldi', 'Giuseppe Verdi', 'Dante Alighieri'])} {n}, {r.randint(10, 98)}{r.randint(0, 999):03d} {r.choice(['Roma', 'Milano', 'Torino'])}"
    return f"Calle {r.choice(['Mayor', 'de Alcalá', 'Gran Vía'])} {n}, {r.randint(10, 52)}{r.randint(0, 999):03d} {r.choice(['Madrid', 'Sevilla'])}"


COUNTRIES = {"en": ["US", "UK", "SG"], "fr": ["FR", "IT", "ES"], "de": ["DE", "NL"]}
