"""`instructions`: an instruction-tuning set built from the project's own embedded corpora.

    records = instruction_records(n=2000, seed=0)     # [{"id", "task", "messages"}], format: chat
    cases = heldout_cases(n=60, seed=1)               # [{"id", "task", "messages", "expected"}]
    write_instructions(path, n=2000, seed=0)          # one jsonl file, ready for `format: chat`

Tasks, each answered from the prompt alone (so a held-out case is a fair test of the skill, not of
memory):
- `ticket_language`: a support ticket (Kestrel Instruments, as in `tickets`) -> English / French / German
- `ticket_product`: the same kind of ticket -> the product it is about
- `ticket_priority`: a ticket's fields -> the value of its priority field
- `passage_kind`: a passage of the Python docs (`docs`) or of standard-library code (`code`) -> which one
- `code_function`: a code excerpt -> the name of the function it defines
- `ticket_lookup` (training only): a tool call `get_ticket`, its result, then the answer read from it

Tickets here carry no personal data: they are built from the ticket generator's product, problem,
context and request sentences, without the greeting and sign-off that hold a name.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from forge_ray.corpora import tickets as t

SYSTEM = "You are the support assistant of Kestrel Instruments. Answer briefly."
LANGUAGES = {"en": "English", "fr": "French", "de": "German"}
PRIORITIES = ("low", "normal", "high")
KPI_TASKS = ("ticket_language", "ticket_product", "ticket_priority", "passage_kind", "code_function")
_DEF = re.compile(r"^def ([A-Za-z_][A-Za-z0-9_]*)\(", re.M)


def _ticket(r: random.Random, lang: str, product: str) -> str:
    fill = {"n": r.randint(2, 90), "m": r.randint(0, 9), "month": r.choice(t.MONTHS)}
    if lang == "en":
        sentences = [f"{product[0].upper()}{product[1:]} {r.choice(t.PROBLEMS).format(**fill)}.",
                     *[c.format(**fill) for c in r.sample(t.CONTEXT, r.randint(1, 2))], r.choice(t.REQUESTS)]
    else:
        loc = t.LOCAL[lang]
        sentences = [loc["problem"].format(product=product),
                     *[c.format(**fill) for c in r.sample(loc["context"], r.randint(1, 2))], r.choice(loc["request"])]
    return " ".join(sentences)


class _Passages:
    """Short passages of the docs and code corpora, loaded once."""

    def __init__(self):
        from forge_ray.corpora.code import code_records
        from forge_ray.corpora.docs import docs_records

        self.docs = [d["text"] for d in docs_records() if len(d["text"]) > 300]
        self.code = [c["text"] for c in code_records(max_bytes=600_000)]
        self.functions = [(m.group(1), c[m.start(): m.start() + 220]) for c in self.code for m in _DEF.finditer(c)]

    def doc(self, r: random.Random) -> str:
        text = r.choice(self.docs)
        start = r.randrange(0, max(1, len(text) - 240))
        return " ".join(text[start: start + 240].split()[1:-1])

    def snippet(self, r: random.Random) -> str:
        text = r.choice(self.code)
        lines = text.splitlines()
        i = r.randrange(0, max(1, len(lines) - 8))
        return "\n".join(lines[i: i + 8])[:240]


def _case(task: str, r: random.Random, p: _Passages) -> tuple[list[dict], str]:
    """(the user turns, the expected answer) of one example of `task`."""
    if task in ("ticket_language", "ticket_product", "ticket_priority", "ticket_lookup"):
        lang = r.choice(list(LANGUAGES)) if task == "ticket_language" else r.choice(["en", "en", "fr", "de"])
        product = r.choice(t.PRODUCTS)
        body = _ticket(r, lang, product)
        tid = f"KI-{r.randint(1000, 9999)}"
        if task == "ticket_language":
            return [{"role": "user", "content": f"In which language is this ticket written?\n\n{body}"}], LANGUAGES[lang]
        if task == "ticket_product":
            return [{"role": "user", "content": f"Which product is this ticket about?\n\n{body}"}], product.removeprefix("the ")
        priority = r.choice(PRIORITIES)
        if task == "ticket_priority":
            fields = f"id: {tid}\npriority: {priority}\nproduct: {product}\nlanguage: {LANGUAGES[lang]}"
            return [{"role": "user", "content": f"What is the priority of this ticket?\n\n{fields}"}], priority
        return [{"role": "user", "content": f"What is the priority of ticket {tid}?"},
                {"role": "assistant", "content": None,
                 "tool_calls": [{"id": "call_0", "type": "function",
                                 "function": {"name": "get_ticket", "arguments": json.dumps({"id": tid})}}]},
                {"role": "tool", "tool_call_id": "call_0",
                 "content": json.dumps({"id": tid, "priority": priority, "product": product})}], priority
    if task == "passage_kind":
        if r.random() < 0.5:
            return [{"role": "user", "content": f"Is this passage documentation or code?\n\n{p.doc(r)}"}], "documentation"
        return [{"role": "user", "content": f"Is this passage documentation or code?\n\n{p.snippet(r)}"}], "code"
    name, snippet = r.choice(p.functions)
    return [{"role": "user", "content": f"What is the name of the function defined here?\n\n{snippet}"}], name


def _examples(n: int, seed: int, tasks: tuple[str, ...]) -> list[tuple[str, list[dict], str]]:
    r = random.Random(seed)
    p = _Passages()
    out = []
    for i in range(n):
        task = tasks[i % len(tasks)]
        turns, answer = _case(task, r, p)
        if r.random() < 0.3:
            turns = [{"role": "system", "content": SYSTEM}, *turns]
        out.append((task, turns, answer))
    return out


def instruction_records(n: int = 2000, seed: int = 0) -> list[dict]:
    """Chat records (`format: chat`): the user's turns and the assistant's answer, some with a
    system prompt, some a tool call and its result before the answer."""
    records = []
    for i, (task, turns, answer) in enumerate(_examples(n, seed, (*KPI_TASKS, "ticket_lookup"))):
        reply = (f"Ticket {json.loads(turns[-1]['content'])['id']} has priority {answer}."
                 if task == "ticket_lookup" else f"{answer}.")
        records.append({"id": f"sft-{seed}-{i:05d}", "task": task,
                        "messages": [*turns, {"role": "assistant", "content": reply}]})
    return records


def heldout_cases(n: int = 60, seed: int = 1) -> list[dict]:
    """KPI cases of the same tasks drawn with another seed: the conversation to answer and the
    expected answer (scored by `contains`, case-insensitive)."""
    return [{"id": f"kpi-{seed}-{i:04d}", "task": task, "messages": turns, "expected": answer}
            for i, (task, turns, answer) in enumerate(_examples(n, seed, KPI_TASKS))]


def write_instructions(path: str | Path, n: int = 2000, seed: int = 0) -> Path:
    """Write `instruction_records(n, seed)` as one jsonl file; its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in instruction_records(n, seed)))
    return path
