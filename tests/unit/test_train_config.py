"""Bad training input fails before any worker starts, naming the fields; the schedule's shape."""

from __future__ import annotations

import textwrap

import pytest

from forge_ray.config import load_config
from forge_ray.config.train import TrainConfig
from forge_ray.errors import ConfigError
from forge_ray.train.deepspeed_adapter import deepspeed_config
from forge_ray.train.schedule import lr_at
from tests.conftest import DEMO_CONFIG

BASE = """
project: {name: acme}
data:
  sources:
    - {name: docs, uri: /d, format: jsonl, license: MIT, sensitivity: public}
"""


def load(tmp_path, text: str):
    path = tmp_path / "forge.yaml"
    path.write_text(BASE + textwrap.dedent(text))
    return load_config(path)


@pytest.mark.parametrize("text, names", [
    ("model: {family: moe, moe: {num_experts: 6, expert_parallel_size: 4}}",
     ["model.moe.num_experts (6)", "model.moe.expert_parallel_size (4)"]),
    ("model: {family: moe}\ntrain: {zero_stage: 3}", ["train.zero_stage 3", "native DeepSpeed MoE"]),
    ("train: {micro_batch_size: 4, global_batch_size: 24, min_workers: 1, max_workers: 4}",
     ["train.global_batch_size (24)", "train.micro_batch_size (4)", "4 workers"]),
    ("train: {min_workers: 3, max_workers: 2}", ["train.min_workers (3)", "train.max_workers (2)"]),
    ("model: {family: moe, moe: {num_experts: 8, expert_parallel_size: 2}}\n"
     "train: {min_workers: 1, max_workers: 2, global_batch_size: 8, micro_batch_size: 4}",
     ["model.moe.expert_parallel_size (2)", "[1]"]),
    ("model: {hidden_size: 100, num_heads: 8}", ["model.hidden_size (100)", "model.num_heads (8)"]),
    ("model: {family: moe, moe: {top_k: 1}}", ["model.moe.top_k"]),
])
def test_invalid_combinations_name_the_fields(tmp_path, text, names):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    for name in names:
        assert name in str(e.value), str(e.value)


def test_demo_batch_divides_for_every_world_size():
    cfg = load_config(DEMO_CONFIG)
    t = cfg.train
    assert cfg.model.family == "moe" and (t.min_workers, t.max_workers) == (1, 2)
    assert [t.accumulation(w) * w * t.micro_batch_size for w in (1, 2)] == [t.global_batch_size] * 2
    ds = deepspeed_config(t, 2)
    assert ds["train_batch_size"] == 16 and ds["gradient_accumulation_steps"] == 2
    assert ds["zero_optimization"]["stage"] == 2 and ds["bf16"]["enabled"] is False  # CPU: fp32
    # One rank has nothing to partition: an fp32 engine runs stage 0 there (as logged by rank 0);
    # a bf16 one keeps stage 1 for its fp32 master weights.
    assert deepspeed_config(t, 1)["zero_optimization"]["stage"] == 0
    assert deepspeed_config(t.model_copy(update={"precision": "bf16"}), 1)["zero_optimization"]["stage"] == 1
    assert deepspeed_config(t.model_copy(update={"zero_stage": 1}), 2)["zero_optimization"]["stage"] == 1


def test_warmup_then_cosine_to_the_floor():
    t = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, t) == pytest.approx(1e-4) and lr_at(9, t) == pytest.approx(1e-3)
    assert lr_at(55, t) == pytest.approx(0.55e-3, rel=1e-2)  # halfway down the cosine
    assert lr_at(100, t) == pytest.approx(1e-4)
    lrs = [lr_at(k, t) for k in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


class FakeDataset:
    """The PreparedDataset surface the planner reads (a fake: the real one is tested by its room)."""

    dataset, version, seq_len, sources = "d", "v1", 256, ["docs"]
    manifest = {"tokenizer": {"vocab_size": 4096}}

    def __init__(self, sequences: int):
        self.n = sequences

    def num_sequences(self, source, split):
        return self.n


def test_more_workers_than_data_is_caught_at_plan_time():
    from forge_ray.train.driver import check_data_fits

    cfg = load_config(DEMO_CONFIG, ["train.max_workers=2", "train.micro_batch_size=4"])
    check_data_fits(cfg, FakeDataset(8))
    with pytest.raises(ConfigError, match=r"train.max_workers x train.micro_batch_size = 2 x 4 = 8.*only 7"):
        check_data_fits(cfg, FakeDataset(7))


def test_vocabulary_comes_from_the_tokenizer_and_init_from_is_checked(tmp_path):
    from forge_ray.train.driver import resolve_model

    cfg = load_config(DEMO_CONFIG)
    assert resolve_model(cfg, FakeDataset(100)).vocab_size == 4096
    small = load_config(DEMO_CONFIG, ["model.vocab_size=100"])
    with pytest.raises(ConfigError, match="model.vocab_size: 100 is smaller"):
        resolve_model(small, FakeDataset(100))
    missing = load_config(DEMO_CONFIG, [f"model.init_from={tmp_path}"])
    with pytest.raises(ConfigError, match="model.init_from: no config.json"):
        resolve_model(missing, FakeDataset(100))


def test_forge_train_dry_run_prints_the_sizes(capsys):
    from forge_ray.cli.main import main

    assert main(["train", "-c", str(DEMO_CONFIG), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "moe model: 2.8 M parameters" in out and "memory per worker (2 workers, ZeRO 2, fp32)" in out
    assert main(["train", "-c", str(DEMO_CONFIG), "--dry-run", "--preset", "llama-7b", "--workers", "1"]) == 0
    assert "6,738.4 M parameters" in capsys.readouterr().out


def test_forge_export_names_a_missing_run(tmp_path, capsys):
    from forge_ray.cli.main import main

    code = main(["export", "-c", str(DEMO_CONFIG), "--set", f"project.storage_root={tmp_path}", "--run", "nope"])
    err = capsys.readouterr().err
    assert code == 2 and "no run 'nope'" in err and "Traceback" not in err


def test_checkpoints_read_under_forge_names_and_export_in_the_recorded_dtype(tmp_path):
    """A checkpoint written before forge named its MoE parameters (DeepSpeed's module paths, no
    dtype) reads under forge's names and exports in float32; a recorded dtype is the export's."""
    import torch

    from forge_ray.train.checkpoint import checkpoint_dtype, read_checkpoint, write_checkpoint

    old = "layers.0.mlp.moe.deepspeed_moe.experts.deepspeed_experts.3.gate_proj.weight"
    router = "layers.0.mlp.moe.deepspeed_moe.gate.wg.weight"
    write_checkpoint(tmp_path, {n: torch.ones(2) for n in (old, router, "norm.weight")},
                     {f"{k}/{n}": torch.ones(2) for k in ("exp_avg", "exp_avg_sq") for n in (old, router)}, {"step": 4})
    weights, moments, state = read_checkpoint(tmp_path)
    assert set(weights) == {"layers.0.mlp.experts.3.gate_proj.weight", "layers.0.mlp.router.weight", "norm.weight"}
    assert "exp_avg_sq/layers.0.mlp.experts.3.gate_proj.weight" in moments
    assert checkpoint_dtype(state) == torch.float32
    assert checkpoint_dtype({**state, "dtype": "bfloat16"}) == torch.bfloat16
