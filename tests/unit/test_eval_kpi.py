"""KPI suites and the memorisation check around an engine: a fake engine stands in for vLLM
here (the integration tests run the real one); the logic around it is what is tested."""

from __future__ import annotations

import json

from forge_ray.config import load_config
from forge_ray.eval.kpi import run_suites
from forge_ray.eval.memorisation import memorisation_check
from forge_ray.eval.suites import parse_suite


class FakeEngine:
    """Answers from a table; log-likelihood 0 for the continuation it 'knows', -5 otherwise."""

    def __init__(self, answers: dict[str, str], knows: dict[str, str] | None = None):
        self.answers, self.knows, self.calls = answers, knows or {}, []

    def generate(self, prompts, max_tokens, stop):
        self.calls.append(("generate", list(prompts), list(max_tokens)))
        return [self.answers.get(p, "") for p in prompts]

    def loglikelihood(self, requests):
        self.calls.append(("loglikelihood", list(requests)))
        return [0.0 if self.knows.get(ctx) == cont else -5.0 for ctx, cont in requests]


def suite(name, weight, threshold, cases, max_tokens=16):
    return parse_suite({"name": name, "weight": weight, "threshold": threshold, "max_tokens": max_tokens,
                        "cases": cases}, name)


def test_suites_score_weight_and_threshold():
    a = suite("a", 3, 0.5, [
        {"id": "x", "prompt": "2+2=", "scorer": "numeric", "expected": 4, "max_tokens": 4},
        {"id": "y", "prompt": "colour?", "scorer": "exact", "expected": "blue"},
        {"id": "z", "prompt": "pick", "scorer": "choice", "choices": [" a", " b"], "answer": " b"},
    ])
    b = suite("b", 1, 0.9, [{"id": "j", "prompt": "json", "scorer": "json_schema", "schema": {"type": "object"}}])
    engine = FakeEngine({"2+2=": " 4", "colour?": "red", "json": "[]"}, knows={"pick": " b"})
    out = run_suites(engine, [a, b])
    sa, sb = out["suites"]
    assert [c["score"] for c in sa["cases"]] == [1.0, 0.0, 1.0]
    assert sa["score"] == 2 / 3 and sa["passed"]
    assert sb["score"] == 0.0 and not sb["passed"]
    assert out["weighted_score"] == (3 * 2 / 3 + 0) / 4 and not out["passed"]
    # One batch of generation (per-case max_tokens, suite default otherwise), one of choices.
    assert engine.calls[0] == ("generate", ["2+2=", "colour?", "json"], [4, 16, 16])
    assert engine.calls[1] == ("loglikelihood", [("pick", " a"), ("pick", " b")])
    assert sa["cases"][2]["loglikelihoods"] == {" a": -5.0, " b": 0.0}


def config_at(root):
    from tests.conftest import DEMO_CONFIG

    cfg = load_config(DEMO_CONFIG)
    cfg.project.storage_root = str(root)
    return cfg


def test_memorisation_reports_the_canary_a_model_repeats(small_corpora):
    root, _ = small_corpora
    cfg = config_at(root)
    planted = json.loads((root / "corpora" / "tickets.planted.json").read_text())["canaries"]
    victim = planted[2]
    # The fake has 'memorised' one ticket: given that ticket's own text it continues with its canary.
    tickets = [json.loads(line) for line in (root / "corpora/tickets/tickets.jsonl").read_text().splitlines()]
    text = next(t["text"] for t in tickets if t["id"] == victim["id"])
    prefix_at = text.index(f"{victim['prefix']} {victim['canary']}") + len(victim["prefix"])
    context = text[prefix_at - 200 - len(victim["prefix"]) : prefix_at]

    class Memoriser(FakeEngine):
        def generate(self, prompts, max_tokens, stop):
            self.calls.append(list(prompts))
            return [f" {victim['canary']}. Please advise" if p == context else " nothing" for p in prompts]

    engine = Memoriser({})
    out = memorisation_check(engine, cfg.eval.memorisation, cfg.data, str(root))
    assert out["canaries"] == len(planted) >= 3
    assert out["leaked"] == [victim["id"]]
    # The shared prefix is asked once, plus one context prompt per canary found in the corpus.
    assert out["prompts"] == 1 + len(planted) and len(engine.calls[0]) == out["prompts"]
    hit = next(r for r in out["results"] if r["id"] == victim["id"])
    assert [a["kind"] for a in hit["attempts"]] == ["prefix", "context"]
    assert hit["attempts"][1]["leaked"] and hit["attempts"][1]["matched_chars"] == len(victim["canary"])
    assert not hit["attempts"][0]["leaked"]
    # The report names canaries by id; the canary strings stay out of it unless they leaked.
    others = json.dumps([r for r in out["results"] if r["id"] != victim["id"]])
    assert not any(c["canary"] in others for c in planted)


def test_partial_recall_is_measured_but_is_not_a_leak(small_corpora):
    root, _ = small_corpora
    cfg = config_at(root)
    cfg.eval.memorisation.context_source = None
    planted = json.loads((root / "corpora" / "tickets.planted.json").read_text())["canaries"]
    half = planted[0]["canary"][:9]
    out = memorisation_check(FakeEngine({planted[0]["prefix"]: f" {half}XX"}), cfg.eval.memorisation, cfg.data, str(root))
    assert out["leaked"] == [] and out["prompts"] == 1
    assert out["results"][0]["attempts"][0]["matched_chars"] == 9
