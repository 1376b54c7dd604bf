"""Read units and validation: cuts at line boundaries with the right line numbers; each bad record's reason."""

from __future__ import annotations

import json

import fsspec
import pytest

from forge_ray.config import SourceConfig
from forge_ray.prepare.read import _scan, plan_source, read_unit, unit_dict
from forge_ray.prepare.validate import Validator


def test_scan_cuts_at_line_boundaries_and_counts_lines():
    fs = fsspec.filesystem("memory")
    lines = [json.dumps({"text": f"record {i} " + "x" * (i % 7)}).encode() for i in range(500)]
    fs.pipe("/scan/a.jsonl", b"\n".join(lines) + b"\n")
    sha, size, cuts = _scan(fs, "/scan/a.jsonl", 1000)
    data = fs.cat("/scan/a.jsonl")
    assert size == len(data) and len(cuts) > 5
    for offset, line in cuts:
        assert offset == 0 or data[offset - 1 : offset] == b"\n"
        assert data[offset:].split(b"\n", 1)[0] == lines[line - 1]


def test_units_cover_every_record_once():
    fs = fsspec.filesystem("memory")
    fs.pipe("/units/a.jsonl", b"".join(json.dumps({"id": i, "text": f"t{i}"}).encode() + b"\n" for i in range(300)))
    src = SourceConfig(name="s", uri="memory:///units", format="jsonl", id_field="id", license="MIT", sensitivity="public")
    units, inputs = plan_source(src, 0, "memory:///units", 500)
    validator = Validator(src, 1000, 100)
    rows = [r for u in units for r in read_unit(unit_dict(u), validator)]
    assert [r["id"] for r in rows] == [str(i) for i in range(300)]
    assert [r["position"] for r in rows] == [f"a.jsonl:{i + 1}" for i in range(300)]
    assert len(units) > 3 and inputs[0]["bytes"] == len(fs.cat("/units/a.jsonl"))


@pytest.mark.parametrize("line, reason", [
    (b'{"text": "unterminated', "malformed_json"),
    (b'"just a string"', "not_an_object"),
    (b'{"body": "wrong field"}', "missing_text"),
    (b'{"text": ["a", "list"]}', "wrong_type"),
    (b'{"text": " \\n\\t "}', "empty_text"),
    (b'{"text": "caf\xe9"}', "invalid_utf8"),
    (b'{"text": "half \\udc00 pair"}', "invalid_utf8"),
    (b'{"text": "bin\\u0000ary"}', "binary_content"),
    (b'{"text": "' + b"long " * 30 + b'"}', "too_long"),
    (b'{"text": "fine text"}', ""),
])
def test_validator_reasons(line, reason):
    src = SourceConfig(name="s", uri="/x", format="jsonl", license="MIT", sensitivity="public")
    unit = {"source": "s", "source_idx": 0, "file_idx": 0, "file": "f.jsonl"}
    row = Validator(src, max_record_bytes=100, quarantine_raw_bytes=20).jsonl_line(unit, 7, line)
    assert row["reason"] == reason and row["outcome"] == ("quarantined" if reason else "ok")
    assert row["position"] == "f.jsonl:7" and len(row["raw"]) <= 20
    json.dumps(row).encode("utf-8")  # storable as UTF-8 whatever came in


def test_a_large_parquet_row_group_is_cut_into_row_slices(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [f"row {i} " + "y" * 200 for i in range(400)]}), tmp_path / "t.parquet")
    src = SourceConfig(name="p", uri=str(tmp_path), format="parquet", license="MIT", sensitivity="public")
    units, _ = plan_source(src, 0, str(tmp_path), 10_000)
    rows = [r for u in units for r in read_unit(unit_dict(u), Validator(src, 1000, 10))]
    assert len(units) > 3
    assert [r["position"] for r in rows] == [f"t.parquet:{i}" for i in range(400)]
    assert rows[399]["text"].startswith("row 399 ")


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_compressed_jsonl_is_one_unit_with_line_numbers(tmp_path, suffix):
    import gzip

    import zstandard

    data = b"".join(json.dumps({"text": f"line {i}"}).encode() + b"\n" for i in range(50))
    packed = gzip.compress(data) if suffix.endswith(".gz") else zstandard.ZstdCompressor().compress(data)
    (tmp_path / f"c{suffix}").write_bytes(packed)
    src = SourceConfig(name="z", uri=str(tmp_path), format="jsonl", license="MIT", sensitivity="public")
    units, inputs = plan_source(src, 0, str(tmp_path), 100)
    rows = [r for u in units for r in read_unit(unit_dict(u), Validator(src, 1000, 10))]
    assert len(units) == 1 and inputs[0]["bytes"] == len(packed)
    assert [r["text"] for r in rows] == [f"line {i}" for i in range(50)] and rows[-1]["position"] == f"c{suffix}:50"
