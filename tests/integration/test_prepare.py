"""Prepare on a real local Ray cluster, over the embedded corpora (the session's `prepared_dataset`)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from forge_ray.prepare.dataset import open_dataset
from forge_ray.prepare.pii import PLACEHOLDERS

SECRET_KINDS = {"AWS_KEY", "GITHUB_TOKEN", "SLACK_TOKEN", "PRIVATE_KEY"}


def split_documents(ds, source: str, split: str) -> list[list[int]]:
    """The documents of a split, rebuilt from its sequences in row order (EOS separates them)."""
    table = ds.read_split(source, split)
    assert table["row"].to_pylist() == list(range(table.num_rows))
    ids = np.concatenate([np.asarray(r, np.int32) for r in table["input_ids"].to_pylist()]) if table.num_rows else []
    ids = [t for t in ids if t != ds.pad_token_id]
    docs, cur = [], []
    for t in ids:
        if t == ds.eos_token_id:
            docs.append(cur)
            cur = []
        else:
            cur.append(int(t))
    assert not cur, "every document ends with EOS"
    return docs


def in_shards(ds) -> list[str]:
    """The sources that reach the shards: not the demo's restricted escalations (routed whole to restricted/)."""
    routed = [s for s in ds.sources if ds.manifest["sources"][s]["counts"]["dropped"].get("routed_restricted", 0)
              == ds.manifest["sources"][s]["counts"]["input"]]
    assert routed == ["escalations"] and not any(ds.shards("escalations", sp) for sp in ("train", "eval"))
    return [s for s in ds.sources if s not in routed]


@pytest.fixture(scope="module")
def decoded(prepared_dataset):
    _, ds = prepared_dataset
    tok = ds.load_tokenizer()
    return {(s, sp): [tok.decode(d) for d in split_documents(ds, s, sp)] for s in ds.sources for sp in ("train", "eval")}


def test_every_planted_personal_value_is_gone_and_its_placeholder_is_there(prepared_dataset, decoded):
    root, ds = prepared_dataset
    planted = json.loads((root / "corpora" / "tickets.planted.json").read_text())
    text = "\n".join(decoded[("tickets", "train")] + decoded[("tickets", "eval")])
    assert len(planted["values"]) > 50
    for item in planted["values"]:
        value = item["value"]
        assert value not in text, f"{item['kind']} {value!r} of {item['id']} leaked into the shards"
        for piece in value.split("\n")[1:-1]:  # each line of a private-key body
            assert piece not in text
    found = ds.manifest["sources"]["tickets"]["pii_found"]
    kinds = {("SECRET" if k in SECRET_KINDS else k.replace("PHONE_NUMBER", "PHONE")) for k in
             (i["kind"] for i in planted["values"])}
    # names, addresses, birth dates and national IDs in EN/FR/DE tickets are planted too (small corpus:
    # at least these kinds are always there)
    assert {"PERSON", "ADDRESS", "DATE_OF_BIRTH", "PASSPORT"} <= kinds and len(kinds & {
        "US_SSN", "UK_NHS", "FR_NIR", "DE_TAX_ID", "IT_FISCAL_CODE", "ES_DNI", "ES_NIE", "NL_BSN", "SG_NRIC"}) >= 5, kinds
    for kind in kinds:
        assert text.count(PLACEHOLDERS[kind]) == found[kind] > 0, kind
    counts = ds.manifest["sources"]["tickets"]["counts"]
    assert counts["redacted"] > 0.9 * counts["input"]


def test_counts_reconcile_and_tokens_add_up(prepared_dataset):
    _, ds = prepared_dataset
    for source in ds.sources:
        info = ds.manifest["sources"][source]
        c = info["counts"]
        outcomes = c["kept"] + c["redacted"] + sum(c["dropped"].values()) + sum(c["quarantined"].values())
        assert c["input"] == outcomes > 0
        docs = sum(info["splits"][sp]["documents"] for sp in ("train", "eval"))
        assert docs == c["kept"] + c["redacted"]
        routed_whole = c["dropped"].get("routed_restricted", 0) == c["input"]  # a restricted source: no shards
        for sp in ("train", "eval"):
            split = info["splits"][sp]
            assert ds.num_sequences(source, sp) == sum(s["rows"] for s in split["shards"]) >= (0 if routed_whole else 1)
            assert split["tokens"] + split["padding_tokens"] == ds.num_sequences(source, sp) * ds.seq_len


def test_held_out_split_never_overlaps_training(prepared_dataset, decoded):
    _, ds = prepared_dataset
    for source in in_shards(ds):
        train, held_out = decoded[(source, "train")], decoded[(source, "eval")]
        assert len(held_out) == ds.manifest["sources"][source]["splits"]["eval"]["documents"] >= 1
        assert len(train) == ds.manifest["sources"][source]["splits"]["train"]["documents"]
        assert not set(train) & set(held_out), source


def test_sequences_are_packed_with_positions_restarting_per_document(prepared_dataset):
    _, ds = prepared_dataset
    for source in in_shards(ds):
        table = ds.read_split(source, "train")
        ids = np.asarray(table["input_ids"].to_pylist())
        pos = np.asarray(table["position_ids"].to_pylist())
        assert ids.shape == pos.shape == (table.num_rows, ds.seq_len)
        assert ids.dtype.kind == "i" and ids.max() < ds.tokenizer_info["vocab_size"]
        # A position is 0 exactly at a sequence start or right after EOS; else it counts up by one.
        after_eos = np.zeros_like(ids, dtype=bool)
        after_eos[:, 1:] = ids[:, :-1] == ds.eos_token_id
        real = ids != ds.pad_token_id
        starts = np.zeros_like(ids, dtype=bool)
        starts[:, 0] = True
        expect_zero = (after_eos | starts) & real
        assert (pos[expect_zero] == 0).all()
        inner = real & ~expect_zero
        prev = np.zeros_like(pos)
        prev[:, 1:] = pos[:, :-1]
        assert (pos[inner] == prev[inner] + 1).all()
        assert real[:-1].all(), "only the last sequence may be padded"


def test_tokenizer_loads_and_keeps_placeholders_whole(prepared_dataset):
    _, ds = prepared_dataset
    tok = ds.load_tokenizer()
    assert len(tok) == ds.tokenizer_info["vocab_size"] == 512
    assert tok.eos_token_id == ds.eos_token_id != tok.pad_token_id == ds.pad_token_id
    ids = tok.encode("mail me at <EMAIL> or call <PHONE>", add_special_tokens=False)
    assert tok.convert_tokens_to_ids("<EMAIL>") in ids and tok.convert_tokens_to_ids("<PHONE>") in ids


def test_version_is_reused_when_inputs_and_config_are_unchanged(prepared_dataset):
    from forge_ray.config import load_config
    from forge_ray.prepare.run import prepare_dataset
    from tests.conftest import DEMO_CONFIG

    root, ds = prepared_dataset
    overrides = [f"project.storage_root={root}", "prepare.seq_len=128", "prepare.tokenizer.vocab_size=512"]
    start = time.time()
    again = prepare_dataset(load_config(DEMO_CONFIG, overrides=overrides))
    assert again.version == ds.version and time.time() - start < 10
    assert open_dataset(str(root), ds.dataset).version == ds.version
    ds.verify()  # every shard still matches its sha256


def test_shards_are_byte_identical_across_runs_and_read_parallelism(prepared_dataset, small_corpora, tmp_path):
    """A second run on a fresh root, with the files cut into ~5x more read tasks: same bytes."""
    import shutil

    from forge_ray.config import load_config
    from forge_ray.prepare.run import prepare_dataset
    from tests.conftest import DEMO_CONFIG

    _, first = prepared_dataset
    shutil.copytree(small_corpora[0], tmp_path / "root")
    config = load_config(DEMO_CONFIG, overrides=[
        f"project.storage_root={tmp_path / 'root'}", "prepare.seq_len=128", "prepare.tokenizer.vocab_size=512",
        "prepare.read_chunk_mb=0.005",
    ])
    second = prepare_dataset(config)
    assert second.version != first.version  # the config differs (read_chunk_mb) ...
    assert second.manifest["read_units"] >= first.manifest["read_units"] + 5
    assert second.tokenizer_info["sha256"] == first.tokenizer_info["sha256"]
    for source in in_shards(first):
        for split in ("train", "eval"):
            assert [s["sha256"] for s in second.shards(source, split)] == [s["sha256"] for s in first.shards(source, split)]
            assert len(first.shards(source, split)) >= 1
    assert second.manifest["sources"]["docs"]["counts"] == first.manifest["sources"]["docs"]["counts"]


def test_forge_prepare_and_dataset_show_on_the_demo_file(demo_config_at, ray_cluster, capsys):
    from forge_ray.cli.main import main

    assert main(["prepare", "-c", str(demo_config_at), "--set", "prepare.tokenizer.vocab_size=512"]) == 0
    out = capsys.readouterr().out
    assert "prepared dataset:" in out and "tickets" in out
    dataset_dir = demo_config_at.parent / "root" / "datasets" / "demo"
    assert main(["dataset", "show", str(dataset_dir), "--samples", "1"]) == 0
    shown = capsys.readouterr().out
    for source in ("docs", "code", "tickets"):
        assert f"--- {source}: 1 of" in shown
    assert "<EMAIL>" in shown or "<PHONE>" in shown or "pii redacted" in shown
    assert main(["dataset", "show", str(demo_config_at.parent)]) == 1  # not a dataset folder: one-line error
    assert "neither a dataset folder" in capsys.readouterr().err
