"""A synthetic source joins its dataset as one PreparedDataset (what the pipeline trains on), by hashes only."""

from __future__ import annotations

import json
import posixpath

import pytest

from forge_ray.config.mixture import MixtureConfig
from forge_ray.mixture import build_plan
from forge_ray.prepare.dataset import MANIFEST
from forge_ray.storage import Storage
from forge_ray.synthesize import SynthesizeError, list_synthetic, read_preview, with_synthetic
from forge_ray.synthesize.output import PREVIEW_FILE, read_manifest, set_current, synthesis_rel, synthetic_rel
from forge_ray.testing.synthetic_dataset import write_synthetic_dataset

RESTRICTED_SHA = "ab" * 32


def _dataset_with_synthetic(tmp_path, ids: tuple[str, ...] = ()):
    """A prepared dataset, and a synthetic source `esc_synthetic` beside it (shards: a copy of docs' train shard).
    `ids`: syntheses written one after the other (each made current); none: the layout before CURRENT."""
    storage = Storage(str(tmp_path))
    ds = write_synthetic_dataset(storage, "mix", {"docs": 12, "code": 6}, seq_len=16)
    for ident in ids:
        _write_synthesis(storage, ds, synthesis_rel(ds, "esc", ident), ident)
        set_current(ds, "esc", ident)
    if not ids:
        _write_synthesis(storage, ds, synthetic_rel(ds, "esc"), "s1")
    return ds


def _write_synthesis(storage, ds, rel: str, ident: str) -> None:
    entry = ds.manifest["sources"]["docs"]["splits"]["train"]
    with storage.atomic_dir(rel) as tmp:
        for shard in entry["shards"]:
            storage.fs.makedirs(posixpath.dirname(posixpath.join(tmp, "shards/esc_synthetic/x")), exist_ok=True)
            storage.fs.copy(posixpath.join(ds.path, shard["path"]),
                            posixpath.join(tmp, shard["path"].replace("/docs/", "/esc_synthetic/")))
        splits = {"train": {**entry, "shards": [{**s, "path": s["path"].replace("/docs/", "/esc_synthetic/")}
                                                for s in entry["shards"]]},
                  "eval": {**entry, "shards": [], "sequences": 0, "tokens": 0, "documents": 0}}
        manifest = {"synthesis_id": ident, "name": "esc_synthetic", "strategy": "surrogate", "splits": splits,
                    "counts": {"records": 5, "kept": 5},
                    "lineage": {"restricted": {"file": "restricted/esc.jsonl", "sha256": RESTRICTED_SHA, "records": 5}}}
        with storage.fs.open(posixpath.join(tmp, MANIFEST), "w") as f:
            f.write(json.dumps(manifest))
        with storage.fs.open(posixpath.join(tmp, PREVIEW_FILE), "w") as f:
            f.write(json.dumps({"record": 0, "redacted": "hi <PERSON>", "synthetic": f"hi Vera Lange {ident}"}) + "\n")


def test_with_synthetic_adds_the_source_and_the_mixture_weighs_it(tmp_path):
    ds = _dataset_with_synthetic(tmp_path)
    mixed = with_synthetic(ds, ["esc"])
    assert mixed.sources == ["docs", "code", "esc_synthetic"] and mixed.version == ds.version
    assert mixed.num_sequences("esc_synthetic", "train") == ds.num_sequences("docs", "train")
    assert all("/synthetic/esc/shards/esc_synthetic/" in u for u in mixed.shard_paths("esc_synthetic", "train"))
    # lineage: the restricted file by hash and the synthesis id, nothing of its content
    (inp,) = mixed.manifest["sources"]["esc_synthetic"]["inputs"]
    assert inp["sha256"] == RESTRICTED_SHA and inp["synthesis_id"] == "s1" and inp["records"] == 5
    plan = build_plan(mixed, MixtureConfig(weights={"docs": 0.5, "code": 0.3, "esc_synthetic": 0.2}), 4, total_steps=5)
    assert dict((s["name"], s["samples"]) for s in plan.to_json()["sources"])["esc_synthetic"] == 4
    rows = mixed.read_split("esc_synthetic", "train").column("input_ids").to_pylist()
    assert rows == ds.read_split("docs", "train").column("input_ids").to_pylist()


def test_listing_and_preview_and_a_missing_synthesis(tmp_path):
    ds = _dataset_with_synthetic(tmp_path)
    assert list(list_synthetic(ds)) == ["esc"]
    assert read_preview(ds, "esc") == [{"record": 0, "redacted": "hi <PERSON>", "synthetic": "hi Vera Lange s1"}]
    assert with_synthetic(ds, []) is ds
    with pytest.raises(SynthesizeError, match="no complete synthetic source .*forge synthesize"):
        with_synthetic(ds, ["tickets"])


def test_a_new_synthesis_becomes_current_and_the_previous_one_stays(tmp_path):
    ds = _dataset_with_synthetic(tmp_path, ids=("aaa", "bbb"))
    assert read_manifest(ds, "esc")["synthesis_id"] == "bbb" and read_manifest(ds, "esc", "aaa") is not None
    mixed = with_synthetic(ds, ["esc"])
    assert all("/synthetic/esc/bbb/shards/esc_synthetic/" in u for u in mixed.shard_paths("esc_synthetic", "train"))
    assert mixed.manifest["sources"]["esc_synthetic"]["inputs"][0]["synthesis_id"] == "bbb"
    assert mixed.num_sequences("esc_synthetic", "train") == ds.num_sequences("docs", "train")
    assert read_preview(ds, "esc")[0]["synthetic"] == "hi Vera Lange bbb" and list(list_synthetic(ds)) == ["esc"]
    set_current(ds, "esc", "aaa")  # back to the first: its files were never touched
    assert read_manifest(ds, "esc")["synthesis_id"] == "aaa" and read_preview(ds, "esc")[0]["synthetic"].endswith("aaa")
    with pytest.raises(SynthesizeError, match="incomplete synthesis ccc"):
        set_current(ds, "esc", "ccc")
