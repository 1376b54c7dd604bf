"""What synthesis shows a person: preview pairs hold redacted originals, and the run report renders them."""

from __future__ import annotations

from forge_ray.report.render import render_report
from forge_ray.synthesize.records import SourceRecord
from forge_ray.synthesize.run import _preview

TEXT = "Hello support, this is Amara Okafor. Please refund GB82 WEST 1234 5698 7654 32."
SPANS = ((TEXT.index("Amara"), TEXT.index("Amara") + 12, "PERSON"),
         (TEXT.index("GB82"), len(TEXT) - 1, "IBAN"))
REDACTED = "Hello support, this is <PERSON>. Please refund <IBAN>."


def _result(index: int, j: int, text: str, failed: str = "[]") -> dict:
    return {"index": index, "j": j, "text": text, "failed": failed}


def test_preview_pairs_kept_samples_with_redacted_originals_only():
    recs = [SourceRecord(0, TEXT, SPANS, REDACTED), SourceRecord(1, "Leaky Leaky record", (), "Leaky Leaky record")]
    results = [_result(0, 0, "Hello support, this is Vera Lange. Please refund DE89 3704 0044 0532 0130 00."),
               _result(0, 1, "a second sample of record 0"),                      # one pair per record
               _result(1, 0, "Leaky Leaky record", failed='["shared_ngram"]')]    # dropped: never previewed
    pairs = _preview(recs, results)
    assert pairs == [{"record": 0, "redacted": REDACTED,
                      "synthetic": "Hello support, this is Vera Lange. Please refund DE89 3704 0044 0532 0130 00."}]
    flat = repr(pairs)
    assert "Amara" not in flat and "GB82" not in flat and "Leaky" not in flat


def test_the_report_shows_synthetic_samples_beside_redacted_originals():
    synthetic = [{"source": "escalations", "name": "escalations_synthetic", "strategy": "surrogate", "trained": True,
                  "counts": {"records": 20, "samples": 20, "kept": 18, "dropped": {"pii_rescan": 2}},
                  "max_shared_ngram_tokens": 6, "ngram_tokens": 13,
                  "distance": {"count": 18, "p00": 0.41, "p50": 0.62},
                  "pairs": [{"redacted": REDACTED, "synthetic": "this is <b>Vera</b> Lange"}]}]
    page = render_report(synthetic=synthetic)
    assert "Synthetic data from restricted sources" in page and 'id="synthetic-escalations"' in page
    assert "escalations_synthetic" in page and "surrogate" in page and "18 / 20" in page and "pii_rescan 2" in page
    assert "this is &lt;PERSON&gt;" in page and "&lt;b&gt;Vera&lt;/b&gt; Lange" in page  # escaped, side by side
    assert "6 (limit: under 13)" in page and "0.62 / 0.41" in page


def test_the_report_says_when_there_is_no_synthetic_source():
    assert "no synthetic source in this version" in render_report()
