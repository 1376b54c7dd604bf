"""Done-when tests of training on a real local Ray cluster with DeepSpeed on CPU.

One run per family, reused by several tests: a tiny MoE (experts spread over both workers,
expert_parallel_size 2, ZeRO 2) and a tiny dense model continued from an HF Llama folder
(ZeRO 1), each with 2 workers on the prepared embedded corpora; then the exported version is
loaded by `transformers` and `vllm.LLM` as it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from forge_ray.offline import OFFLINE_ENV
from tests.conftest import DEMO_CONFIG, DEMO_WITHOUT_SYNTHETIC

REPO = Path(__file__).resolve().parent.parent.parent
SMALL = ["model.hidden_size=64", "model.num_layers=2", "model.num_heads=1", "model.num_kv_heads=1",
         "model.ffn_hidden_size=128", "train.min_workers=2", "train.max_workers=2", "train.micro_batch_size=2",
         "train.global_batch_size=8", "train.checkpoint_every=10", "train.warmup_steps=3", "train.lr=5e-3"]


def _config(root, name: str, extra: list[str]):
    from forge_ray.config import load_config

    return load_config(DEMO_CONFIG, [f"project.storage_root={root}", f"train.run_name={name}",
                                     f"model.name={name}", *DEMO_WITHOUT_SYNTHETIC, *SMALL, *extra])


@pytest.fixture(scope="module")
def moe_run(prepared_dataset):
    from forge_ray.export import export_run
    from forge_ray.storage import Storage
    from forge_ray.train import run_training

    root, dataset = prepared_dataset
    config = _config(root, "t-moe", ["model.family=moe", "model.moe.num_experts=4",
                                     "model.moe.expert_parallel_size=2", "train.steps=30"])
    result = run_training(config, dataset)
    exported = export_run(result, config, dataset, Storage(str(root)))
    return config, dataset, result, exported


def _falls(metrics: list[dict]) -> tuple[float, float]:
    losses = [m["lm_loss"] for m in metrics]
    return sum(losses[:3]) / 3, sum(losses[-3:]) / 3


def test_moe_two_workers_loss_falls_and_every_token_is_routed(moe_run):
    config, dataset, result, _ = moe_run
    m = result.metrics
    assert [r["step"] for r in m] == list(range(30)) and {r["world_size"] for r in m} == {2}
    first, last = _falls(m)
    assert last < first - 0.5, (first, last)
    # Without token dropping each token reaches top_k experts in each MoE layer.
    tokens = config.train.global_batch_size * dataset.seq_len
    assert all(sum(r["expert_tokens"]) == tokens * 2 * 2 for r in m)
    assert set(m[-1]["loss_by_source"]) <= set(dataset.sources) and m[-1]["aux_loss"] > 0
    assert 0 < m[-1]["mfu"] < 1 and m[-1]["tokens_per_s"] > 0
    run_dir = Path(result.run_dir)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    info = json.loads((run_dir / "run.json").read_text())
    assert info["dataset_version"] == dataset.version and info["mixture_plan"]["total_steps"] == 30


def test_moe_run_consumed_exactly_its_plan(moe_run):
    from forge_ray.mixture import check_consumption

    _, _, result, _ = moe_run
    report = check_consumption(result.plan, result.run_dir)
    assert report.steps == 30 and report.samples == 30 * 8


def test_export_logits_match_the_trained_model(moe_run):
    from transformers import AutoModelForCausalLM

    from forge_ray.models import build_model
    from forge_ray.train.checkpoint import read_checkpoint
    from forge_ray.train.deepspeed_adapter import moe_layer

    config, dataset, result, exported = moe_run
    weights, _, state = read_checkpoint(result.checkpoint_dir, optimizer=False)
    assert state["step"] == 30
    ours = build_model(result.model, moe_layer=moe_layer).eval()
    ours.load_state_dict(weights)
    hf = AutoModelForCausalLM.from_pretrained(exported.path).eval()
    assert type(hf).__name__ == "MixtralForCausalLM"
    ids = torch.tensor([dataset.read_split("docs", "train")["input_ids"][0].as_py()[:64]])
    with torch.no_grad():
        a, b = ours(ids).logits, hf(ids).logits
    assert a.std() > 0.1
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_manifest_lineage_and_canaries(moe_run):
    from transformers import AutoModelForCausalLM

    from forge_ray.registry.canary import greedy_tokens

    config, dataset, result, exported = moe_run
    man = exported.manifest
    assert man["architecture"] == "MixtralForCausalLM" and man["model"] == "t-moe"
    lin = man["lineage"]
    assert lin["dataset_version"] == dataset.version and lin["run"] == result.run
    assert set(lin["input_hashes"]) == set(dataset.sources)
    assert lin["mixture_plan"]["plan_id"] == result.plan.plan_id and lin["config"]["model"]["family"] == "moe"
    assert abs(man["metrics"]["loss"] - result.metrics[-1]["loss"]) < 1e-9
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= set(man["files"])
    hf = AutoModelForCausalLM.from_pretrained(exported.path).eval()
    c = man["canaries"][0]
    assert greedy_tokens(hf, c["prompt_token_ids"], len(c["greedy_token_ids"])) == c["greedy_token_ids"]


def test_vllm_greedy_matches_transformers(moe_run, tmp_path):
    _, _, _, exported = moe_run
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(OFFLINE_ENV, PYTHONPATH=str(REPO))
    out = tmp_path / "vllm.json"
    proc = subprocess.run([sys.executable, str(REPO / "tests/integration/vllm_greedy.py"), str(out), "8", exported.path],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())[exported.path]
    expected = [c["greedy_token_ids"][:8] for c in exported.manifest["canaries"]]
    assert got == expected


def test_dense_from_open_weights_starts_where_they_are(prepared_dataset, tmp_path):
    """Continued pre-training: the first step's loss is the HF checkpoint's own loss on that batch."""
    from transformers import AutoModelForCausalLM

    from forge_ray.mixture.reader import read_samples
    from forge_ray.testing.tiny_versions import build_tiny
    from forge_ray.train import run_training
    from forge_ray.train.loss import lm_token_loss

    root, dataset = prepared_dataset
    hf_dir = build_tiny(str(tmp_path / "open"), "dense", seed=3)
    config = _config(root, "t-dense", ["model.family=dense", f"model.init_from={hf_dir}", "train.steps=12",
                                       "train.zero_stage=1", "train.lr=2e-3"])
    result = run_training(config, dataset)
    assert result.model.hidden_size == 128 and result.model.family == "dense"  # the checkpoint's architecture
    src, rows = result.plan.batch(0)
    batch = read_samples(result.plan, src, rows)
    hf = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    total, n = 0.0, 0.0
    with torch.no_grad():
        for i in range(len(src)):
            ids = torch.as_tensor(batch["input_ids"][i : i + 1], dtype=torch.long)
            pos = torch.as_tensor(batch["position_ids"][i : i + 1], dtype=torch.long)
            logits = _doc_masked_logits(hf, ids, pos)
            loss, mask = lm_token_loss(logits, ids, result.plan.pad_token_id)
            total, n = total + float((loss * mask).sum()), n + float(mask.sum())
    assert abs(result.metrics[0]["lm_loss"] - total / n) < 1e-3
    first, last = _falls(result.metrics)
    assert last < first


def _doc_masked_logits(hf, ids, pos):
    """HF logits with the same per-document attention forge trains with (4-D mask, restarting positions)."""
    from forge_ray.models.layers import document_mask

    allowed = document_mask(pos)
    mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)
    return hf(input_ids=ids, position_ids=pos, attention_mask=mask).logits
