"""Scorers: does an answer satisfy a case? Pure functions, 1.0 (right) or 0.0 (wrong).

Generated cases are scored from the answer text (`score_answer`); multiple-choice cases from
the log-likelihood of each choice (`score_choice`). Each returns (score, detail) where detail
says why, for the report.
"""

from __future__ import annotations

import json
import re

from forge_ray.eval.suites import (
    ChoiceCase,
    ContainsCase,
    ExactCase,
    JsonSchemaCase,
    NumericCase,
    RegexCase,
)

_NUMBER = re.compile(r"[-+]?(?:\d+(?:[.,]\d+)*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")


def first_number(text: str) -> float | None:
    """The first number written in `text` ('1,234.5' -> 1234.5), or None."""
    m = _NUMBER.search(text)
    if not m:
        return None
    token = m.group(0)
    # A comma is a thousands separator only in front of exactly three digits ("1,234").
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", token):
        token = token.replace(",", "")
    else:
        token = token.split(",")[0]
    try:
        return float(token)
    except ValueError:
        return None


def first_json(text: str):
    """The first JSON object or array in `text` (answers often carry text around it).

    Raises ValueError when there is none.
    """
    decoder = json.JSONDecoder()
    for m in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, m.start())
            return value
        except json.JSONDecodeError:
            continue
    raise ValueError("no JSON object or array in the answer")


def score_answer(case, answer: str) -> tuple[float, str]:
    """Score a generated answer against an exact / contains / regex / numeric / json_schema case."""
    if isinstance(case, ExactCase):
        got, want = answer.strip(), case.expected.strip()
        if case.ignore_case:
            got, want = got.casefold(), want.casefold()
        return (1.0, "exact match") if got == want else (0.0, f"expected {case.expected.strip()!r}")
    if isinstance(case, ContainsCase):
        got, want = (answer.casefold(), case.expected.casefold()) if case.ignore_case else (answer, case.expected)
        return (1.0, "contains expected") if want in got else (0.0, f"does not contain {case.expected!r}")
    if isinstance(case, RegexCase):
        m = re.search(case.pattern, answer, re.IGNORECASE if case.ignore_case else 0)
        return (1.0, f"matched {m.group(0)!r}") if m else (0.0, f"no match for /{case.pattern}/")
    if isinstance(case, NumericCase):
        value = first_number(answer)
        if value is None:
            return 0.0, "no number in the answer"
        allowed = max(case.tolerance, case.rel_tolerance * abs(case.expected))
        diff = abs(value - case.expected)
        ok = diff <= allowed
        return (1.0 if ok else 0.0), f"got {value:g}, expected {case.expected:g} +/- {allowed:g}"
    if isinstance(case, JsonSchemaCase):
        import jsonschema

        try:
            value = first_json(answer)
        except ValueError as e:
            return 0.0, str(e)
        validator = jsonschema.validators.validator_for(case.json_schema)(case.json_schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            return 0.0, f"JSON does not match the schema at {where}: {error.message}"
        return 1.0, "valid JSON matching the schema"
    raise TypeError(f"score_answer cannot score a {type(case).__name__}")


def score_choice(case: ChoiceCase, loglikelihoods: list[float]) -> tuple[float, str]:
    """Right when the answer is the choice the model finds most likely (ties go to the first)."""
    if len(loglikelihoods) != len(case.choices):
        raise ValueError(f"{len(loglikelihoods)} log-likelihoods for {len(case.choices)} choices")
    ranked = [
        ll / max(1, len(choice)) if case.length_normalize else ll
        for choice, ll in zip(case.choices, loglikelihoods, strict=True)
    ]
    best = max(range(len(ranked)), key=lambda i: (ranked[i], -i))
    picked = case.choices[best]
    detail = f"picked {picked!r} (log-likelihood {loglikelihoods[best]:.3f})"
    return (1.0 if picked == case.answer else 0.0), detail
