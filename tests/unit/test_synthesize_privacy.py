"""Privacy checks: a copying generator is caught by the exact n-gram check, values and canaries too."""

from __future__ import annotations

from forge_ray.config.synthesize import PrivacyConfig
from forge_ray.synthesize.privacy import PrivacyIndex, distribution
from forge_ray.synthesize.records import SourceRecord

TEXT = ("Hello support, this is Amara Okafor. The TX-9 thermal camera stops responding after about ten "
        "minutes of continuous use and our audit is next week. Please refund GB82 WEST 1234 5698 7654 32.")
IBAN = "GB82 WEST 1234 5698 7654 32"
SPANS = ((TEXT.index("Amara"), TEXT.index("Amara") + 12, "PERSON"), (TEXT.index(IBAN), TEXT.index(IBAN) + len(IBAN), "IBAN"))


def _index(scope="all", canaries=(), **cfg):
    rec = SourceRecord(0, TEXT, SPANS, "")
    other = SourceRecord(1, "A completely different ticket about the billing portal charging twice.", (), "")
    return PrivacyIndex.build([rec, other], PrivacyConfig(**cfg), scope, list(canaries))


def test_a_copy_of_the_input_is_caught_by_every_check():
    v = _index().check(TEXT, 0, [], rescan_spans=[(23, 35, "PERSON")])
    assert v.failed == ["source_value", "restricted_value", "shared_ngram", "pii_rescan"]
    assert v.distance == 0.0 and v.shared_tokens >= 13


def test_the_ngram_check_is_exact_at_its_length():
    words = TEXT.split(". ")[1].split()[2:]  # "thermal camera stops ...": one token per word, no values
    index = _index(ngram_tokens=13)
    assert "shared_ngram" in index.check(" ".join(words[:13]), 5, [], None).failed
    assert "shared_ngram" not in index.check(" ".join(words[:12]), 5, [], None).failed
    assert index.check("new " + " ".join(words[:12]) + " words", 5, [], None).shared_tokens == 12


def test_identifier_scope_ignores_kept_prose_but_not_a_copied_identifier():
    index = _index(scope="identifiers")
    prose = "The TX-9 thermal camera stops responding after about ten minutes of continuous use and our audit"
    assert index.check(prose, 5, [], None).failed == []
    assert index.check("Hello support, this is Amara Okafor. The TX-9 thermal camera stops", 5, [], None).failed \
        == ["shared_ngram"]


def test_values_canaries_and_rescan_spans_outside_the_fakes():
    index = _index(canaries=["ZEBRA-1234-OBELISK-5678"])
    assert index.check("code ZEBRA-1234-OBELISK-5678", 9, [], None).failed == ["canary"]
    assert index.check("pay to GB82WEST12345698765432", 0, [], None).failed == ["source_value"]
    assert index.check("Dear Okafor, hi", 0, [], None).failed == ["source_value"]
    assert index.check("Dear Okafors, hi", 0, [], None).failed == []
    assert index.check("Dear Bruno Keller, hi", 0, [(5, 17)], [(5, 17, "PERSON")]).failed == []
    assert index.check("Dear Bruno Keller, hi", 0, [], [(5, 17, "PERSON")]).failed == ["pii_rescan"]


def test_min_distance_drops_close_records_and_distances_are_summarised():
    index = _index(min_distance=0.5)
    assert "too_close" in index.check(TEXT.replace("Amara", "Bruno"), 5, [], None).failed
    d = distribution([0.1, 0.5, 0.9])
    assert d["count"] == 3 and sum(d["histogram_0_to_1"]) == 3


def test_a_fake_equal_to_another_records_value_is_dropped():
    index = _index()
    text = "The refund goes to GB82 WEST 1234 5698 7654 32 as agreed."  # record 0's IBAN, in a sample of record 1
    at = text.index("GB82")
    v = index.check(text, 1, [(at, at + len(IBAN))], rescan_spans=[])
    assert v.failed == ["restricted_value"]
    other = "The refund goes to DE89 3704 0044 0532 0130 00 as agreed."
    assert index.check(other, 1, [(19, 46)], rescan_spans=[]).failed == []
