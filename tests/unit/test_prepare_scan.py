"""The fused scan stage gives exactly what PII -> quality -> signatures give one after another."""

from __future__ import annotations

import pyarrow as pa

from forge_ray.config.prepare import PrepareConfig
from forge_ray.corpora.tickets import ticket_records
from forge_ray.data import stages


def _batch(texts: list[tuple[str, str, str]]) -> pa.Table:
    return pa.Table.from_pylist([
        {"source": src, "key": i, "id": f"r{i}", "position": f"f:{i}", "text": text, "meta": "{}",
         "outcome": outcome, "reason": "" if outcome == "ok" else "empty_text", "raw": "", "pii": ""}
        for i, (src, text, outcome) in enumerate(texts)
    ])


def test_scan_stage_equals_the_three_stages_and_its_memo_changes_nothing():
    cfg = PrepareConfig(dataset="t")
    tickets, _ = ticket_records(n=60, seed=3)
    prose = "The calibration service checks every instrument against a reference before it ships. " * 3
    rows = [("tickets", t["text"], "ok") for t in tickets] + [("code", prose, "ok"), ("docs", prose, "ok")]
    rows += [("tickets", tickets[0]["text"], "ok"), ("docs", prose, "ok"), ("docs", "", "quarantined"),
             ("docs", "too short", "ok"), ("secret", tickets[1]["text"], "ok"), ("secret", tickets[1]["text"], "ok")]
    batch = _batch(rows)
    policies = {"tickets": "redact", "code": "redact", "docs": "drop", "secret": "restrict"}
    one_by_one = stages.sign_stage(
        stages.quality_stage(stages.pii_stage(batch, cfg.pii, policies), cfg.quality, ["code"]), cfg.dedup, cfg.seed)
    for _ in range(2):  # the second pass is answered from the memo
        fused = stages.scan_stage(batch, cfg.pii, policies, cfg.quality, ["code"], cfg.dedup, cfg.seed)
        assert fused.to_pylist() == one_by_one.to_pylist()
    outcomes = {r["outcome"] for r in fused.to_pylist()}
    assert {"redacted", "dropped", "quarantined", "ok"} <= outcomes
