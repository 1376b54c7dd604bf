"""Surrogates: consistent per record, same format, valid check digits, dates shifted together."""

from __future__ import annotations

import random
import re

import pytest

from forge_ray.corpora import fake_pii as fp
from forge_ray.corpora import tickets
from forge_ray.synthesize.dates import shift_date
from forge_ray.synthesize.fakes import Fakes, check_digit_ok
from forge_ray.synthesize.records import SourceRecord
from forge_ray.synthesize.surrogate import SurrogateGenerator, fill_placeholders


def _record(text: str, values: list[tuple[str, str]]) -> SourceRecord:
    spans = []
    for entity, value in values:
        for m in re.finditer(re.escape(value), text):
            spans.append((m.start(), m.end(), entity))
    return SourceRecord(0, text, tuple(sorted(spans)), "")


def test_the_same_person_gets_the_same_fake_and_lone_name_tokens_follow():
    text = ("Hello, this is Amara Okafor. Write to amara.okafor12@example.org. Ms Okafor will call. "
            "Best regards, Amara Okafor")
    rec = _record(text, [("PERSON", "Amara Okafor"), ("EMAIL", "amara.okafor12@example.org")])
    out = SurrogateGenerator().one(rec, 0, seed=1, source="t").text
    first, last = re.search(r"this is (\w+) (\w+)\.", out).groups()
    assert out.endswith(f"Best regards, {first} {last}")
    assert f"Ms {last} will call" in out
    assert f"{first.lower()}.{last.lower()}" in out
    assert "Amara" not in out and "Okafor" not in out and "okafor" not in out


def test_different_samples_and_records_get_different_fakes_but_a_seed_repeats():
    rec = _record("this is Amara Okafor.", [("PERSON", "Amara Okafor")])
    gen = SurrogateGenerator()
    a, b = gen.one(rec, 0, 0, "t").text, gen.one(rec, 1, 0, "t").text
    assert a != b and gen.one(rec, 0, 0, "t").text == a


@pytest.mark.parametrize("entity,make", [
    ("IBAN", tickets.iban), ("CREDIT_CARD", tickets.card_number), ("US_SSN", fp.us_ssn), ("UK_NHS", fp.uk_nhs),
    ("FR_NIR", fp.fr_nir), ("DE_TAX_ID", fp.de_tax_id), ("IT_FISCAL_CODE", fp.it_fiscal_code),
    ("ES_DNI", fp.es_dni), ("ES_NIE", fp.es_nie), ("NL_BSN", fp.nl_bsn), ("SG_NRIC", fp.sg_nric),
])
def test_identifiers_keep_their_layout_and_valid_check_digits(entity, make):
    r = random.Random(7)
    for _ in range(20):
        value = make(r)
        fake = Fakes(random.Random(r.random())).fake(entity, value)
        assert fake != value and check_digit_ok(entity, fake), (value, fake)
        assert re.sub(r"[0-9A-Z]", "x", fake) == re.sub(r"[0-9A-Z]", "x", value)  # same separators, same length
    if entity == "IBAN":
        assert fake[:2] == value[:2]  # same country


def test_dates_shift_consistently_in_their_own_layout():
    fakes = Fakes(random.Random(3), shift_days=100)
    a = fakes.fake("DATE_OF_BIRTH", "1984-03-12")
    assert fakes.fake("DATE_OF_BIRTH", "1984-03-12") == a and re.fullmatch(r"\d{4}-\d{2}-\d{2}", a)
    assert shift_date("1984-03-12", 30) == "1984-04-11"
    assert shift_date("12/03/1984", 30) == "11/04/1984"
    assert shift_date("12. März 1984", 30) == "11. April 1984"
    assert shift_date("March 12, 1984", -3) == "March 9, 1984"
    assert shift_date("31 janvier 1990", 1) == "1er février 1990"
    assert shift_date("not a date", 5) is None


def test_placeholders_are_filled_and_their_ranges_known():
    text, ranges = fill_placeholders("Hi <PERSON>, your card <CREDIT_CARD> and <PERSON> again.",
                                     Fakes(random.Random(0)))
    assert "<" not in text and len(ranges) == 3
    assert text[ranges[0][0]:ranges[0][1]] == text[ranges[2][0]:ranges[2][1]]
    assert check_digit_ok("CREDIT_CARD", text[ranges[1][0]:ranges[1][1]])


@pytest.mark.parametrize("entity,value", [
    ("PERSON", "Amara Okafor"), ("IP_ADDRESS", "10.1.2.3"), ("IBAN", "GB82 WEST 1234 5698 7654 32"),
    ("CREDIT_CARD", "4111 1111 1111 1111"), ("EMAIL", None), ("US_SSN", None),
])
def test_a_fake_equal_to_a_real_value_of_another_record_is_redrawn_not_dropped(entity, value):
    from forge_ray.synthesize.privacy import value_forms

    first = Fakes(random.Random(5)).fake(entity, value)  # what this seed draws first
    real = frozenset(value_forms(first))  # ... is another restricted record's real value
    fakes = Fakes(random.Random(5), real=real)
    again = fakes.fake(entity, value)
    assert again != first and not set(value_forms(again)) & real
    assert fakes.fake(entity, value) == again if value else True  # still consistent within the record
    if entity in ("IBAN", "CREDIT_CARD"):
        assert check_digit_ok(entity, again)


def test_a_surrogate_avoids_every_restricted_value_and_passes_the_check():
    from forge_ray.config.synthesize import PrivacyConfig
    from forge_ray.synthesize.privacy import PrivacyIndex

    rec = _record("this is Amara Okafor from 10.1.2.3.", [("PERSON", "Amara Okafor"), ("IP_ADDRESS", "10.1.2.3")])
    gen = SurrogateGenerator()
    plain = gen.one(rec, 0, 0, "t")
    fakes = [plain.text[a:b] for a, b in plain.inserted]  # make them another record's real values
    other = _record(f"I am {fakes[0]} at {fakes[1]}.", [("PERSON", fakes[0]), ("IP_ADDRESS", fakes[1])])
    other = SourceRecord(1, other.text, other.spans, "")
    index = PrivacyIndex.build([rec, other], PrivacyConfig(), "identifiers", [])
    gen.real_values = frozenset(index.all_values)
    sample = gen.one(rec, 0, 0, "t")
    assert not any(f in sample.text for f in fakes)
    assert "restricted_value" not in index.check(sample.text, 0, sample.inserted, None).failed
