"""The registry: publish, states, the promoted pointer, checksums, reports."""

from __future__ import annotations

import json
import os

import pytest

from forge_ray.registry import CorruptVersionError, Registry, RegistryError, publish_version
from forge_ray.storage import Storage


def fake_export(tmp_path, name: str, weights: bytes = b"w1") -> str:
    """A folder shaped like an export (config + safetensors + tokenizer); contents are opaque here."""
    d = tmp_path / name
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (d / "model.safetensors").write_bytes(weights)
    (d / "sub" / "tokenizer.json").write_text("{}")
    return str(d)


MANIFEST = {"code_version": "abc", "canaries": [], "lineage": {"run": "r1"}, "metrics": {"loss": 1.0}}


@pytest.fixture
def reg(tmp_path):
    storage = Storage(str(tmp_path / "root"))
    for i, v in enumerate(["v1", "v2", "v3"]):
        publish_version(storage, "m", v, fake_export(tmp_path, v, f"w{i}".encode()),
                        {**MANIFEST, "created": f"2026-01-0{i + 1}T00:00:00+00:00"})
    return Registry(storage, "m")


def test_publish_writes_manifest_with_checksums_and_candidate_state(reg):
    info = reg.get("v1")
    assert info.state == "candidate"
    assert sorted(info.manifest["files"]) == ["config.json", "model.safetensors", "sub/tokenizer.json"]
    assert info.manifest["architecture"] == "LlamaForCausalLM"
    assert info.manifest["model"] == "m" and info.manifest["version"] == "v1"
    assert info.manifest["lineage"] == {"run": "r1"}
    assert reg.versions() == ["v1", "v2", "v3"]
    assert reg.pointer().version is None and reg.pointer().generation == 0


def test_publish_refuses_overwrite_and_non_hf_folders(reg, tmp_path):
    with pytest.raises(Exception, match="never overwritten"):
        publish_version(reg.storage, "m", "v1", fake_export(tmp_path, "again"), MANIFEST)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RegistryError, match="config.json"):
        publish_version(reg.storage, "m", "v9", str(empty), MANIFEST)
    with pytest.raises(RegistryError, match="bad version name"):
        publish_version(reg.storage, "m", "../x", fake_export(tmp_path, "x"), MANIFEST)


def test_promote_moves_pointer_with_generation_and_rollback_goes_back(reg):
    assert reg.promote("v1").generation == 1
    p = reg.promote("v2")
    assert (p.version, p.generation) == ("v2", 2)
    assert reg.state("v1") == "promoted"          # still a valid rollback target
    p = reg.rollback("bad answers")
    assert (p.version, p.generation) == ("v1", 3)
    assert reg.state("v2") == "rolled_back"
    assert [h["action"] for h in reg.pointer().history] == ["promote", "promote", "rollback"]
    with pytest.raises(RegistryError, match="no earlier promoted version"):
        reg.rollback()
    with pytest.raises(RegistryError, match="already the promoted"):
        reg.promote("v1")


def test_reject_of_the_promoted_version_points_back_and_forbids_promotion(reg):
    reg.promote("v1")
    reg.promote("v2")
    p = reg.reject("v2", "canary mismatch")
    assert p.version == "v1" and p.generation == 3
    assert reg.get("v2").state == "rejected"
    assert reg.get("v2").history[-1]["reason"] == "canary mismatch"
    with pytest.raises(RegistryError, match="rejected"):
        reg.promote("v2")
    reg.reject("v3", "eval gate")                 # a candidate: pointer untouched
    assert reg.pointer().generation == 3


def test_corrupted_or_incomplete_version_fails_verification_and_promotion(reg):
    path = reg.version_path("v2")
    with open(os.path.join(path, "model.safetensors"), "ab") as f:
        f.write(b"x")
    with pytest.raises(CorruptVersionError, match="checksum mismatch in model.safetensors"):
        reg.promote("v2")
    assert reg.pointer().version is None
    os.remove(os.path.join(reg.version_path("v3"), "sub", "tokenizer.json"))
    with pytest.raises(CorruptVersionError, match="missing file sub/tokenizer.json"):
        reg.verify("v3")
    reg.verify("v1")


def test_unknown_version_is_named_with_the_known_ones(reg):
    with pytest.raises(RegistryError, match=r"no version 'v7' \(versions: v1, v2, v3\)"):
        reg.promote("v7")


def test_attach_report_is_listed_and_readable(reg):
    uri = reg.attach_report("v1", "eval", {"ppl": 12.5})
    assert uri.endswith("_reports/v1/eval.json")
    assert reg.get("v1").reports == ["eval"]
    assert reg.report("v1", "eval") == {"ppl": 12.5}
