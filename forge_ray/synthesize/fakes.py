"""Fake values of each entity type, in the format of the value they replace, consistent per record.

    fakes = Fakes(random.Random(seed), shift_days=120)
    fakes.fake("PERSON", "Amara Okafor")   # "Lorena Vasquez": the same every time in this record
    fakes.fake("IBAN", "GB82 KEST ...")    # same country, length and spacing, valid mod-97 digits
    fakes.fake("PERSON", None)              # a fresh value (template slots)

One `Fakes` per record: the same original always maps to the same fake, and a person's name
tokens map one by one, so "Okafor" alone or inside an e-mail becomes the same fake surname.
A fake that equals a real value (of this record, or with `real`, of any restricted record, in the
forms the privacy check matches) is redrawn, not kept to be dropped by that check later.
Identifiers keep their check digits valid (an IBAN that fails mod-97 would itself look fake and
teach the model the wrong format). Names come from pools disjoint from the demo corpora's, so a
fake can never equal a planted value of another record.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable

from forge_ray.corpora import fake_pii as fp
from forge_ray.corpora import tickets
from forge_ray.prepare.pii import ids
from forge_ray.synthesize.dates import shift_date
from forge_ray.synthesize.privacy import value_forms

FIRST = ["Adela", "Bruno", "Carmen", "Dmitri", "Esther", "Felix", "Greta", "Henrik", "Irene", "Jonas", "Karin",
         "Luca", "Marta", "Niko", "Olga", "Pablo", "Ruth", "Simon", "Teresa", "Viktor", "Wanda", "Yusuf", "Zora",
         "Anton", "Beatriz", "Clara", "Erik", "Leonie", "Magnus", "Noemi"]
LAST = ["Alvarez", "Brennan", "Castell", "Dragan", "Eklund", "Ferreira", "Gallo", "Horvath", "Jansen", "Keller",
        "Lorenz", "Marsh", "Nilsen", "Olsen", "Pereira", "Quinn", "Ramos", "Sato", "Thorne", "Varga", "Wagner",
        "Yilmaz", "Zeller", "Barros", "Dunn", "Falk", "Hale", "Ortega", "Rahman", "Strand"]
_TITLES = {"Mr", "Mrs", "Ms", "Miss", "Dr", "Prof", "M", "Mme", "Mlle", "Herr", "Frau", "Monsieur", "Madame"}
_SECRET_PREFIX = re.compile(r"^(AKIA|ghp_|xoxb-|sk-|-----BEGIN [A-Z ]+-----)")
_PEM = re.compile(r"(-----(?:BEGIN|END) [A-Z ]+-----)")
_ID_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "US_SSN": fp.us_ssn, "UK_NHS": fp.uk_nhs, "FR_NIR": fp.fr_nir, "DE_TAX_ID": fp.de_tax_id,
    "IT_FISCAL_CODE": fp.it_fiscal_code, "ES_DNI": fp.es_dni, "ES_NIE": fp.es_nie, "NL_BSN": fp.nl_bsn,
    "SG_NRIC": fp.sg_nric,
}
MAX_DRAWS = 200  # redraws of a fake that collides with a real value; past them the privacy check drops it
# Entity types with a provider of their own; any other type (custom patterns, deny-lists) keeps its shape.
BUILTIN_TYPES = ("PERSON", "EMAIL", "PHONE", "IBAN", "CREDIT_CARD", "IP_ADDRESS", "SECRET", "ADDRESS",
                 "DATE_OF_BIRTH", "PASSPORT", *_ID_MAKERS)


def shape(r: random.Random, value: str) -> str:
    """The same shape: each digit, upper and lower letter replaced by a random one of its class."""
    out = []
    for c in value:
        if c.isdigit():
            out.append(r.choice(string.digits))
        elif c.isupper() and c.isascii():
            out.append(r.choice(string.ascii_uppercase))
        elif c.islower() and c.isascii():
            out.append(r.choice(string.ascii_lowercase))
        else:
            out.append(c)
    return "".join(out)


def relayout(original: str, compact: str) -> str:
    """`compact` (no separators) written with the separators of `original` at the same places."""
    if len(re.sub(r"[\s.\-]", "", original)) != len(compact):
        return compact
    it = iter(compact)
    return "".join(c if c in " .-\t" else next(it) for c in original)


def luhn_digit(body: str) -> str:
    total = 0
    for i, d in enumerate(int(c) for c in reversed(body)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


class Fakes:
    """Consistent fakes for one record (or one template sample); `inserted` is not kept here."""

    def __init__(self, rng: random.Random, shift_days: int = 365, real: frozenset[str] = frozenset()):
        """`real`: every restricted value in `value_forms` form (PrivacyIndex.all_values): no fake equals one."""
        self.r = rng
        self.real = real
        self.shift = rng.choice([d for d in range(-shift_days, shift_days + 1) if d]) if shift_days else 0
        self.known: dict[tuple[str, str], str] = {}
        self.tokens: dict[str, str] = {}  # original name token -> fake token (first names and surnames)
        self.avoid: set[str] = set()  # original values and name tokens a fake must never equal

    def fake(self, entity: str, value: str | None = None) -> str:
        """A fake of `entity` shaped like `value` (None: a fresh one); the same value, the same fake."""
        key = (entity, value.strip().lower()) if value is not None else None
        if key is not None and key in self.known:
            return self.known[key]
        if value is not None:
            self.avoid.add(value.strip().lower())
        make = getattr(self, f"_{entity.lower()}", None)
        for _ in range(MAX_DRAWS):  # a fake equal to the original (or to another original) is no fake
            tokens = dict(self.tokens)
            out = make(value) if make else (shape(self.r, value) if value else self._custom())
            if not self.collides(out):
                break
            self.tokens = tokens  # a person's name tokens are drawn again too
        if key is not None:
            self.known[key] = out
        return out

    def collides(self, fake: str) -> bool:
        """Whether `fake` equals an original of this record or, in a form the check matches, a real value."""
        return fake.strip().lower() in self.avoid or any(f in self.real for f in value_forms(fake))

    # -- people and contact ------------------------------------------------------------------
    def _name_token(self, token: str, first: bool) -> str:
        if token not in self.tokens:
            pool = [n for n in (FIRST if first else LAST) if n not in self.tokens.values() and n != token]
            self.tokens[token] = self.r.choice(pool or (FIRST if first else LAST))
        fake = self.tokens[token]
        return fake.upper() if token.isupper() and len(token) > 1 else fake

    def _person(self, value: str | None) -> str:
        if value is None:
            return f"{self.r.choice(FIRST)} {self.r.choice(LAST)}"
        words = re.split(r"(\s+|-)", value)
        names = [w for w in words if w.strip(" -") and w.rstrip(".") not in _TITLES]
        out = []
        for w in words:
            if w in names:
                self.avoid.add(w.lower())
                out.append(self._name_token(w, first=(w == names[0] and len(names) > 1)))
            else:
                out.append(w)
        return "".join(out)

    def _email(self, value: str | None) -> str:
        if value is None:
            first, last = self._person(None).split(" ")
            return f"{first.lower()}.{last.lower()}{self.r.randint(1, 99)}@example.com"
        local, _, domain = value.partition("@")
        lowered = {k.lower(): v.lower() for k, v in self.tokens.items()}
        parts = re.split(r"([._+-]|\d+)", local)
        local = "".join(lowered.get(p.lower()) or shape(self.r, p) for p in parts if p)
        tld = domain.rsplit(".", 1)[-1].lower()
        return f"{local}@example.{tld if tld in ('com', 'org', 'net') else 'com'}"

    def _phone(self, value: str | None) -> str:
        if value is None:
            return self.r.choice(tickets.PHONE_FORMATS)(self.r)
        # Keep the country code and the first group (a region, not a person); new digits after it.
        m = re.match(r"^(\+?\d{1,3}[\s.-]*\(?\d{1,4}\)?[\s.-]*)", value) if value.startswith("+") else None
        head = m.group(1) if m else ""
        return head + shape(self.r, value[len(head):])

    def _iban(self, value: str | None) -> str:
        if value is None:
            return tickets.iban(self.r)
        compact = re.sub(r"\s", "", value).upper()
        bban = shape(self.r, compact[4:])
        digits = "".join(str(int(c, 36)) for c in bban + compact[:2] + "00")
        return relayout(value, f"{compact[:2]}{98 - int(digits) % 97:02d}{bban}")

    def _credit_card(self, value: str | None) -> str:
        if value is None:
            return tickets.card_number(self.r)
        compact = re.sub(r"[\s-]", "", value)
        body = compact[0] + shape(self.r, compact[1:-1])
        return relayout(value, body + luhn_digit(body))

    def _ip_address(self, value: str | None) -> str:
        if value is not None and ":" in value:
            return f"2001:db8:{self.r.randint(0, 0xFFFF):x}:{self.r.randint(0, 0xFFFF):x}::{self.r.randint(1, 0xFFFF):x}"
        return f"{self.r.choice(['192.0.2', '198.51.100', '203.0.113'])}.{self.r.randint(1, 254)}"

    def _secret(self, value: str | None) -> str:
        if value is None:
            return tickets.secret(self.r)[1]
        pieces = _PEM.split(value)  # PEM armour lines stay; the key body is new
        out = []
        for p in pieces:
            if _PEM.fullmatch(p):
                out.append(p)
            else:
                m = _SECRET_PREFIX.match(p)
                out.append((m.group(1) + shape(self.r, p[m.end():])) if m else shape(self.r, p))
        return "".join(out)

    # -- places, dates and identifiers -------------------------------------------------------
    def _address(self, value: str | None) -> str:
        return fp.address(self.r, _country_of(value) if value else self.r.choice(["US", "UK", "DE", "FR", "SG"]))

    def _date_of_birth(self, value: str | None) -> str:
        if value is None:
            return fp.birth_date(self.r, "en")
        return shift_date(value, self.shift) or shape(self.r, value)

    def _passport(self, value: str | None) -> str:
        return shape(self.r, value) if value else fp.passport(self.r)

    def _custom(self) -> str:
        return "".join(self.r.choice(string.ascii_uppercase) for _ in range(8))

    def __getattr__(self, name: str):
        entity = name[1:].upper() if name.startswith("_") else ""
        if entity in _ID_MAKERS:  # national identifiers: a valid fresh one, in the original's layout
            maker = _ID_MAKERS[entity]
            return lambda value: relayout(value, re.sub(r"[\s.\-]", "", maker(self.r))) if value else maker(self.r)
        raise AttributeError(name)


def _country_of(address: str) -> str:
    """The country whose layout an address has (the corpora's and the scanner's countries)."""
    a = address.lower()
    rules = [("SG", "singapore"), ("NL", "gracht"), ("IT", "via "), ("ES", "calle "),
             ("DE", r"(straße|strasse|weg|allee|platz|gasse|ring)\b"),
             ("FR", r"\b(rue|avenue|boulevard|place|chemin|allée)\b"),
             ("UK", r"\b[a-z]{1,2}\d{1,2} \d[a-z]{2}\b")]
    for country, pattern in rules:
        if re.search(pattern, a):
            return country
    return "US"


def check_digit_ok(entity: str, value: str) -> bool:
    """Whether `value` passes its type's check (IBAN mod-97, card Luhn, the scanner's ID validators)."""
    compact = re.sub(r"[\s.\-]", "", value).upper()
    if entity == "IBAN":
        return int("".join(str(int(c, 36)) for c in compact[4:] + compact[:4])) % 97 == 1
    if entity == "CREDIT_CARD":
        return luhn_digit(compact[:-1]) == compact[-1]
    validators = {"US_SSN": ids.ssn_ok, "UK_NHS": ids.nhs_ok, "FR_NIR": ids.nir_ok, "DE_TAX_ID": ids.de_tax_ok,
                  "IT_FISCAL_CODE": ids.it_cf_ok, "ES_DNI": ids.es_dni_ok, "ES_NIE": ids.es_nie_ok,
                  "NL_BSN": ids.bsn_ok, "SG_NRIC": ids.nric_ok}
    return validators[entity](compact)
