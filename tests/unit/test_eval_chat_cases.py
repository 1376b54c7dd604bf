"""Chat-formatted KPI cases: a case may carry OpenAI `messages` instead of `prompt`; the engine renders
them with the version's chat template (its tokenizer's own, else forge's default) and the generation
prompt. Bad chat cases are a SuiteError naming the case."""

from __future__ import annotations

import pytest

from forge_ray.eval.generation import EvalEngine
from forge_ray.eval.kpi import run_suites
from forge_ray.eval.suites import SuiteError, parse_suite
from forge_ray.prepare.chat import DEFAULT_CHAT_TEMPLATE

CHAT = [{"role": "system", "content": "You triage Kestrel tickets."},
        {"role": "user", "content": "Priority of ticket 12?"}]


def suite(cases):
    return parse_suite({"name": "chat", "weight": 1, "threshold": 0.5, "max_tokens": 8, "cases": cases}, "chat.yaml")


def test_chat_case_parses_beside_a_completion_case():
    s = suite([{"id": "c", "messages": CHAT, "scorer": "contains", "expected": "high"},
               {"id": "p", "prompt": "2+2=", "scorer": "numeric", "expected": 4},
               {"id": "pick", "messages": CHAT, "scorer": "choice", "choices": ["high", "low"], "answer": "high"}])
    assert s.cases[0].chat == CHAT and s.cases[0].prompt is None
    assert s.cases[1].chat is None and s.cases[1].prompt == "2+2="
    assert s.cases[2].chat == CHAT


@pytest.mark.parametrize("case, expected", [
    ({"messages": [{"role": "robot", "content": "hi"}, {"role": "user", "content": "x"}]},
     "cases[0] (id 'bad').messages[0].role: unknown role 'robot'"),
    ({"messages": [{"role": "system", "content": "Be brief."}]}, "cases[0] (id 'bad'): messages have no user turn"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
     "cases[0] (id 'bad'): the last message is the assistant's"),
    ({"messages": CHAT, "prompt": "also"}, "cases[0] (id 'bad'): give `prompt` (a completion) or `messages`"),
    ({}, "cases[0] (id 'bad'): `prompt` (a completion) or `messages` (a chat) is required"),
    ({"messages": []}, "cases[0] (id 'bad').messages:"),
    ({"messages": [{"role": "user"}]}, "cases[0] (id 'bad').messages[0].content: required field is missing"),
    ({"messages": [{"role": "user", "content": "q", "name": "x"}]}, "(id 'bad').messages[0].name: unknown key"),
])
def test_bad_chat_case_is_named(case, expected):
    with pytest.raises(SuiteError) as e:
        suite([{"id": "bad", "scorer": "contains", "expected": "x", **case}])
    assert "chat.yaml" in str(e.value) and expected in str(e.value), str(e.value)


class FakeEngine:
    """Answers from a table keyed by the prompt (a chat is keyed by its last user turn)."""

    def __init__(self, answers):
        self.answers, self.prompts = answers, []

    def generate(self, prompts, max_tokens, stop):
        self.prompts += prompts
        return [self.answers[p if isinstance(p, str) else p[-1]["content"]] for p in prompts]

    def loglikelihood(self, requests):
        return [0.0 if cont == "high" else -3.0 for _, cont in requests]


def test_run_suites_hands_chat_messages_to_the_engine_and_scores_as_usual():
    s = suite([{"id": "c", "messages": CHAT, "scorer": "contains", "expected": "high"},
               {"id": "p", "prompt": "2+2=", "scorer": "numeric", "expected": 4},
               {"id": "pick", "messages": CHAT, "scorer": "choice", "choices": ["high", "low"], "answer": "high"}])
    engine = FakeEngine({"Priority of ticket 12?": "It is high.", "2+2=": " 4"})
    out = run_suites(engine, [s])
    assert engine.prompts == [CHAT, "2+2="]
    assert [c["score"] for c in out["suites"][0]["cases"]] == [1.0, 1.0, 1.0]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A small byte-level BPE as forge trains them (no chat template), saved as a folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["the ticket priority is high, user assistant system"] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                   bos_token="<|endoftext|>")
    path = tmp_path_factory.mktemp("tok")
    fast.save_pretrained(path)
    return path


class RecordingEngine(EvalEngine):
    """The real prompt building of EvalEngine; the ids it would send are recorded instead."""

    def __init__(self, tokenizer_dir):
        super().__init__(str(tokenizer_dir), max_model_len=512)
        self.sent = []

    def _generate_ids(self, prompts, max_tokens, stop):
        self.sent += prompts
        return ["" for _ in prompts]

    def _prompt_logprob_sums(self, prompts, starts):
        self.sent += [p[s:] for p, s in zip(prompts, starts, strict=True)]
        return [0.0 for _ in prompts]


def test_engine_renders_chat_with_forge_default_template_for_a_tokenizer_without_one(tokenizer_dir):
    engine = RecordingEngine(tokenizer_dir)
    engine.generate([CHAT], [8], [[]])
    text = engine.tokenizer.decode(engine.sent[0])
    assert text == "<|system|>\nYou triage Kestrel tickets.\n<|user|>\nPriority of ticket 12?\n<|assistant|>\n"
    expected = engine.tokenizer.apply_chat_template(CHAT, chat_template=DEFAULT_CHAT_TEMPLATE, tokenize=False,
                                                     add_generation_prompt=True)
    # no special token added in front: the rendering is what SFT trained on, token for token
    assert engine.sent[0] == engine.tokenizer(expected, add_special_tokens=False)["input_ids"]


def test_engine_uses_the_tokenizers_own_template_and_keeps_continuations_exact(tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}" \
                        "{% if add_generation_prompt %}[assistant] {% endif %}"
    tok.save_pretrained(tmp_path)
    engine = RecordingEngine(tmp_path)
    engine.generate([CHAT], [8], [[]])
    assert engine.tokenizer.decode(engine.sent[0]) == \
        "[system] You triage Kestrel tickets.\n[user] Priority of ticket 12?\n[assistant] "
    engine.loglikelihood([(CHAT, "high")])
    assert engine.sent[1] == engine.tokenizer("high", add_special_tokens=False)["input_ids"]
