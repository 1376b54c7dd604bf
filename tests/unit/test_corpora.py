"""The embedded corpora: real prose and code, deterministic tickets with valid planted PII."""

from __future__ import annotations

import json
import re

import phonenumbers
import pyarrow.parquet as pq

from forge_ray.corpora import write_corpora
from forge_ray.corpora.tickets import CANARY_PREFIX, ticket_records
from forge_ray.prepare.pii import ids
from forge_ray.storage import Storage


def _iban_ok(value: str) -> bool:
    raw = value.replace(" ", "")
    digits = "".join(str(int(c, 36)) for c in raw[4:] + raw[:4])
    return int(digits) % 97 == 1


def _luhn_ok(value: str) -> bool:
    digits = [int(c) for c in value.replace(" ", "")][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


def test_tickets_are_deterministic_by_seed():
    a, pa_ = ticket_records(n=50, seed=3)
    b, pb = ticket_records(n=50, seed=3)
    c, _ = ticket_records(n=50, seed=4)
    assert a == b and pa_ == pb
    assert a != c


def test_every_planted_value_is_in_its_ticket_and_valid():
    records, planted = ticket_records(n=300, seed=0)
    by_id = {r["id"]: r["text"] for r in records}
    kinds = {v["kind"] for v in planted["values"]}
    assert {"EMAIL", "PHONE", "IBAN", "CREDIT_CARD", "IP_ADDRESS"} <= kinds
    assert kinds & {"AWS_KEY", "GITHUB_TOKEN", "SLACK_TOKEN", "PRIVATE_KEY"}
    assert {"PERSON", "ADDRESS", "DATE_OF_BIRTH", "PASSPORT", "US_SSN", "UK_NHS", "FR_NIR", "DE_TAX_ID",
            "IT_FISCAL_CODE", "ES_DNI", "ES_NIE", "NL_BSN", "SG_NRIC"} <= kinds
    assert any(r["text"].startswith("Bonjour") for r in records) and any(r["text"].startswith("Guten Tag") for r in records)
    checks = {"UK_NHS": ids.nhs_ok, "FR_NIR": ids.nir_ok, "DE_TAX_ID": ids.de_tax_ok, "IT_FISCAL_CODE": ids.it_cf_ok,
              "ES_DNI": ids.es_dni_ok, "ES_NIE": ids.es_nie_ok, "NL_BSN": ids.bsn_ok, "SG_NRIC": ids.nric_ok,
              "US_SSN": ids.ssn_ok}
    for item in planted["values"]:
        assert item["value"] in by_id[item["id"]]
        if item["kind"] == "IBAN":
            assert _iban_ok(item["value"]), item
        elif item["kind"] == "CREDIT_CARD":
            assert _luhn_ok(item["value"]), item
        elif item["kind"] == "PHONE":
            assert phonenumbers.is_valid_number(phonenumbers.parse(item["value"])), item
        elif item["kind"] in checks:
            assert checks[item["kind"]](item["value"].replace(" ", "").replace("-", "")), item
        elif item["kind"] == "EMAIL":
            assert re.fullmatch(r"[\w.]+@[\w.]+\.\w+", item["value"])
    assert planted["canaries"]
    for c in planted["canaries"]:
        assert f"{CANARY_PREFIX} {c['canary']}" in by_id[c["id"]]


def test_write_corpora_writes_three_formats_and_is_byte_stable(tmp_path):
    storage = Storage(str(tmp_path))
    summary = write_corpora(storage, scale=0.05)
    first = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    write_corpora(storage, scale=0.05)
    second = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert first == second

    docs = [json.loads(line) for line in (tmp_path / "corpora/docs/docs.jsonl").read_text().splitlines()]
    assert len(docs) == summary["docs"]["records"] > 0
    assert any("statement" in d["text"] for d in docs)  # real reference prose
    code = pq.read_table(tmp_path / "corpora/code/code.parquet").to_pylist()
    assert len(code) == summary["code"]["records"] > 0
    assert all(("def " in r["text"] or "import " in r["text"] or "class " in r["text"]) for r in code[:5])
    planted = json.loads((tmp_path / "corpora/tickets.planted.json").read_text())
    assert len(planted["values"]) == summary["tickets"]["planted_values"]
