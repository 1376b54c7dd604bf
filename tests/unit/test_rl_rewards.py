"""GRPO's prompts and rewards: KPI cases as prompts (suite or jsonl, chat or plain), the held-out
check, the step order of prompts, rewards from scorers, formats and functions, failing rewards."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from forge_ray.config import validate_config
from forge_ray.config.rl import RewardConfig
from forge_ray.corpora.verifiable import verifiable_cases, write_cases
from forge_ray.errors import ConfigError
from forge_ray.rl.prompts import PromptError, PromptOrder, check_held_out, load_prompt_cases, parse_cases
from forge_ray.rl.rewards import Reward


def _chat(q: str) -> list[dict]:
    return [{"role": "user", "content": q}]


CASES = [
    {"id": "a", "messages": _chat("Language?"), "scorer": "contains", "expected": "French", "ignore_case": True},
    {"id": "b", "prompt": "2 + 2 =", "scorer": "numeric", "expected": 4},
    {"id": "c", "prompt": "JSON:", "scorer": "json_schema",
     "schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}},
]


def test_cases_load_from_jsonl_and_from_a_suite(tmp_path):
    jl = tmp_path / "p.jsonl"
    jl.write_text("".join(json.dumps(c) + "\n" for c in CASES))
    suite = tmp_path / "p.yaml"
    suite.write_text(yaml.safe_dump({"name": "p", "weight": 1, "threshold": 0.5, "cases": CASES}))
    for path in (jl, suite):
        cases = load_prompt_cases(str(path))
        assert [c.id for c in cases] == ["a", "b", "c"]
        assert cases[0].messages == ({"role": "user", "content": "Language?"},) and cases[1].messages is None


def test_bad_cases_are_named_before_anything_starts(tmp_path):
    rows = [
        {"id": "x", "messages": [{"role": "wizard", "content": "hi"}], "scorer": "contains", "expected": "a"},
        {"id": "y", "messages": [*_chat("q"), {"role": "assistant", "content": "a"}], "scorer": "contains",
         "expected": "a"},
        {"id": "z", "prompt": "pick", "scorer": "choice", "choices": ["a", "b"], "answer": "a"},
        {"id": "w", "prompt": "p", "scorer": "contains"},
    ]
    with pytest.raises(PromptError) as e:
        parse_cases(rows, "p.jsonl")
    text = "\n".join(e.value.problems)
    assert "case x: messages: unknown_role" in text
    assert "case y: messages end with the assistant's turn" in text
    assert "case z: scorer 'choice'" in text
    assert "case w: contains.expected" in text
    with pytest.raises(PromptError, match="no file at"):
        load_prompt_cases(str(tmp_path / "missing.jsonl"))


def test_a_held_out_case_that_is_a_training_prompt_is_refused():
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from forge_ray.testing.tiny_versions import _tokenizer_json

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json()), eos_token="</s>")
    train = parse_cases(CASES, "train")
    check_held_out(train, parse_cases([{**CASES[1], "id": "other", "prompt": "3 + 3 ="}], "eval"), tok)
    with pytest.raises(PromptError, match="ask a training prompt"):
        check_held_out(train, parse_cases([{**CASES[0], "id": "same-question"}], "eval"), tok)


def test_step_k_always_gets_the_same_prompts_and_every_prompt_comes_once_per_epoch():
    order = PromptOrder(10, per_step=4, seed=3)
    seen = [i for k in range(5) for i in order.indices(k)]  # 20 positions = 2 epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert PromptOrder(10, per_step=4, seed=3).indices(3) == order.indices(3)
    assert PromptOrder(10, per_step=4, seed=4).indices(0) != order.indices(0)


def test_kpi_format_and_weighted_rewards():
    cases = parse_cases(CASES, "p")
    reward = Reward.from_config([RewardConfig(kind="kpi"), RewardConfig(kind="format", pattern=r"\S+", weight=0.5)])
    scored = reward.score(cases, ["french", "4", '{"id": "KI-1"}'])
    assert scored.totals == [1.5, 1.5, 1.0]  # the JSON answer has a space: no format reward
    scored = reward.score(cases, ["German", "five", "[ ]"])
    assert scored.totals == [0.5, 0.5, 0.0] and scored.failed == 0  # "[ ]": no JSON object, no format
    assert math.isclose(scored.by_term["format"], 2 / 3)


def bad_reward(completion: str, case: dict):
    return {"nan": float("nan"), "str": "high", "raise": None}.get(completion, 1.0) if completion != "raise" \
        else 1 / 0


def test_a_reward_that_raises_or_is_not_a_number_gives_no_reward_and_is_counted():
    cases = parse_cases([CASES[1]] * 1, "p") * 4
    reward = Reward.from_config([RewardConfig(kind="function", function=f"{__name__}:bad_reward")])
    scored = reward.score(cases, ["ok", "nan", "str", "raise"])
    assert scored.totals == [1.0, None, None, None]
    assert scored.failed == 3
    assert sum(scored.failures.values()) == 3 and any("ZeroDivisionError" in k for k in scored.failures)


def test_a_reward_function_that_cannot_be_imported_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot import function 'no_such_pkg.mod:fn'"):
        Reward.from_config([RewardConfig(kind="function", function="no_such_pkg.mod:fn")])
    with pytest.raises(ValueError, match="needs `pattern`"):
        RewardConfig(kind="format")


def _rl_config(**over):
    raw = {"project": {"name": "p", "storage_root": "/tmp/x"},
           "data": {"sources": [{"name": "d", "uri": "/tmp/x/d", "format": "text", "license": "internal",
                                     "sensitivity": "internal"}]},
           "model": {"init_from": "/tmp/x/base"},
           "train": {"objective": "grpo", "global_batch_size": 8, "micro_batch_size": 4},
           "rl": {"prompts": "/tmp/x/p.jsonl", "group_size": 4}}
    for key, value in over.items():
        section, _, field = key.partition(".")
        raw[section][field] = value
    return validate_config(raw, "rl.yaml")


def test_grpo_configs_are_checked_across_sections():
    assert _rl_config().rl.group_size == 4
    with pytest.raises(ConfigError, match=r"global_batch_size \(8\) must be a multiple of rl.group_size \(3\)"):
        _rl_config(**{"rl.group_size": 3})
    with pytest.raises(ConfigError, match="set model.init_from"):
        _rl_config(**{"model.init_from": None})


def test_verifiable_cases_are_scoreable_prompts_held_out_from_the_kpi_suite(tmp_path):
    path = write_cases(tmp_path / "rl.jsonl", verifiable_cases(50, seed=2))
    cases = load_prompt_cases(str(path))
    assert len(cases) == 50 and all(c.messages for c in cases)
    heldout = load_prompt_cases(str(write_cases(tmp_path / "kpi.jsonl", verifiable_cases(30, seed=1))))
    cases = load_prompt_cases(str(write_cases(tmp_path / "rl2.jsonl", verifiable_cases(50, 2, exclude=verifiable_cases(30, 1)))))
    assert not {json.dumps(c.messages) for c in cases} & {json.dumps(c.messages) for c in heldout}
