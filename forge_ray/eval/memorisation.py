"""Memorisation check: the canaries planted in restricted sources must not come back.

The planted file (written with the corpus: `{canaries: [{id, prefix, canary}]}`) names each
canary and the prefix it follows. Each canary is tried with two greedy prompts: the prefix
alone, and the record's own text before the canary (the last `context_chars` characters, up
to and including the prefix), which is what a model that memorised the record would continue.
A canary leaks when any answer contains it. The report says what was tried and what leaked;
it names canaries by id and keeps the canary strings themselves out of the report: in a stored
answer the canary (whole, or the leading characters it reproduced) is replaced by `<canary ID>`.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Literal

from forge_ray.eval.model_files import EvalError
from forge_ray.eval.report import CanaryAttempt, CanaryResult, MemorisationReport
from forge_ray.storage import url_to_fs

log = logging.getLogger(__name__)


def load_planted(uri: str) -> list[dict]:
    """The `canaries` list of a planted file; EvalError if it is missing or malformed."""
    try:
        fs, path = url_to_fs(uri)  # the store's settings from the environment (an s3:// root)
        planted = json.loads(fs.cat_file(path))
    except FileNotFoundError:
        raise EvalError(f"planted-canary file {uri} not found (eval.memorisation.planted_file)") from None
    except json.JSONDecodeError as e:
        raise EvalError(f"planted-canary file {uri} is not JSON: {e}") from None
    canaries = planted.get("canaries") if isinstance(planted, dict) else None
    if not isinstance(canaries, list) or not all(
        isinstance(c, dict) and {"id", "prefix", "canary"} <= set(c) for c in canaries
    ):
        raise EvalError(f"{uri}: expected {{canaries: [{{id, prefix, canary}}, ...]}}")
    return canaries


def _records(uri: str, fmt: str, text_field: str):
    """Texts of a jsonl or parquet source (other formats give no context)."""
    fs, path = url_to_fs(uri)
    files = sorted(p for p in (fs.find(path) if fs.isdir(path) else fs.glob(path)) if fs.isfile(p))
    for p in files:
        if fmt == "jsonl":
            with fs.open(p, "rt", encoding="utf-8", compression="infer") as f:
                for line in f:
                    if line.strip():
                        yield json.loads(line).get(text_field, "")
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            with fs.open(p, "rb") as f:
                yield from pq.read_table(f, columns=[text_field]).column(text_field).to_pylist()


def find_contexts(canaries: list[dict], source, storage_root: str, chars: int) -> dict[str, str]:
    """{canary id: the record text before the canary, ending with its prefix} for canaries found."""
    wanted = {c["id"]: (c["prefix"], f"{c['prefix']} {c['canary']}") for c in canaries}
    found: dict[str, str] = {}
    for text in _records(source.resolved_uri(storage_root), source.format, source.text_field):
        for cid, (prefix, needle) in wanted.items():
            at = text.find(needle) if cid not in found else -1
            if at >= 0:
                end = at + len(prefix)
                found[cid] = text[max(0, end - chars - len(prefix)) : end]
        if len(found) == len(wanted):
            break
    return found


def _matched_chars(answer: str, canary: str) -> int:
    """Characters of the canary the answer reproduces from its start (after leading spaces)."""
    got, n = answer.lstrip(), 0
    while n < min(len(got), len(canary)) and got[n] == canary[n]:
        n += 1
    return n


def _masked(answer: str, canary: str, cid: str, matched: int) -> str:
    """The answer with the canary's text taken out: the leading part it reproduced and every whole
    copy become `<canary ID>`, so the report says which canary leaked, never what it is."""
    mark = f"<canary {cid}>"
    rest = answer.lstrip()
    if matched:
        rest = mark + rest[matched:]
    return answer[: len(answer) - len(answer.lstrip())] + rest.replace(canary, mark)


def memorisation_check(engine, config, data_config, storage_root: str) -> MemorisationReport:
    """Prompt `engine` with every planted canary's prefixes; report tried prompts and leaks.

    `config` is `eval.memorisation`; `data_config` the forge file's `data` (for the context source).
    """
    uri = config.planted_file.replace("{storage_root}", storage_root.rstrip("/"), 1)
    canaries = load_planted(uri)
    contexts: dict[str, str] = {}
    if config.context_source and canaries:
        try:
            source = data_config.source(config.context_source)
        except KeyError:
            raise EvalError(f"eval.memorisation.context_source {config.context_source!r} is not a data "
                            f"source; sources are {data_config.names}") from None
        contexts = find_contexts(canaries, source, storage_root, config.context_chars)
    tried: list[tuple[int, Literal["prefix", "context"], str]] = []  # (canary index, kind, prompt)
    for i, c in enumerate(canaries):
        tried.append((i, "prefix", c["prefix"]))
        if c["id"] in contexts:
            tried.append((i, "context", contexts[c["id"]]))
    unique = sorted({p for _, _, p in tried})
    answers = dict(zip(unique, engine.generate(unique, [config.max_tokens] * len(unique),
                                               [[]] * len(unique)), strict=True))
    results: list[CanaryResult] = []
    for i, c in enumerate(canaries):
        attempts: list[CanaryAttempt] = []
        for j, kind, prompt in tried:
            if j == i:
                answer, matched = answers[prompt], _matched_chars(answers[prompt], c["canary"])
                attempts.append({"kind": kind, "prompt_chars": len(prompt),
                                 "answer": _masked(answer, c["canary"], c["id"], matched),
                                 "leaked": c["canary"] in answer, "matched_chars": matched})
        results.append({"id": c["id"], "canary_chars": len(c["canary"]), "attempts": attempts,
                        "leaked": any(a["leaked"] for a in attempts)})
    leaked = [r["id"] for r in results if r["leaked"]]
    log.info("memorisation: %d canaries, %d prompts, %d leaked %s", len(canaries), len(unique),
             len(leaked), leaked or "")
    return {"planted_file": os.path.basename(uri), "canaries": len(canaries), "prompts": len(unique),
            "leaked": leaked, "results": results}
