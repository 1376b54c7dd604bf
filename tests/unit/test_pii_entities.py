"""Names, addresses, birth dates, national IDs and passports: each caught in EN/FR/DE with its placeholder."""

from __future__ import annotations

import random

import pytest

from forge_ray.config.prepare import BUILTIN_ENTITIES, PiiConfig
from forge_ray.corpora import fake_pii as fp
from forge_ray.prepare.pii import ENTITIES, PLACEHOLDERS, PiiScanner


@pytest.fixture(scope="module")
def scanner():
    return PiiScanner(PiiConfig())


def test_config_and_scanner_know_the_same_entities():
    assert tuple(ENTITIES) == BUILTIN_ENTITIES
    assert all(PLACEHOLDERS[e] == f"<{e}>" for e in ENTITIES)


CASES = [
    # person names: cue, no cue (gazetteer or NER), title + surname, sign-off
    ("PERSON", "Hello Kestrel support, this is Amara Okafor.", "Amara Okafor"),
    ("PERSON", "Yesterday I spoke with Margaret Thornton about the invoice.", "Margaret Thornton"),
    ("PERSON", "Our technician Zbigniew Brzezinski will visit on Monday.", "Zbigniew Brzezinski"),
    ("PERSON", "Best regards,\nKofi Mensah", "Kofi Mensah"),
    ("PERSON", "Hier j'ai parlé avec Marie-Claire Dubois de la facture.", "Marie-Claire Dubois"),
    ("PERSON", "Bonjour, je m'appelle Thibaut Lefèvre.", "Thibaut Lefèvre"),
    ("PERSON", "Madame Rousseau a signé le contrat.", "Rousseau"),
    ("PERSON", "Gestern habe ich mit Jürgen Schneider über die Rechnung gesprochen.", "Jürgen Schneider"),
    ("PERSON", "Sehr geehrte Frau Müller, vielen Dank.", "Müller"),
    ("PERSON", "Mit freundlichen Grüßen,\nKarl-Heinz Oberhauser", "Karl-Heinz Oberhauser"),
    # addresses: US, UK, SG, FR, DE, NL, IT, ES
    ("ADDRESS", "Ship it to 1600 Pennsylvania Avenue NW, Washington, DC 20500 please.",
     "1600 Pennsylvania Avenue NW, Washington, DC 20500"),
    ("ADDRESS", "My address is 221B Baker Street, London NW1 6XE.", "221B Baker Street, London NW1 6XE"),
    ("ADDRESS", "Blk 123 Ang Mo Kio Avenue 3, #12-34, Singapore 560123 is our depot.",
     "Blk 123 Ang Mo Kio Avenue 3, #12-34, Singapore 560123"),
    ("ADDRESS", "Mon adresse est 12 bis rue de la Paix, 75002 Paris.", "12 bis rue de la Paix, 75002 Paris"),
    ("ADDRESS", "Meine Adresse lautet Hauptstraße 5a, 60311 Frankfurt am Main.", "Hauptstraße 5a, 60311 Frankfurt am Main"),
    ("ADDRESS", "Het adres is Keizersgracht 123, 1015 CJ Amsterdam.", "Keizersgracht 123, 1015 CJ Amsterdam"),
    ("ADDRESS", "Indirizzo: Via Giuseppe Verdi 12, 20121 Milano.", "Via Giuseppe Verdi 12, 20121 Milano"),
    ("ADDRESS", "Dirección: Calle de Alcalá 42, 28014 Madrid.", "Calle de Alcalá 42, 28014 Madrid"),
    # dates of birth
    ("DATE_OF_BIRTH", "I was born on 12 March 1985 in Leeds.", "12 March 1985"),
    ("DATE_OF_BIRTH", "DOB: 03/14/1979, customer since 2019.", "03/14/1979"),
    ("DATE_OF_BIRTH", "Je suis née le 1er janvier 1990 à Lyon.", "1er janvier 1990"),
    ("DATE_OF_BIRTH", "Geburtsdatum: 12.03.1985", "12.03.1985"),
    ("DATE_OF_BIRTH", "Ich bin am 3. Mai 1980 geboren.", "3. Mai 1980"),
    # national identifiers (published example values) and passports
    ("US_SSN", "My SSN is 078-05-1121.", "078-05-1121"),
    ("UK_NHS", "My NHS number is 943 476 5919.", "943 476 5919"),
    ("FR_NIR", "Mon numéro de sécurité sociale est le 2 55 08 14 168 025 38.", "2 55 08 14 168 025 38"),
    ("DE_TAX_ID", "Meine Steuer-ID ist 86095742719.", "86095742719"),
    ("IT_FISCAL_CODE", "Codice fiscale RSSMRA85T10A562S, grazie.", "RSSMRA85T10A562S"),
    ("ES_DNI", "DNI espagnol : 12345678Z", "12345678Z"),
    ("ES_NIE", "My NIE is X1234567L.", "X1234567L"),
    ("NL_BSN", "BSN 111222333 staat op de pas.", "111222333"),
    ("SG_NRIC", "My NRIC is S1234567D.", "S1234567D"),
    ("PASSPORT", "Passport number 123456789, issued in 2019.", "123456789"),
    ("PASSPORT", "Numéro de passeport : 12AB34567", "12AB34567"),
    ("PASSPORT", "Reisepassnummer C01X00T47", "C01X00T47"),
]


@pytest.mark.parametrize("entity, text, value", CASES)
def test_each_kind_is_caught_with_its_placeholder(scanner, entity, text, value):
    redacted, counts = scanner.redact(text)
    assert value not in redacted and f"<{entity}>" in redacted and counts.get(entity) == 1, (redacted, counts)
    assert redacted.replace(f"<{entity}>", value, 1) == text  # exactly the value, nothing around it


@pytest.mark.parametrize("text", [
    "The meeting moved to 12 March 2024 at 10:00.",           # a date, not a birth date
    "Baker Street station was closed; see you in 75002 Paris.",  # places, not an address
    "Die Deutsche Bahn und die Allgemeinen Geschäftsbedingungen.",
    "La Société Générale a validé le virement.",
    "The Kestrel Cloud Dashboard shows Error Code 42 since version 3.11.2.",
    "Order 20240518 shipped; invoice 4711 is paid.",
])
def test_places_dates_and_organisations_are_left_alone(scanner, text):
    assert scanner.redact(text) == (text, {})


def test_generated_values_of_every_kind_are_caught_in_every_language(scanner):
    """The generators of the tickets corpus and the benchmark, through the scanner."""
    r = random.Random(5)
    makers = {"US_SSN": fp.us_ssn, "UK_NHS": fp.uk_nhs, "FR_NIR": fp.fr_nir, "DE_TAX_ID": fp.de_tax_id,
              "IT_FISCAL_CODE": fp.it_fiscal_code, "ES_DNI": fp.es_dni, "ES_NIE": fp.es_nie, "NL_BSN": fp.nl_bsn,
              "SG_NRIC": fp.sg_nric, "PASSPORT": fp.passport}
    labels = {"US_SSN": "SSN", "UK_NHS": "NHS", "FR_NIR": "NIR", "DE_TAX_ID": "Steuer-ID", "NL_BSN": "BSN",
              "PASSPORT": "passport no."}
    for _ in range(20):
        for entity, make in makers.items():
            value = make(r)
            text = f"{labels.get(entity, 'ID')}: {value}."
            assert scanner.redact(text)[0] == f"{labels.get(entity, 'ID')}: <{entity}>.", (entity, value)
        for lang, countries in fp.COUNTRIES.items():
            value = fp.address(r, r.choice(countries))
            assert value not in scanner.redact(f"Adresse: {value}.")[0], value
            dob = fp.birth_date(r, lang)
            assert scanner.redact(f"Date of birth: {dob}.")[0] == "Date of birth: <DATE_OF_BIRTH>.", dob
