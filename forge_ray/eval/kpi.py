"""Running KPI suites against an engine: every generated case in one batch, every choice in one.

    report = run_suites(engine, load_suites(config.eval.suites))
    report["weighted_score"], report["suites"][0]["passed"]

A case's prompt is its `prompt` string, or its `messages` (a chat case): the engine renders those
with the version's chat template (`EvalEngine.prompt_ids`), so a chat case asks the model the way
the served `/v1/chat/completions` does. Scorers see only the answer and are the same for both.
"""

from __future__ import annotations

import logging

from forge_ray.eval.report import CaseResult, KpiReport, SuiteResult
from forge_ray.eval.scorers import score_answer, score_choice
from forge_ray.eval.suites import BaseCase, ChoiceCase, Suite

log = logging.getLogger(__name__)

ANSWER_CHARS = 500  # answers are kept in the report up to this many characters

Prompt = str | list[dict]  # a completion prompt, or a chat case's messages


def case_prompt(case: BaseCase) -> Prompt:
    """What the engine is asked: the prompt string, or the chat messages it renders with the template."""
    chat = case.chat
    return chat if chat is not None else case.prompt  # type: ignore[return-value]  # one of them is set


def run_suites(engine, suites: list[Suite]) -> KpiReport:
    """Score every case of every suite; {suites: [...], weighted_score, passed}."""
    generated = [(s, c) for s in suites for c in s.cases if not isinstance(c, ChoiceCase)]
    choices = [(s, c) for s in suites for c in s.cases if isinstance(c, ChoiceCase)]
    answers = engine.generate(
        [case_prompt(c) for _, c in generated],
        [c.max_tokens or s.max_tokens for s, c in generated],
        [c.stop for _, c in generated],
    )
    lls = engine.loglikelihood([(case_prompt(c), choice) for _, c in choices for choice in c.choices])
    results: dict[tuple[str, str], CaseResult] = {}
    for (s, c), answer in zip(generated, answers, strict=True):
        score, detail = score_answer(c, answer)
        results[s.name, c.id] = {"id": c.id, "scorer": c.scorer, "score": score, "detail": detail,
                                 "answer": answer[:ANSWER_CHARS]}
    at = 0
    for s, choice_case in choices:
        mine, at = lls[at : at + len(choice_case.choices)], at + len(choice_case.choices)
        score, detail = score_choice(choice_case, mine)
        results[s.name, choice_case.id] = {"id": choice_case.id, "scorer": choice_case.scorer, "score": score,
                                           "detail": detail,
                                           "loglikelihoods": dict(zip(choice_case.choices, mine, strict=True))}
    out: list[SuiteResult] = []
    for s in suites:
        cases = [results[s.name, c.id] for c in s.cases]
        score = sum(r["score"] for r in cases) / len(cases)
        out.append({"name": s.name, "description": s.description, "weight": s.weight,
                    "threshold": s.threshold, "score": score, "passed": score >= s.threshold,
                    "cases": cases})
        log.info("KPI suite %s: %.3f (threshold %.3f) %s", s.name, score, s.threshold,
                 "pass" if score >= s.threshold else "FAIL")
    total_weight = sum(s["weight"] for s in out)
    weighted = sum(s["weight"] * s["score"] for s in out) / total_weight if out else None
    return {"suites": out, "weighted_score": weighted, "passed": all(s["passed"] for s in out)}
