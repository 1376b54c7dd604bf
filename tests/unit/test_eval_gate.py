"""The promotion gate: each rule passes or fails on its own and names itself when it fails."""

from __future__ import annotations

from forge_ray.config.eval import GateConfig
from forge_ray.eval.gate import apply_gate


def report(ppl: dict, suites=(), leaked=(), error=None):
    out = {"perplexity": {d: {"perplexity": p} for d, p in ppl.items()}, "error": error}
    if suites:
        out["kpi"] = {"suites": [{"name": n, "score": s, "threshold": t, "passed": s >= t} for n, s, t in suites],
                      "weighted_score": sum(s for _, s, _ in suites) / len(suites)}
    out["memorisation"] = {"canaries": 5, "leaked": list(leaked)}
    return out


BASE = {"version": "v1", "perplexity": {"docs": {"perplexity": 100.0}, "code": {"perplexity": 50.0}}}


def failed(decision):
    return [r["rule"] for r in decision["rules"] if not r["passed"]]


def test_first_version_passes_the_regression_rule_with_nothing_to_compare():
    d = apply_gate(GateConfig(), report({"docs": 900.0}), baseline=None)
    assert d["decision"] == "promote"
    assert "no promoted version" in d["rules"][0]["detail"]


def test_regression_beyond_the_limit_rejects_naming_the_domain():
    d = apply_gate(GateConfig(max_perplexity_regression_pct=5), report({"docs": 104.0, "code": 60.0}), BASE)
    assert d["decision"] == "reject" and failed(d) == ["max_perplexity_regression_pct"]
    assert "code 60.00 vs promoted v1 50.00 (+20.0%)" in d["reasons"][0]
    assert "docs" not in d["reasons"][0]
    better = apply_gate(GateConfig(max_perplexity_regression_pct=5), report({"docs": 104.0, "code": 40.0}), BASE)
    assert better["decision"] == "promote"


def test_absolute_ceiling_and_unknown_domain():
    gate = GateConfig(max_perplexity={"docs": 90.0}, max_perplexity_regression_pct=None)
    assert failed(apply_gate(gate, report({"docs": 95.0}))) == ["max_perplexity"]
    assert apply_gate(gate, report({"docs": 85.0}))["decision"] == "promote"
    d = apply_gate(GateConfig(max_perplexity={"dcos": 90.0}), report({"docs": 1.0}))
    assert "dcos: no such domain evaluated" in d["reasons"][0]


def test_suites_and_weighted_score():
    r = report({"docs": 1.0}, suites=[("support", 0.9, 0.8), ("format", 0.4, 0.5)])
    d = apply_gate(GateConfig(min_kpi_score=0.7), r)
    assert failed(d) == ["require_suites_pass", "min_kpi_score"]
    assert "format 0.400 < 0.5" in d["reasons"][0] and "support" not in d["reasons"][0]
    assert apply_gate(GateConfig(require_suites_pass=False), r)["decision"] == "promote"


def test_a_leaked_canary_rejects():
    d = apply_gate(GateConfig(), report({"docs": 1.0}, leaked=["T-00-00042"]))
    assert failed(d) == ["max_canary_leaks"] and "T-00-00042" in d["reasons"][0]
    assert apply_gate(GateConfig(max_canary_leaks=1), report({"docs": 1.0}, leaked=["x"]))["decision"] == "promote"


def test_an_evaluation_error_rejects_with_the_cause():
    d = apply_gate(GateConfig(), report({}, error="version does not load: bad safetensors"))
    assert d["decision"] == "reject" and failed(d) == ["evaluation"]
    assert "bad safetensors" in d["reasons"][0]
