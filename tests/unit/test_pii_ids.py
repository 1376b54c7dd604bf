"""Check digits: validators agree with published example values, and a wrong check digit is not an ID."""

from __future__ import annotations

import random

import pytest

from forge_ray.config.prepare import PiiConfig
from forge_ray.corpora import fake_pii as fp
from forge_ray.prepare.pii import PiiScanner, ids

# Example values published by the issuers or in their specifications.
PUBLISHED = [
    (ids.nhs_ok, "9434765919"),       # NHS Digital's example NHS number
    (ids.nir_ok, "255081416802538"),  # the INSEE NIR worked example (2 55 08 14 168 025 38)
    (ids.de_tax_ok, "86095742719"),   # BZSt's example Steuer-IdNr
    (ids.it_cf_ok, "RSSMRA85T10A562S"),  # Agenzia delle Entrate's "Mario Rossi"
    (ids.es_dni_ok, "12345678Z"),
    (ids.es_nie_ok, "X1234567L"),
    (ids.bsn_ok, "111222333"),        # the Dutch government's test BSN
    (ids.nric_ok, "S1234567D"),
    (ids.nric_ok, "T1234567J"),
    (ids.nric_ok, "F1234567N"),
    (ids.nric_ok, "G1234567X"),
]


@pytest.mark.parametrize("valid, value", PUBLISHED)
def test_validators_accept_published_examples_and_reject_a_changed_check(valid, value):
    assert valid(value)
    assert not valid(fp.corrupt(value))


def test_ssn_ranges_never_issued_are_refused():
    assert ids.ssn_ok("078051121")
    assert not any(ids.ssn_ok(v) for v in ("000121234", "666121234", "912121234", "123001234", "123450000"))


@pytest.fixture(scope="module")
def scanner():
    return PiiScanner(PiiConfig())


LABELLED = {"US_SSN": ("SSN", fp.us_ssn), "UK_NHS": ("NHS number", fp.uk_nhs), "FR_NIR": ("NIR", fp.fr_nir),
            "DE_TAX_ID": ("Steuer-ID", fp.de_tax_id), "IT_FISCAL_CODE": ("codice fiscale", fp.it_fiscal_code),
            "ES_DNI": ("DNI", fp.es_dni), "ES_NIE": ("NIE", fp.es_nie), "NL_BSN": ("BSN", fp.nl_bsn),
            "SG_NRIC": ("NRIC", fp.sg_nric)}


@pytest.mark.parametrize("entity", [e for e in LABELLED if e != "US_SSN"])  # the SSN has no check digit
def test_a_wrong_check_digit_is_not_redacted_as_an_id(scanner, entity):
    label, make = LABELLED[entity]
    r = random.Random(1)
    for _ in range(25):
        good = make(r)
        bad = fp.corrupt(good)
        assert f"<{entity}>" in scanner.redact(f"{label} {good}")[0], good
        assert f"<{entity}>" not in scanner.redact(f"{label} {bad}")[0], bad


@pytest.mark.parametrize("entity, text", [
    ("UK_NHS", "Call 943 476 5919 for the lab."),  # a valid NHS number without "NHS" nearby: a phone-like number
    ("NL_BSN", "Order 111222333 has shipped."),
    ("DE_TAX_ID", "Order 86095742719 has shipped."),
    ("PASSPORT", "The passport office opens at 9."),
])
def test_weak_formats_need_their_keyword(scanner, entity, text):
    assert f"<{entity}>" not in scanner.redact(text)[0]
