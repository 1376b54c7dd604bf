"""Instruction tuning on a real local Ray cluster (docs/sft.md): the embedded instruction set
(with malformed records mixed in) prepared as a chat dataset, a tiny base model fine-tuned on it with
Ray Train + DeepSpeed, in full and with LoRA; the held-out KPI rises, the LoRA export is merged and
`transformers` loads it as a plain model."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from forge_ray.cluster import free_port
from forge_ray.corpora.instructions import heldout_cases

LORA = ('train.lora={"rank": 8, "alpha": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", '
        '"up_proj", "down_proj"], "save_adapter": true}')


@pytest.fixture(scope="module")
def sft(sft_version):
    """The session's SFT run (conftest `sft_version`: the embedded instruction set with malformed
    conversations mixed in, full fine-tuning, 120 steps) and a LoRA run on the same dataset."""
    from forge_ray.export import export_run
    from forge_ray.testing.sft import sft_config
    from forge_ray.train import run_training

    ws, dataset = sft_version["ws"], sft_version["dataset"]
    lora_cfg = sft_config(ws, ["train.run_name=lora", "model.name=sft-lora", "train.steps=30", "train.lr=1e-2",
                               "train.log_every=1", LORA])
    lora = run_training(lora_cfg, dataset)
    return {"ws": ws, "dataset": dataset, "full": sft_version["result"], "lora": lora, "lora_cfg": lora_cfg,
            "full_export": sft_version["exported"], "lora_export": export_run(lora, lora_cfg, dataset)}


def test_prepare_quarantines_malformed_conversations_and_masks_the_assistant(sft):
    ds = sft["dataset"]
    src = ds.manifest["sources"]["instructions"]
    assert src["counts"]["quarantined"] == {"no_assistant_turn": 1, "unknown_role": 1, "tool_without_call": 1,
                                            "invalid_json": 1}
    assert ds.has_loss_mask and ds.manifest["sft"]["chat_template"] == "default"
    table = ds.read_split("instructions", "train")
    mask = table.column("loss_mask").combine_chunks().flatten().to_numpy()
    assert mask.sum() == src["splits"]["train"]["target_tokens"] > 0
    assert mask.sum() < 0.5 * src["splits"]["train"]["tokens"]  # prompts are not targets
    quarantine = ds.storage.read_bytes(f"datasets/{ds.dataset}/{ds.version}/quarantine/instructions.jsonl")
    assert b"Anyone there" not in quarantine  # reasons and hashes only


def test_full_fine_tuning_counts_masked_tokens_and_raises_the_heldout_kpi(sft):
    from forge_ray.eval.chat_kpi import chat_kpi

    m = sft["full"].metrics
    step_tokens = 16 * sft["dataset"].seq_len
    assert all(0 < r["target_tokens"] < step_tokens / 4 for r in m)
    assert m[-1]["lm_loss"] < m[0]["lm_loss"] - 2.0, (m[0]["lm_loss"], m[-1]["lm_loss"])
    cases = heldout_cases(40)
    before = chat_kpi(str(sft["ws"].base), cases)
    after = chat_kpi(sft["full_export"].path, cases)
    assert after["score"] >= before["score"] + 0.3, (before["by_task"], after["by_task"])


def test_lora_trains_adapters_only_and_exports_a_merged_model_transformers_loads(sft):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from forge_ray.models import build_model
    from forge_ray.models.lora import merge_lora_weights
    from forge_ray.train.checkpoint import read_checkpoint

    m = sft["lora"].metrics
    assert m[-1]["lm_loss"] < m[0]["lm_loss"] - 1.0, (m[0]["lm_loss"], m[-1]["lm_loss"])
    weights, _, _ = read_checkpoint(sft["lora"].checkpoint_dir, optimizer=False)
    base = load_file(str(sft["ws"].base / "model.safetensors"))
    assert torch.equal(weights["embed_tokens.weight"], base["model.embed_tokens.weight"].float())  # frozen
    assert torch.equal(weights["layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])
    exported = sft["lora_export"].path
    assert not any("lora" in k for k in load_file(f"{exported}/model.safetensors"))
    assert any(k.endswith("lora_B") for k in load_file(f"{exported}/adapter.safetensors"))
    scale = sft["lora_cfg"].train.lora.scale
    model = build_model(sft["lora"].model)
    model.load_state_dict(merge_lora_weights(weights, scale))
    hf = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    ids = torch.tensor([sft["dataset"].read_split("instructions", "eval").column("input_ids")[0].as_py()[:64]])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model.eval()(ids).logits, rtol=1e-4, atol=1e-4)


def test_the_sft_version_serves_chat_completions_with_its_template(sft, tmp_path):
    """The promoted SFT version behind the forge endpoint (Ray Serve + vLLM): the `openai` client's
    chat request is rendered with the version's own template and gets the answer transformers gives."""
    import openai

    from forge_ray.eval.chat_kpi import chat_kpi
    from forge_ray.registry import Registry
    from forge_ray.serve import start_serving, stop_serving
    from forge_ray.testing.sft import sft_config

    exported = sft["full_export"]
    Registry(str(sft["ws"].root), exported.model).promote(exported.version)
    (tmp_path / "keys").write_text("sft-key\n")
    port = free_port()
    config = sft_config(sft["ws"], [f"serve.port={port}", "serve.app_name=sfttest", "serve.engine.kv_cache_gib=0.25",
                                    f"serve.auth.api_keys_file={tmp_path / 'keys'}"])
    cases = [c for c in heldout_cases(40) if c["task"] in ("ticket_language", "passage_kind")][:6]
    expected = chat_kpi(exported.path, cases)["cases"]
    endpoint = start_serving(config)
    try:
        client = openai.OpenAI(base_url=endpoint.base_url, api_key="sft-key", max_retries=0)
        for case, want in zip(cases, expected, strict=True):
            reply = client.chat.completions.create(model=exported.model, messages=case["messages"], max_tokens=12,
                                                   temperature=0)
            assert reply.choices[0].message.content.strip() == want["answer"].strip(), (case["id"], want)
        assert sum(case["expected"].lower() in w["answer"].lower() for case, w in zip(cases, expected, strict=True)) >= 4
    finally:
        stop_serving(endpoint)


def test_sft_mixes_a_pretraining_dataset_in_by_weight(ray_cluster, tmp_path):
    """The SFT run keeps domain knowledge: a pre-training dataset (the Python docs, prepared with the
    same tokenizer) mixed in through `mixture.datasets`; its rows train on every real token."""
    from forge_ray.corpora.docs import docs_records
    from forge_ray.prepare.run import prepare_dataset
    from forge_ray.testing.sft import sft_config, sft_workspace
    from forge_ray.train import run_training

    ws = sft_workspace(tmp_path, n=300)
    docs_dir = ws.root / "corpora" / "docs"
    docs_dir.mkdir(parents=True)
    (docs_dir / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in docs_records(limit=60)))
    source = json.dumps([{"name": "docs", "uri": "{storage_root}/corpora/docs", "format": "jsonl",
                          "text_field": "text", "id_field": "id", "license": "PSF-2.0", "sensitivity": "public"}])
    pre = prepare_dataset(sft_config(ws, [f"data.sources={source}", "prepare.dataset=docs",
                                          "train.objective=pretrain"]))
    chat = prepare_dataset(sft_config(ws))
    assert chat.has_loss_mask and not pre.has_loss_mask
    cfg = sft_config(ws, ["train.run_name=mixed", "train.steps=6", "train.log_every=1", "train.export=false",
                          "mixture.datasets=[docs]", "mixture.weights={instructions: 0.75, docs: 0.25}"])
    run = run_training(cfg, chat)
    shares = {s["name"]: s["samples"] for s in run.plan.to_json()["sources"]}
    assert shares == {"instructions": 72, "docs": 24}  # 6 steps x 16 sequences, 3:1
    assert all(set(r["loss_by_source"]) == {"instructions", "docs"} for r in run.metrics)
    # Per step: 12 SFT rows count their assistant tokens, 4 docs rows every real token (about a row each).
    split = {n: d.manifest["sources"][n]["splits"]["train"] for n, d in (("instructions", chat), ("docs", pre))}
    sft_row = split["instructions"]["target_tokens"] / split["instructions"]["sequences"]
    docs_row = (split["docs"]["tokens"] - split["docs"]["sequences"]) / split["docs"]["sequences"]
    mean = statistics.mean(r["target_tokens"] for r in run.metrics)
    assert docs_row > 5 * sft_row
    assert 0.8 * (12 * sft_row + 4 * docs_row) < mean < 1.2 * (12 * sft_row + 4 * docs_row), (sft_row, docs_row, mean)
