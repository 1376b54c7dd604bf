"""GRPO's prompts: KPI cases (a prompt or a chat conversation, and the scorer that checks the answer).

    cases = load_prompt_cases(uri)                      # [PromptCase]; PromptError naming each bad case
    ids = tokenize_prompts(cases, tokenizer)           # [[token ids]] rendered as the eval renders them
    order = PromptOrder(len(cases), per_step=8, seed=0)
    order.indices(step)                                 # the prompts of step k: the data cursor is the step

A `.yaml` / `.json` file is a KPI suite (eval/suites.py); a `.jsonl` file holds one case per line.
A case with `messages` is rendered with the model's chat template and a generation prompt (the
way `eval/chat_kpi.py` asks); a `prompt` is sent as is (the way KPI suites send completions).
Step k's prompts depend only on (seed, k): a run resumed at step k after a failure, at any world
size, trains on exactly the prompts it would have, none skipped or repeated.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from forge_ray.errors import ConfigError

CHAT_PLACEHOLDER = "(conversation)"  # the prompt a chat case validates with; rendering uses its messages


class PromptError(ConfigError):
    """The prompt source is missing, unreadable, or holds cases that cannot be scored."""


@dataclass(frozen=True)
class PromptCase:
    id: str
    case: object  # a KPI case (eval.suites: ExactCase | ContainsCase | RegexCase | NumericCase | JsonSchemaCase)
    messages: tuple[dict, ...] | None  # chat cases; None: `case.prompt` is the prompt

    def raw(self) -> dict:
        """The case as a plain dict (what a reward function receives)."""
        out = self.case.model_dump(by_alias=True)
        if self.messages is not None:
            out["messages"] = [dict(m) for m in self.messages]
            out.pop("prompt", None)
        return out


def _read_text(uri: str) -> str:
    from forge_ray.storage import url_to_fs

    try:
        fs, path = url_to_fs(uri)
        return fs.cat_file(path).decode("utf-8")
    except FileNotFoundError:
        raise PromptError("rl.prompts", [f"rl.prompts: no file at {uri}"]) from None
    except Exception as e:  # noqa: BLE001 - unreachable store, denied: the source cannot be read
        raise PromptError("rl.prompts", [f"rl.prompts: cannot read {uri}: {type(e).__name__}: {e}"]) from None


def _raw_cases(text: str, uri: str, field: str) -> list[dict]:
    import yaml

    if uri.endswith(".jsonl"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise PromptError(field, [f"{field}: {uri} line {n} is not JSON: {e.msg}"]) from None
        return rows
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PromptError(field, [f"{field}: {uri}: YAML syntax error: {e}"]) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cases"), list):
        raise PromptError(field, [f"{field}: {uri} is not a KPI suite (a mapping with `cases`)"])
    return raw["cases"]


def parse_cases(rows: list, source: str, field: str = "rl.prompts") -> list[PromptCase]:
    """Validate raw case dicts; every bad case named (id or line) in one PromptError."""
    from pydantic import TypeAdapter, ValidationError

    from forge_ray.eval.suites import Case, ChoiceCase
    from forge_ray.prepare.chat import ChatRecordError, check_messages

    adapter = TypeAdapter(Case)
    cases, problems, seen = [], [], set()
    for n, row in enumerate(rows, 1):
        where = f"{source} case {row.get('id', n) if isinstance(row, dict) else n}"
        if not isinstance(row, dict):
            problems.append(f"{where}: a case is a mapping, got {type(row).__name__}")
            continue
        row = dict(row)
        messages = row.pop("messages", None)
        if messages is not None:
            if isinstance(messages, list) and messages and isinstance(messages[-1], dict) \
                    and messages[-1].get("role") == "assistant":
                problems.append(f"{where}: messages end with the assistant's turn; the model must write it")
                continue
            try:  # checked as the conversation the answer will complete
                messages = tuple(check_messages([*messages, {"role": "assistant", "content": "?"}])[:-1])
            except (ChatRecordError, TypeError) as e:
                problems.append(f"{where}: messages: {e}")
                continue
            row.setdefault("prompt", CHAT_PLACEHOLDER)
        try:
            case = adapter.validate_python(row)
        except ValidationError as e:
            problems += [f"{where}: {'.'.join(map(str, err['loc'])) or 'case'}: {err['msg']}" for err in e.errors()]
            continue
        if isinstance(case, ChoiceCase):
            problems.append(f"{where}: scorer 'choice' ranks given continuations; a reward needs a scorer "
                            "of generated answers (exact, contains, regex, numeric, json_schema)")
            continue
        if case.id in seen:
            problems.append(f"{where}: id {case.id!r} is used twice")
            continue
        seen.add(case.id)
        cases.append(PromptCase(case.id, case, messages))
    if problems:
        raise PromptError(field, problems)
    if not cases:
        raise PromptError(field, [f"{field}: {source} holds no case"])
    return cases


def load_prompt_cases(uri: str, field: str = "rl.prompts") -> list[PromptCase]:
    return parse_cases(_raw_cases(_read_text(uri), uri, field), uri, field)


def prompt_text(case: PromptCase, tokenizer) -> str:
    """What the model is asked: a conversation rendered with its chat template, or the prompt as is."""
    if case.messages is None:
        return case.case.prompt
    from forge_ray.prepare.chat import render, template_of

    template, _ = template_of(tokenizer)
    return render(tokenizer, template, case.messages, generation_prompt=True)


def tokenize_prompts(cases: list[PromptCase], tokenizer) -> list[list[int]]:
    """Token ids of each case's prompt. A chat template's rendering already holds its special tokens."""
    return [tokenizer(prompt_text(c, tokenizer), add_special_tokens=c.messages is None)["input_ids"]
            for c in cases]


def check_held_out(train: list[PromptCase], held_out: list[PromptCase], tokenizer) -> None:
    """The gate's suite must be held out: no case whose rendered prompt is a training prompt."""
    seen = {prompt_text(c, tokenizer) for c in train}
    leaked = [c.id for c in held_out if prompt_text(c, tokenizer) in seen]
    if leaked:
        raise PromptError("rl.eval_suite", [
            f"rl.eval_suite: {len(leaked)} case(s) ask a training prompt of rl.prompts (e.g. {leaked[:3]}); "
            "the held-out suite must not contain them"])


class PromptOrder:
    """Which prompts each step trains on: a reshuffle of all prompts per epoch, seeded by (seed, epoch).
    Step k takes positions [k x per_step, (k + 1) x per_step) of the endless sequence of epochs."""

    def __init__(self, num_prompts: int, per_step: int, seed: int):
        if num_prompts < 1:
            raise ValueError("no prompts")
        self.n, self.per_step, self.seed = num_prompts, per_step, seed

    def _epoch(self, epoch: int) -> list[int]:
        order = list(range(self.n))
        random.Random(f"{self.seed}/{epoch}").shuffle(order)
        return order

    def indices(self, step: int) -> list[int]:
        start = step * self.per_step
        out = []
        for pos in range(start, start + self.per_step):
            epoch, i = divmod(pos, self.n)
            out.append(self._epoch(epoch)[i])
        return out
