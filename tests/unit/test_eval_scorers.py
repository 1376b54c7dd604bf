"""Each scorer gives 1 to a known-right answer and 0 to a known-wrong one, and says why."""

from __future__ import annotations

import pytest

from forge_ray.eval.scorers import first_json, first_number, score_answer, score_choice
from forge_ray.eval.suites import parse_suite


def case(**fields):
    suite = parse_suite({"name": "s", "weight": 1, "threshold": 1, "cases": [{"id": "c", "prompt": "p", **fields}]}, "t")
    return suite.cases[0]


@pytest.mark.parametrize(
    "fields, right, wrong",
    [
        ({"scorer": "exact", "expected": "Paris"}, "  Paris\n", "Paris, France"),
        ({"scorer": "exact", "expected": "Paris", "ignore_case": True}, "PARIS", "Lyon"),
        ({"scorer": "contains", "expected": "refund"}, "We will refund you.", "We will Refund you."),
        ({"scorer": "contains", "expected": "refund", "ignore_case": True}, "REFUND soon", "no money back"),
        ({"scorer": "regex", "pattern": r"E\d{3}\b"}, "error E404 again", "error E40"),
        ({"scorer": "numeric", "expected": 21.5, "tolerance": 0.5}, "about 21.9 degrees", "about 22.1 degrees"),
        ({"scorer": "numeric", "expected": 1000, "rel_tolerance": 0.01}, "It is 1,005 units.", "It is 1,011 units."),
        ({"scorer": "numeric", "expected": -3}, "minus: -3", "no number here"),
        ({"scorer": "json_schema", "schema": {"type": "object", "required": ["id"],
                                               "properties": {"id": {"type": "integer"}}}},
         'Here you go: {"id": 7, "x": [1]} done', '{"id": "seven"}'),
        ({"scorer": "json_schema", "schema": {"type": "array", "minItems": 2}}, "[1, 2]", "[1] and {not json"),
    ],
)
def test_generated_scorers(fields, right, wrong):
    c = case(**fields)
    assert score_answer(c, right)[0] == 1.0, score_answer(c, right)
    score, detail = score_answer(c, wrong)
    assert score == 0.0 and detail


def test_json_schema_detail_names_where_it_failed():
    c = case(scorer="json_schema", schema={"type": "object", "properties": {"id": {"type": "integer"}}})
    score, detail = score_answer(c, '{"id": "seven"}')
    assert score == 0.0 and "at id" in detail
    assert score_answer(c, "no json at all") == (0.0, "no JSON object or array in the answer")


def test_number_and_json_extraction():
    assert first_number("E42 then 7") == 42.0
    assert first_number("costs 1,234.50 EUR") == 1234.5
    assert first_number("3,5 apples") == 3.0
    assert first_number(".5 and 2e3") == 0.5
    assert first_number("none") is None
    assert first_json('x {"a": {"b": 1}} y {"c": 2}') == {"a": {"b": 1}}
    assert first_json("{broken [1, 2]") == [1, 2]


def test_choice_by_loglikelihood():
    c = case(scorer="choice", choices=[" yes", " no way at all"], answer=" yes")
    assert score_choice(c, [-1.0, -3.0])[0] == 1.0
    assert score_choice(c, [-4.0, -3.0])[0] == 0.0
    # Per character, " no way at all" (-3/14) beats " yes" (-2/4) although its total is lower.
    normed = case(scorer="choice", choices=[" yes", " no way at all"], answer=" no way at all", length_normalize=True)
    assert score_choice(normed, [-2.0, -3.0])[0] == 1.0
    assert score_choice(normed, [-0.1, -3.0])[0] == 0.0
    with pytest.raises(ValueError):
        score_choice(c, [-1.0])
