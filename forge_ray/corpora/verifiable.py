"""`verifiable`: KPI cases of the embedded instruction tasks, for GRPO's prompts and its held-out gate.

    heldout = verifiable_cases(n=60, seed=1)
    cases = verifiable_cases(n=200, seed=2, exclude=heldout)   # [{"id", "task", "messages", "scorer", ...}]
    write_cases(path, cases)                          # one case per line: rl.prompts / a KPI suite source

Each case is a conversation from `instructions` (a ticket's language, product or priority, a
passage's kind, a function's name) with the answer checked by the KPI scorer `regex`: the whole
answer must be the expected one (case-insensitive): a reward that needs no judge and that a
policy cannot game by naming every option. Draw training prompts and the held-out suite
with different seeds (`heldout_cases` uses seed 1); GRPO refuses a held-out case that is also a
training prompt.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from forge_ray.corpora.instructions import heldout_cases

MAX_TOKENS = 8  # every answer is a word or two


def verifiable_cases(n: int = 200, seed: int = 2, exclude: list[dict] = ()) -> list[dict]:
    """`n` cases drawn with `seed`, less any whose conversation is one of `exclude`'s (a few short
    code excerpts recur across seeds: training prompts must not include a held-out case)."""
    held = {json.dumps(c["messages"], sort_keys=True) for c in exclude}
    return [{"id": c["id"].replace("kpi-", "rl-"), "task": c["task"], "messages": c["messages"],
             "scorer": "regex", "pattern": answer_pattern(c["expected"]), "ignore_case": True, "max_tokens": MAX_TOKENS}
            for c in heldout_cases(n, seed) if json.dumps(c["messages"], sort_keys=True) not in held]


def answer_pattern(expected: str) -> str:
    """The whole answer is the expected one (a final period allowed): listing every option, which a
    `contains` reward would pay for, scores 0."""
    return rf"^\s*{re.escape(expected)}\.?\s*$"


def write_cases(path: str | Path, cases: list[dict]) -> Path:
    """Cases as jsonl (the `task` label dropped: a KPI case has no such field)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{k: v for k, v in c.items() if k != "task"} for c in cases]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path
