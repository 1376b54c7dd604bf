"""Prepare on a corpus seeded with every kind of bad record, duplicate and personal value (real Ray Data)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forge_ray.config import validate_config
from forge_ray.errors import ConfigError
from forge_ray.prepare.run import plan, prepare_dataset
from forge_ray.storage import Storage

WORDS = ("river stone garden window market teacher winter signal harbor lantern orchard meadow "
         "copper violet thunder canyon pillar ribbon falcon glacier mirror saddle timber velvet "
         "anchor basket candle desert engine feather fortune hammer island jungle kettle ladder "
         "magnet needle oyster pepper quartz rocket shadow tunnel umbrella valley wagon yonder "
         "bridge cotton dragon ember forest harvest ivory jacket kingdom lemon marble nectar").split()


def prose(r: random.Random, n: int = 100) -> str:
    words = [r.choice(WORDS) for _ in range(n)]
    return " ".join(w + ("." if i % 12 == 11 else "") for i, w in enumerate(words)).capitalize() + "."


def jl(obj) -> bytes:
    return (json.dumps(obj) + "\n").encode()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, ray_cluster):
    r = random.Random(7)
    root = tmp_path_factory.mktemp("seeded_root")
    good = [prose(r) for _ in range(8)]
    near = good[1].split(" ")
    near[50] = "zeppelin"
    lines = [jl({"id": f"n{i}", "text": t, "tag": "ok"}) for i, t in enumerate(good)]
    lines += [
        b'{"id": "bad1", "text": "mail eve.planted@example.net, unterminated\n',  # line 9
        jl([1, 2, 3]),                                                      # 10 not_an_object
        jl({"id": "m1"}),                                                   # 11 missing_text
        jl({"id": "w1", "text": 42}),                                       # 12 wrong_type
        jl({"id": "e1", "text": "   \n "}),                                 # 13 empty_text
        b'{"id": "u1", "text": "caf\xe9 au lait"}\n',                        # 14 invalid_utf8 (bytes)
        b'{"id": "u2", "text": "lone \\ud800 surrogate"}\n',                 # 15 invalid_utf8 (escape)
        jl({"id": "b1", "text": "\x01\x02\x03 binary \x00 blob " * 20}),    # 16 binary_content
        jl({"id": "t1", "text": prose(r, 2000)}),                           # 17 too_long
        jl({"id": "x1", "text": "  " + good[0].upper().replace(" ", "   ")}),  # 18 exact_duplicate
        jl({"id": "y1", "text": " ".join(near)}),                           # 19 near_duplicate
        jl({"id": "q1", "text": "far too short"}),                          # 20 quality_min_words
        jl({"id": "q2", "text": " ".join(["#tag #tag #tag", *r.sample(WORDS, 20)])}),  # 21 symbol_ratio
        jl({"id": "q3", "text": "\n".join(["the same line repeats here"] * 8 + [prose(r, 10)])}),  # 22
        jl({"id": "p1", "text": prose(r, 40) + " Write to ada.lovelace@example.com about KST-123456 "
            "for Initech. " + prose(r, 40)}),                               # 23 redacted
    ]
    (root / "notes").mkdir()
    (root / "notes" / "notes.jsonl").write_bytes(b"".join(lines))

    # A source on memory:// (a filesystem only the driver has): one .jsonl.gz and one .jsonl.
    mem = fsspec.filesystem("memory")
    mem.pipe("/seeded/more/a.jsonl.gz", gzip.compress(jl({"id": "c1", "text": good[2]}) + jl({"id": "c2", "text": prose(r)})))
    mem.pipe("/seeded/more/b.jsonl", jl({"id": "c3", "text": prose(r)}) + b"\n\n")

    (root / "pages").mkdir()
    (root / "pages" / "one.txt").write_text(prose(r, 60) + "\nContact bob.stone@example.org or +44 20 7946 0321.\n")
    (root / "pages" / "two.txt").write_bytes(b"\x00\x01\x02\x03" * 50)
    # restricted, and the scan finds nothing in it: still never trained on
    (root / "pages" / "three.txt").write_text(prose(random.Random(99), 60) + " QUIETRESTRICTEDMARK.\n")

    buf = io.BytesIO()
    pq.write_table(pa.table({"body": [prose(r), None, prose(r)], "rid": ["r0", "r1", "r2"]}), buf)
    (root / "table").mkdir()
    (root / "table" / "t.parquet").write_bytes(buf.getvalue())

    raw = {
        "project": {"name": "seeded", "storage_root": str(root)},
        "data": {"sources": [
            {"name": "notes", "uri": "{storage_root}/notes", "format": "jsonl", "id_field": "id",
             "metadata_fields": ["tag"], "license": "proprietary", "sensitivity": "internal"},
            {"name": "more", "uri": "memory:///seeded/more", "format": "jsonl", "id_field": "id",
             "license": "proprietary", "sensitivity": "internal"},
            {"name": "pages", "uri": "{storage_root}/pages", "format": "text", "license": "proprietary",
             "sensitivity": "restricted"},
            {"name": "table", "uri": "{storage_root}/table/t.parquet", "format": "parquet", "text_field": "body",
             "id_field": "rid", "license": "proprietary", "sensitivity": "public"},
        ]},
        "prepare": {
            "dataset": "seeded", "seq_len": 64, "eval_fraction": 0.2, "max_record_bytes": 4000,
            "tokenizer": {"vocab_size": 400},
            "pii": {"patterns": [{"name": "TICKET_REF", "regex": r"\bKST-[0-9]{6}\b"}],
                    "deny_lists": [{"name": "CLIENT", "terms": ["Initech"]}]},
        },
    }
    config = validate_config(raw)
    return root, config, prepare_dataset(config)


def test_every_record_has_exactly_one_outcome_with_its_reason(seeded):
    _, _, ds = seeded
    c = {s: ds.manifest["sources"][s]["counts"] for s in ds.sources}
    assert c["notes"] == {
        "input": 23, "kept": 8, "redacted": 1,
        "dropped": {"exact_duplicate": 1, "near_duplicate": 1, "quality_duplicate_lines": 1,
                    "quality_min_words": 1, "quality_symbol_ratio": 1},
        "quarantined": {"binary_content": 1, "empty_text": 1, "invalid_utf8": 2, "malformed_json": 1,
                        "missing_text": 1, "not_an_object": 1, "too_long": 1, "wrong_type": 1},
    }
    # Across sources: the gz copy of a `notes` record is the duplicate; blank lines are not records.
    assert c["more"] == {"input": 3, "kept": 2, "redacted": 0, "dropped": {"exact_duplicate": 1}, "quarantined": {}}
    assert c["pages"] == {"input": 3, "kept": 0, "redacted": 0, "dropped": {"routed_restricted": 2},
                          "quarantined": {"binary_content": 1}}
    assert c["table"] == {"input": 3, "kept": 2, "redacted": 0, "dropped": {}, "quarantined": {"missing_text": 1}}


def test_quarantine_keeps_reason_and_source_position(seeded):
    root, _, ds = seeded
    base = root / "datasets" / "seeded" / ds.version
    q = [json.loads(line) for line in (base / "quarantine" / "notes.jsonl").read_text().splitlines()]
    assert [(x["position"], x["reason"]) for x in q] == [
        ("notes.jsonl:9", "malformed_json"), ("notes.jsonl:10", "not_an_object"), ("notes.jsonl:11", "missing_text"),
        ("notes.jsonl:12", "wrong_type"), ("notes.jsonl:13", "empty_text"), ("notes.jsonl:14", "invalid_utf8"),
        ("notes.jsonl:15", "invalid_utf8"), ("notes.jsonl:16", "binary_content"), ("notes.jsonl:17", "too_long"),
    ]
    # nothing raw: the reason, the position and the hash of the raw line only
    assert all(set(x) == {"reason", "position", "sha256"} for x in q)
    raw_line = (root / "notes" / "notes.jsonl").read_bytes().split(b"\n")[8].decode()
    assert q[0]["sha256"] == hashlib.sha256(raw_line.encode()).hexdigest()
    pages_q = [json.loads(line) for line in (base / "quarantine" / "pages.jsonl").read_text().splitlines()]
    assert [(x["position"], x["reason"]) for x in pages_q] == [("two.txt:0", "binary_content")]
    restricted = [json.loads(line) for line in (base / "restricted" / "pages.jsonl").read_text().splitlines()]
    assert [x["position"] for x in restricted] == ["one.txt:0", "three.txt:0"]
    assert "bob.stone@example.org" in restricted[0]["text"] and restricted[0]["pii"] == {"EMAIL": 1, "PHONE": 1}
    assert "QUIETRESTRICTEDMARK" in restricted[1]["text"] and restricted[1]["pii"] == {}
    # no key configured: the restricted output is in clear, readable by its owner only
    assert (base / "restricted" / "pages.jsonl").stat().st_mode & 0o777 == 0o600
    assert (base / "restricted").stat().st_mode & 0o777 == 0o700


def test_shards_hold_placeholders_not_values_and_no_duplicates(seeded):
    _, _, ds = seeded
    tok = ds.load_tokenizer()
    text = "".join(tok.decode(r) for s in ds.sources for sp in ("train", "eval")
                   for r in ds.read_split(s, sp)["input_ids"].to_pylist())
    for value in ("ada.lovelace@example.com", "KST-123456", "Initech", "bob.stone", "zeppelin", "QUIETRESTRICTEDMARK"):
        assert value not in text
    for placeholder in ("<EMAIL>", "<TICKET_REF>", "<CLIENT>"):
        assert text.count(placeholder) == 1
    assert ds.num_sequences("pages", "train") == 0 and ds.manifest["sources"]["pages"]["splits"]["train"]["shards"] == []


def test_changed_input_names_a_new_version(seeded):
    root, config, ds = seeded
    assert plan(config)[2] == ds.version
    with open(root / "table" / "t.parquet", "rb") as f:
        original = f.read()
    try:
        pq.write_table(pa.table({"body": ["a different corpus entirely, with words"], "rid": ["z"]}), root / "table" / "t.parquet")
        assert plan(config)[2] != ds.version
    finally:
        (root / "table" / "t.parquet").write_bytes(original)
    assert Storage(str(root)).is_complete(f"datasets/seeded/{ds.version}")


def test_reusing_an_existing_tokenizer_folder(seeded, tmp_path):
    """Continued pre-training: the shards are in the reused tokenizer's ids, decoded back exactly."""
    from transformers import AutoTokenizer

    root, config, first = seeded
    raw = config.model_dump(mode="json", include={"project", "data", "prepare"})
    raw["prepare"]["dataset"] = "reused"
    raw["prepare"]["tokenizer"] = {"mode": "reuse", "path": first.tokenizer_path}
    ds = prepare_dataset(validate_config(raw))
    original = AutoTokenizer.from_pretrained(first.tokenizer_path)
    assert ds.tokenizer_info["vocab_size"] == len(original)
    assert ds.eos_token_id == original.eos_token_id and ds.pad_token_id == original.pad_token_id
    assert [s["sha256"] for s in ds.shards("notes", "train")] == [s["sha256"] for s in first.shards("notes", "train")]
    with pytest.raises(ConfigError, match="not a tokenizer folder"):
        raw["prepare"]["tokenizer"]["path"] = str(tmp_path / "nowhere")
        raw["prepare"]["dataset"] = "missing"
        prepare_dataset(validate_config(raw))


def test_nothing_raw_and_no_deny_list_term_in_any_file_under_the_root(seeded):
    """Every file the run wrote (dataset, manifest, tokenizer, side files): no deny-listed client,
    no custom pattern or value it matched, no value from a quarantined line; hashes instead."""
    from forge_ray.config.redact import value_hash

    root, _, ds = seeded
    written = [p for p in (root / "datasets").rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in written) and any(p.suffix == ".parquet" for p in written)
    for path in written:
        data = path.read_bytes()
        for needle in (b"initech", b"kst-", b"eve.planted", b"[0-9]{6}"):
            assert needle not in data.lower(), (path, needle)
    pii = ds.manifest["config"]["prepare"]["pii"]
    assert pii["deny_lists"][0]["terms"] == [value_hash("Initech")]
    assert pii["patterns"][0]["regex"] == value_hash(r"\bKST-[0-9]{6}\b")


def test_a_second_run_writes_the_same_shards_and_encrypts_what_it_keeps(seeded, tmp_path):
    """Other read units (3x more tasks), a key and raw quarantine on: identical shard bytes; the
    raw quarantined line and the restricted records are kept only as ciphertext."""
    from cryptography.fernet import Fernet

    root, config, first = seeded
    key = Fernet.generate_key()
    (tmp_path / "data.key").write_bytes(key)
    raw = config.model_dump(mode="json", include={"project", "data", "prepare"})
    raw["prepare"].update(dataset="again", read_chunk_mb=0.0005,
                          privacy={"key_file": str(tmp_path / "data.key"), "quarantine_raw": True})
    ds = prepare_dataset(validate_config(raw))
    assert ds.manifest["read_units"] > 3 * first.manifest["read_units"]
    for s in first.sources:
        for sp in ("train", "eval"):
            assert [x["sha256"] for x in ds.shards(s, sp)] == [x["sha256"] for x in first.shards(s, sp)], (s, sp)
    base = root / "datasets" / "again" / ds.version
    q = json.loads((base / "quarantine" / "notes.jsonl").read_text().splitlines()[0])
    clear = Fernet(key).decrypt(q["raw_encrypted"].encode()).decode()
    assert clear.startswith('{"id": "bad1"') and hashlib.sha256(clear.encode()).hexdigest() == q["sha256"]
    rec = json.loads((base / "restricted" / "pages.jsonl").read_text().splitlines()[0])
    assert "text" not in rec and "bob.stone" in json.loads(Fernet(key).decrypt(rec["encrypted"].encode()))["text"]
    for path in base.rglob("*"):
        assert not path.is_file() or b"eve.planted" not in path.read_bytes()

    raw["prepare"]["privacy"]["key_file"] = str(root / "inside.key")
    (root / "inside.key").write_bytes(key)
    with pytest.raises(ConfigError, match="must not lie under the storage root"):
        prepare_dataset(validate_config(raw))
