"""`forge demo`'s optional SFT round (train.sft_round, docs/sft.md): the forge file it trains with is the
demo's, turned into an instruction-tuning run from the promoted version with pre-training data mixed in."""

from __future__ import annotations

import pytest

from forge_ray.config import load_config
from forge_ray.pipeline import sft_round_config
from forge_ray.storage import Storage
from forge_ray.testing.synthetic_dataset import write_synthetic_dataset
from tests.conftest import DEMO_CONFIG


def test_demo_sft_round_is_off_by_default():
    assert load_config(DEMO_CONFIG).train.sft_round.enabled is False


@pytest.mark.parametrize("share", [0.2, 0.0])
def test_sft_round_config_trains_from_the_base_on_chat_data_with_pretraining_mixed_in(tmp_path, share):
    demo = load_config(DEMO_CONFIG)
    demo.train.sft_round.pretrain_share = share
    pre = write_synthetic_dataset(Storage(str(tmp_path)), "demo", {"docs": 300, "code": 100})
    cfg = sft_round_config(demo, "/root/registry/demo-moe/v2", pre, "/root/suites/instructions.yaml", "demo-sft-x")
    assert [s.name for s in cfg.data.sources] == ["instructions"] and cfg.data.sources[0].is_conversational
    assert cfg.prepare.dataset == "demo-sft" and cfg.prepare.tokenizer.mode == "reuse"
    assert cfg.prepare.tokenizer.path == cfg.model.init_from == "/root/registry/demo-moe/v2"
    assert cfg.model.name == demo.model.name  # the same registry: gated against its base, hot-loaded
    assert cfg.train.objective == "sft" and cfg.train.steps == demo.train.sft_round.steps
    assert cfg.train.run_name == "demo-sft-x" and not cfg.synthesize.sources
    assert cfg.eval.suites == ["/root/suites/instructions.yaml"]
    if share:
        assert cfg.mixture.datasets == [f"demo@{pre.version}"]
        assert cfg.mixture.weights == pytest.approx({"instructions": 0.8, "docs": 0.15, "code": 0.05})
    else:
        assert cfg.mixture.datasets == [] and cfg.mixture.weights == {}
    assert cfg.serve == demo.serve


def test_sft_round_writes_the_instruction_set_and_a_chat_suite_that_loads(tmp_path):
    import json

    from forge_ray.eval import load_suites
    from forge_ray.pipeline import _write_sft_inputs

    demo = load_config(DEMO_CONFIG)
    demo.train.sft_round.records = 60
    storage = Storage(str(tmp_path))
    suite = load_suites([_write_sft_inputs(demo, storage)])[0]
    assert len(suite.cases) == demo.train.sft_round.kpi_cases
    assert all(c.chat and c.chat[-1]["role"] == "user" for c in suite.cases)
    lines = (tmp_path / "corpora" / "instructions" / "train.jsonl").read_text().splitlines()
    assert len(lines) == 60 and json.loads(lines[0])["messages"][-1]["role"] == "assistant"
