"""Gopher-style quality rules: each fires on the text it is meant for, and passes normal prose."""

from __future__ import annotations

import pytest

from forge_ray.config.prepare import QualityConfig
from forge_ray.prepare.quality import failed_rule

PROSE = ("The calibration service checks every instrument against a reference before it ships. "
         "Each report lists the readings, the tolerance and the technician who signed it, so a "
         "customer can trace any measurement back to the standard it was compared with.")


@pytest.mark.parametrize("text, rule", [
    ("too short", "min_words"),
    ("a b c d e f g h i j k l", "mean_word_length"),
    (PROSE + " #tag #tag #tag #tag #tag #tag #tag #tag", "symbol_ratio"),
    ("Readings " + " ".join(["1234567890"] * 10) + " were logged by the calibration team today", "digit_ratio"),
    ("--- --- --- --- --- --- --- --- --- --- the end of it all", "alpha_words"),
    ("\n".join(["Please call support."] * 6 + [PROSE]), "duplicate_lines"),
    ("spam eggs " * 30 + PROSE, "top_ngram"),
    (" ".join([PROSE] * 3), "duplicate_ngrams"),
])
def test_each_rule_fires_on_its_kind_of_text(text, rule):
    assert failed_rule(text, QualityConfig(), prose=True) == rule


def test_prose_passes_and_exempt_sources_get_only_length_rules():
    cfg = QualityConfig()
    assert failed_rule(PROSE, cfg, prose=True) is None
    code = "x = {'#': 1}\n" * 40
    assert failed_rule(code, cfg, prose=True) is not None
    assert failed_rule(code, cfg, prose=False) is None
    assert failed_rule("x = 1", cfg, prose=False) == "min_words"


def test_the_stop_word_rule_is_off_by_default_and_counts_different_words():
    """Gopher's rule drops text without enough common words; off by default (its list is English)."""
    keywords = "Calibration instrument reference ships. Reports list readings, tolerance, technician signature."
    assert failed_rule(keywords, QualityConfig(), prose=True) is None
    gopher = QualityConfig(stop_words=["the", "be", "to", "of", "and", "that", "have", "with"])
    assert failed_rule(keywords, gopher, prose=True) == "stop_words"
    assert failed_rule(PROSE, gopher, prose=True) is None
    assert failed_rule(keywords + " The end, the end, the end.", gopher, prose=True) == "stop_words"  # one word
    assert failed_rule(keywords + " The end of it.", gopher, prose=True) is None
    assert failed_rule(keywords, gopher, prose=False) is None  # an exempt source: length rules only
