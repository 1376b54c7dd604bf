"""Instruction-tuning data: conversations checked or quarantined, the assistant-only loss mask,
packing that keeps packed conversations apart (forge_ray/prepare/chat.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forge_ray.config.model import ModelConfig
from forge_ray.models import build_model
from forge_ray.prepare.chat import (
    DEFAULT_CHAT_TEMPLATE,
    check_messages,
    conversation,
    pack_conversations,
    render_masked,
    render_segments,
    template_of,
)


@pytest.fixture(scope="module")
def tokenizer():
    """A small byte-level BPE as forge trains them: no chat template of its own."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["the ticket priority is high, hello world user assistant tool"] * 50, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")


MULTI_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello?"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "And the ticket?"},
    {"role": "assistant", "content": "It is high."},
]
TOOL_CALL = [
    {"role": "user", "content": "Priority of KI-12?"},
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "c0", "type": "function", "function": {"name": "get_ticket", "arguments": {"id": "KI-12"}}}]},
    {"role": "tool", "tool_call_id": "c0", "content": '{"priority": "high"}'},
    {"role": "assistant", "content": "Ticket KI-12 has priority high."},
]


def _masked_text(tokenizer, messages) -> tuple[str, str]:
    template, _ = template_of(tokenizer)
    ids, mask = render_masked(check_messages(messages), tokenizer, template)
    return tokenizer.decode(ids[mask == 1].tolist()), tokenizer.decode(ids[mask == 0].tolist())


def test_forge_tokenizer_gets_the_documented_default_template(tokenizer):
    assert template_of(tokenizer) == (DEFAULT_CHAT_TEMPLATE, "default")


def test_mask_covers_exactly_the_assistant_turns_of_a_multi_turn_conversation(tokenizer):
    masked, rest = _masked_text(tokenizer, MULTI_TURN)
    assert masked == "Hi there<|endoftext|>It is high.<|endoftext|>"
    assert "Hello?" in rest and "Be brief." in rest and "<|assistant|>" in rest  # prompts and headers: not targets
    assert "Hi there" not in rest and "It is high." not in rest


def test_mask_covers_the_tool_call_and_the_answer_not_the_tool_result(tokenizer):
    masked, rest = _masked_text(tokenizer, TOOL_CALL)
    assert masked == ('<tool_call>{"name": "get_ticket", "arguments": "{\\"id\\": \\"KI-12\\"}"}</tool_call>'
                      "<|endoftext|>Ticket KI-12 has priority high.<|endoftext|>")
    assert '{"priority": "high"}' in rest and "<|tool|>" in rest


def test_the_masked_pieces_tile_the_template_rendering(tokenizer):
    template, _ = template_of(tokenizer)
    msgs = check_messages(TOOL_CALL)
    whole = tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False)
    assert "".join(text for text, _ in render_segments(msgs, tokenizer, template)) == whole


@pytest.mark.parametrize("record, reason", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "no_assistant_turn"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}, "unknown_role"),
    ({"messages": []}, "empty_conversation"),
    ({"messages": "hello"}, "empty_conversation"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "{}"},
                   {"role": "assistant", "content": "x"}]}, "tool_without_call"),
    ({"messages": [{"role": "user", "content": "hi"},
                   {"role": "assistant", "tool_calls": [{"function": {}}]}]}, "bad_tool_call"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                   {"role": "assistant", "content": "c"}]}, "system_not_first"),
    ({"messages": [{"role": "assistant", "content": "c"}]}, "no_user_turn_first"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "c"}]}, "bad_content"),
])
def test_malformed_conversations_are_quarantined_with_a_reason(record, reason):
    assert conversation(record, "chat") == (None, reason)


def test_instruction_records_become_a_user_and_an_assistant_turn():
    msgs, reason = conversation({"q": "2+2?", "a": "4", "sys": "Be exact."}, "instruction",
                                prompt_field="q", completion_field="a", system_field="sys")
    assert reason == "" and [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert conversation({"prompt": "2+2?", "completion": ""}, "instruction") == (None, "no_assistant_turn")
    assert conversation({"completion": "4"}, "instruction") == (None, "no_prompt")


def test_packing_keeps_conversations_whole_with_positions_restarting():
    a = (np.arange(1, 6, dtype=np.int32), np.array([0, 0, 1, 1, 1], np.int8))
    b = (np.arange(10, 14, dtype=np.int32), np.array([0, 1, 1, 0, 0][:4], np.int8))
    c = (np.arange(20, 27, dtype=np.int32), np.ones(7, np.int8))
    rows = pack_conversations([a, b, c], seq_len=10, pad_id=99)
    assert rows["input_ids"].tolist() == [[1, 2, 3, 4, 5, 10, 11, 12, 13, 99], [20, 21, 22, 23, 24, 25, 26, 99, 99, 99]]
    assert rows["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3, 0], [0, 1, 2, 3, 4, 5, 6, 0, 0, 0]]
    assert rows["loss_mask"].tolist() == [[0, 0, 1, 1, 1, 0, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]]
    assert rows["conversations"].tolist() == [2, 1]
    with pytest.raises(ValueError, match="does not fit"):
        pack_conversations([c], seq_len=6, pad_id=99)


def test_packed_conversations_do_not_see_each_other(tokenizer):
    template, _ = template_of(tokenizer)
    first = render_masked(check_messages(MULTI_TURN), tokenizer, template)
    second = render_masked(check_messages(TOOL_CALL), tokenizer, template)
    n1, n2 = len(first[0]), len(second[0])
    rows = pack_conversations([first, second], seq_len=n1 + n2 + 3, pad_id=tokenizer.pad_token_id)
    assert rows["conversations"].tolist() == [2]
    cfg = ModelConfig(vocab_size=len(tokenizer), hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                      ffn_hidden_size=48, max_seq_len=512)
    model = build_model(cfg, seed=0).eval()
    with torch.no_grad():
        packed = model(torch.from_numpy(rows["input_ids"]).long(), torch.from_numpy(rows["position_ids"]).long()).logits
        alone = [model(torch.from_numpy(ids[None]).long()).logits for ids, _ in (first, second)]
    torch.testing.assert_close(packed[0, :n1], alone[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed[0, n1:n1 + n2], alone[1][0], rtol=1e-5, atol=1e-5)
