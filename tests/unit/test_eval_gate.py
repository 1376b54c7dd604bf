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


def sft_report(score: float, ppl: float = 20.0):
    r = report({"instructions": ppl}, suites=[("chat", score, 0.0)])
    return r


def base_baseline(score: float | None, ppl: float = 40.0):
    kpi = None if score is None else {"suites": [{"name": "chat", "score": score, "threshold": 0.0, "passed": True}],
                                      "weighted_score": score}
    return {"version": "base-v1", "perplexity": {"instructions": {"perplexity": ppl}}, "measured": "now",
            "kind": "base", "kpi": kpi}


def test_sft_version_must_reach_its_base_kpi_plus_the_gain():
    gate = GateConfig(min_kpi_gain_over_base=0.1)
    better = apply_gate(gate, sft_report(0.6), base_baseline(0.3))
    assert better["decision"] == "promote"
    rule = next(r for r in better["rules"] if r["rule"] == "min_kpi_gain_over_base")
    assert rule["detail"] == "weighted score 0.600 >= base base-v1 0.300 +0.1"
    worse = apply_gate(gate, sft_report(0.35), base_baseline(0.3))
    assert worse["decision"] == "reject" and failed(worse) == ["min_kpi_gain_over_base"]
    assert "0.350 < base base-v1 0.300 +0.1" in worse["reasons"][0]
    # the perplexity rule names the base, not a promoted version
    ppl = next(r for r in better["rules"] if r["rule"] == "max_perplexity_regression_pct")
    assert "instructions 20.00 vs base base-v1 40.00" in ppl["detail"]


def test_base_kpi_rule_only_with_a_base_and_its_scores():
    gate = GateConfig()
    assert "min_kpi_gain_over_base" not in [r["rule"] for r in apply_gate(gate, sft_report(0.1), BASE)["rules"]]
    assert "min_kpi_gain_over_base" not in [r["rule"] for r in apply_gate(gate, sft_report(0.1),
                                                                          base_baseline(None))["rules"]]
    off = GateConfig(min_kpi_gain_over_base=None)
    assert apply_gate(off, sft_report(0.1), base_baseline(0.9))["decision"] == "promote"
    # the default gain 0: the SFT version may not score below its base
    assert failed(apply_gate(gate, sft_report(0.2), base_baseline(0.5))) == ["min_kpi_gain_over_base"]


def test_report_shows_the_version_beside_its_base():
    from forge_ray.eval.report import format_report

    r = {**sft_report(0.6), "model": "m", "version": "sft-v2", "baseline": base_baseline(0.3), "memorisation": None}
    r["perplexity"]["instructions"]["tokens"] = 100
    r["kpi"]["suites"][0].update(weight=1.0, threshold=0.5)
    r["gate"] = apply_gate(GateConfig(), r, r["baseline"])
    text = format_report(r)
    assert "perplexity instructions      20.00  over 100 tokens  (base base-v1: 40.00)" in text
    assert "suite chat                 0.600 (threshold 0.5, weight 1) pass  (base base-v1: 0.300)" in text
    assert "weighted KPI score 0.600  (base base-v1: 0.300)" in text


class FakeRegistry:
    def __init__(self, versions):
        self._versions = versions

    def versions(self):
        return list(self._versions)

    def version_path(self, version):
        return f"/root/registry/m/{version}"

    def get(self, version):
        from types import SimpleNamespace

        return SimpleNamespace(url=f"file:///root/registry/m/{version}")


def test_sft_base_is_the_init_from_version_or_folder():
    from forge_ray.config import load_config
    from forge_ray.eval.run import sft_base
    from tests.conftest import DEMO_CONFIG

    cfg = load_config(DEMO_CONFIG)
    registry = FakeRegistry(["v1", "v2"])
    assert sft_base(cfg, registry) is None  # pretraining: the promoted version is the baseline
    cfg.train.objective = "sft"
    assert sft_base(cfg, registry) is None  # from scratch: nothing to compare with
    cfg.model.init_from = "/root/registry/m/v2/"
    assert sft_base(cfg, registry) == ("v2", "file:///root/registry/m/v2")
    cfg.model.init_from = "/models/open-weights-base"
    assert sft_base(cfg, registry) == ("/models/open-weights-base", "/models/open-weights-base")
