"""Nothing raw in an artefact: hashed configs, hidden quarantine, restricted routing, keys, canaries."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from cryptography.fernet import Fernet

from forge_ray.config.prepare import PrepareConfig, PrivacyConfig
from forge_ray.config.redact import redacted_dump, value_hash
from forge_ray.errors import ConfigError
from forge_ray.eval.memorisation import _masked, _matched_chars
from forge_ray.prepare.outputs import decrypt, hide_raw, load_key, route_restricted, sha256


def test_deny_list_terms_and_patterns_are_dumped_as_hashes():
    cfg = PrepareConfig(pii={"patterns": [{"name": "EMP", "regex": r"\bEMP-\d{5}\b"}],
                             "deny_lists": [{"name": "CLIENT", "terms": ["Initech", "Globex"]}]})
    dumped = json.dumps(redacted_dump(cfg))
    assert "Initech" not in dumped and "Globex" not in dumped and "EMP-" not in dumped
    pii = redacted_dump(cfg)["pii"]
    assert pii["deny_lists"][0] == {"name": "CLIENT", "terms": [value_hash("Initech"), value_hash("Globex")]}
    assert pii["patterns"][0]["regex"] == value_hash(r"\bEMP-\d{5}\b") and pii["patterns"][0]["name"] == "EMP"
    assert cfg.pii.deny_lists[0].terms == ["Initech", "Globex"]  # the config itself is untouched


def test_a_quarantined_row_keeps_a_hash_and_optionally_ciphertext():
    rows = [{"outcome": "quarantined", "raw": '{"mail": "eve@example.net"', "text": ""},
            {"outcome": "ok", "raw": "", "text": "fine text"}]
    hidden = hide_raw([dict(r) for r in rows], keep_bytes=4096, key=None)
    assert hidden[0]["raw"] == "" and hidden[0]["raw_sha256"] == sha256(rows[0]["raw"])
    assert hidden[1]["raw_sha256"] == sha256("fine text")
    key = Fernet.generate_key()
    kept = hide_raw([dict(r) for r in rows], keep_bytes=8, key=key)
    assert "eve" not in kept[0]["raw"] and decrypt(key, kept[0]["raw"]) == rows[0]["raw"][:8]


def test_every_live_record_of_a_restricted_source_is_routed():
    batch = pa.Table.from_pylist([
        {"source": "secret", "outcome": "ok", "reason": "", "text": "no pii here", "raw": "", "buckets": [1, 2]},
        {"source": "secret", "outcome": "dropped", "reason": "quality_min_words", "text": "", "raw": "", "buckets": []},
        {"source": "open", "outcome": "ok", "reason": "", "text": "public text", "raw": "", "buckets": [3]},
    ])
    out = route_restricted(batch, ["secret"]).to_pylist()
    assert out[0] == {"source": "secret", "outcome": "dropped", "reason": "routed_restricted", "text": "",
                      "raw": "no pii here", "buckets": []}
    assert out[1:] == batch.to_pylist()[1:]
    assert route_restricted(batch, []) is batch


def test_the_key_lives_outside_the_storage_root(tmp_path, monkeypatch):
    key = Fernet.generate_key()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "k").write_bytes(key)
    (tmp_path / "k").write_bytes(key)
    with pytest.raises(ConfigError, match="under the storage root"):
        load_key(PrivacyConfig(key_file=str(tmp_path / "root" / "k")), str(tmp_path / "root"))
    assert load_key(PrivacyConfig(key_file=str(tmp_path / "k")), str(tmp_path / "root")) == key
    monkeypatch.setenv("FORGE_TEST_KEY", "not-a-key")
    with pytest.raises(ConfigError, match="not a Fernet key"):
        load_key(PrivacyConfig(key_env="FORGE_TEST_KEY"), str(tmp_path / "root"))
    assert load_key(PrivacyConfig(), str(tmp_path)) is None
    with pytest.raises(ValueError, match="needs a key"):
        PrivacyConfig(quarantine_raw=True)


def test_a_leaked_canary_is_named_not_quoted():
    canary = "ZX-4471-QQ"
    whole = " ZX-4471-QQ. Please advise, ZX-4471-QQ"
    assert _masked(whole, canary, "t7", _matched_chars(whole, canary)) == " <canary t7>. Please advise, <canary t7>"
    part = " ZX-44 and more"
    assert _masked(part, canary, "t7", _matched_chars(part, canary)) == " <canary t7> and more"
    assert _masked(" nothing", canary, "t7", 0) == " nothing"
