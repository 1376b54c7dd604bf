"""The fused scan stage (PII, quality rules, dedup signatures in one pass): what each policy does to a
record, and that its per-process memo of repeated texts changes no result."""

from __future__ import annotations

import json

import pyarrow as pa

from forge_ray.config.prepare import PrepareConfig
from forge_ray.corpora.tickets import ticket_records
from forge_ray.prepare import stages
from forge_ray.prepare.dedup import DupIndex


def _batch(texts: list[tuple[str, str, str]]) -> pa.Table:
    return pa.Table.from_pylist([
        {"source": src, "key": i, "id": f"r{i}", "position": f"f:{i}", "text": text, "meta": "{}",
         "outcome": outcome, "reason": "" if outcome == "ok" else "empty_text", "raw": "", "pii": ""}
        for i, (src, text, outcome) in enumerate(texts)
    ])


def _scan(batch, cfg, policies):
    return stages.scan_stage(batch, cfg.pii, policies, cfg.quality, ["code"], cfg.dedup, cfg.seed).to_pylist()


def test_scan_stage_applies_each_policy_and_its_memo_changes_nothing():
    cfg = PrepareConfig(dataset="t")
    tickets, planted = ticket_records(n=60, seed=3)
    by_id = {}
    for v in planted["values"]:
        by_id.setdefault(v["id"], []).append(v)
    pii_ticket = next(t for t in tickets if t["id"] in by_id)
    prose = ("The calibration service checks every instrument against a reference before it ships. "
             "Each report lists the measured drift, the operator who signed it and the date of the next "
             "check. Customers can request a copy of the certificate from their account page at any time.")
    rows = [("tickets", t["text"], "ok") for t in tickets] + [("code", "x = 1\n" * 3, "ok"), ("docs", prose, "ok")]
    rows += [("tickets", tickets[0]["text"], "ok"), ("docs", prose, "ok"), ("docs", "", "quarantined"),
             ("docs", "too short", "ok"), ("docs", pii_ticket["text"], "ok"), ("secret", pii_ticket["text"], "ok")]
    batch = _batch(rows)
    policies = {"tickets": "redact", "code": "redact", "docs": "drop", "secret": "restrict"}
    stages._CACHE.clear()
    first = _scan(batch, cfg, policies)
    again = _scan(batch, cfg, policies)          # answered from the memo
    stages._CACHE.clear()
    fresh = _scan(batch, cfg, policies)          # a fresh process: no memo
    assert first == again == fresh

    n = len(tickets)
    redacted = first[[t["id"] for t in tickets].index(pii_ticket["id"])]
    assert redacted["outcome"] == "redacted" and json.loads(redacted["pii"])
    secret_kinds = {"AWS_KEY", "GITHUB_TOKEN", "SLACK_TOKEN", "PRIVATE_KEY"}
    for v in by_id[pii_ticket["id"]]:
        kind = "SECRET" if v["kind"] in secret_kinds else v["kind"]
        assert v["value"] not in redacted["text"] and f"<{kind}>" in redacted["text"], v
    assert redacted["buckets"], "a live record is signed for dedup"
    code, docs, repeat, docs_again, quarantined, short, docs_pii, secret = first[n:]
    assert code["outcome"] == "ok" and code["buckets"]                  # prose rules exempt for code
    assert docs["outcome"] == docs_again["outcome"] == "ok" and docs["buckets"] == docs_again["buckets"]
    assert repeat["text"] == first[0]["text"] and repeat["buckets"] == first[0]["buckets"]
    assert quarantined["outcome"] == "quarantined" and quarantined["buckets"] == []
    assert short["outcome"] == "dropped" and short["reason"].startswith("quality_") and short["text"] == ""
    assert (docs_pii["outcome"], docs_pii["reason"], docs_pii["text"]) == ("dropped", "pii", "")
    assert (secret["outcome"], secret["reason"], secret["text"]) == ("dropped", stages.ROUTED, "")
    assert secret["raw"] == pii_ticket["text"]                          # kept for the synthetic-data stage
    assert len({r["split_hash"] for r in first}) == len(first)


def test_each_source_is_scanned_for_its_own_entities():
    """`pii.sources` narrows what one source is scanned for; the others keep `pii.entities`."""
    cfg = PrepareConfig(dataset="t", pii={"sources": {"code": {"entities": ["SECRET", "EMAIL"]}}})
    text = ("Maintained by Margaret Thornton, margaret.thornton@example.com, born on 12 March 1985, "
            "NHS number 943 476 5919, reachable on +44 20 7946 0958 from our office in Leeds.")
    rows = _scan(_batch([("code", text, "ok"), ("docs", text, "ok")]), cfg, {"code": "redact", "docs": "redact"})
    code, docs = rows
    assert json.loads(code["pii"]) == {"EMAIL": 1}
    assert "Margaret Thornton" in code["text"] and "+44 20 7946 0958" in code["text"]
    assert json.loads(docs["pii"]) == {"DATE_OF_BIRTH": 1, "EMAIL": 1, "PERSON": 1, "PHONE": 1, "UK_NHS": 1}


def test_unknown_entity_names_are_refused_naming_the_field():
    import pytest

    from forge_ray.config.loader import format_validation_error

    with pytest.raises(Exception) as err:
        PrepareConfig(dataset="t", pii={"sources": {"code": {"entities": ["EMAIL", "NAMES"]}}})
    problems = format_validation_error(err.value)
    assert any(p.startswith("pii.sources.code.entities") and "NAMES" in p for p in problems), problems


def test_a_catastrophic_pattern_is_refused_or_bounded_per_record():
    """A pattern that backtracks on the classic inputs is refused at validation; one that only
    backtracks on some record stops at `pattern_timeout_s` and that record is quarantined, raw text dropped."""
    import time

    import pytest

    with pytest.raises(Exception, match="backtracks catastrophically"):
        PrepareConfig(dataset="t", pii={"patterns": [{"name": "BAD", "regex": r"(a|aa)+$"}]})
    # Exponential only on a long run of 'x' then '#' (no probe has that): validation lets it through.
    slow = r"(x|xx)+#y"
    cfg = PrepareConfig(dataset="t", pii={"patterns": [{"name": "SLOW", "regex": slow}], "pattern_timeout_s": 0.2})
    fine = "A perfectly ordinary ticket about the calibration service and its certificate, nothing more."
    evil = "The serial printed on the label reads " + "x" * 40 + "# and nothing else of note here at all."
    stages._CACHE.clear()
    start = time.time()
    rows = _scan(_batch([("docs", fine, "ok"), ("docs", evil, "ok")]), cfg, {"docs": "redact"})
    assert time.time() - start < 5
    assert rows[0]["outcome"] == "ok"
    assert (rows[1]["outcome"], rows[1]["reason"], rows[1]["text"], rows[1]["raw"]) == (
        "quarantined", stages.QUARANTINE_TIMEOUT, "", "")


def test_finalize_drops_duplicates_and_holds_out_by_hash():
    """Live duplicates are dropped with their dedup reason (records already out keep theirs); the
    eval split is the hashes under the fraction plus each source's forced document."""
    batch = pa.table({
        "source": ["a", "a", "b", "b", "a"], "key": [1, 2, 3, 4, 5], "text": ["t1", "t2", "t3", "t4", "t5"],
        "outcome": ["ok", "redacted", "quarantined", "ok", "ok"], "reason": ["", "", "bad_json", "", ""],
        "split_hash": [0.9, 0.05, 0.5, 0.7, 0.3],
    })
    dups = DupIndex.of({2: False, 3: True})  # key: exact duplicate?
    out = stages.finalize_stage(batch, dups, 0.1, {"b": 0.7}).to_pydict()
    assert out["outcome"] == ["ok", "dropped", "quarantined", "ok", "ok"]
    assert out["reason"] == ["", "near_duplicate", "bad_json", "", ""]
    assert out["text"] == ["t1", "", "t3", "t4", "t5"]
    assert out["split"] == ["train", "eval", "train", "eval", "train"]
    assert stages.finalize_stage(batch, {}, 0.0, {}).to_pydict()["split"] == ["train"] * 5


def test_tally_counts_the_records_finalize_writes():
    """The manifest's counts and the finalized rows see the same dedup decisions: a live duplicate
    is counted dropped with its reason, a record already out keeps its own; the forced eval hash
    is the smallest of the live records only."""
    from forge_ray.prepare.manifest import tally_stage

    batch = pa.table({
        "source": ["a", "a", "b", "b", "a"], "key": [1, 2, 3, 4, 5], "text": ["t1", "t2", "t3", "t4", "t5"],
        "outcome": ["ok", "redacted", "quarantined", "ok", "ok"], "reason": ["", "", "bad_json", "", ""],
        "split_hash": [0.9, 0.05, 0.5, 0.7, 0.3],
    })
    dups = DupIndex.of({2: False, 3: True})
    tally = tally_stage(batch.drop_columns(["text"]), dups)
    got = {(s, o, r): (n, h) for s, o, r, n, h in zip(*tally.values(), strict=True)}
    assert got == {("a", "ok", ""): (2, 0.3), ("a", "dropped", "near_duplicate"): (1, 2.0),
                   ("b", "quarantined", "bad_json"): (1, 2.0), ("b", "ok", ""): (1, 0.7)}
    final = stages.finalize_stage(batch, dups, 0.0, {}).to_pydict()
    counted = sorted((s, o, r) for (s, o, r), (n, _) in got.items() for _ in range(n))
    assert counted == sorted(zip(final["source"], final["outcome"], final["reason"], strict=True))
