"""The promotion gate: the rules of `eval.gate` applied to an eval report.

Each rule is named after its config field, so a rejection says which setting it broke:

    {"decision": "reject", "rules": [
        {"rule": "max_perplexity_regression_pct", "passed": false,
         "detail": "docs 41.20 vs promoted v3 30.10 (+36.9% > 5%)"}, ...],
     "reasons": ["max_perplexity_regression_pct: docs 41.20 vs promoted v3 ..."]}

The baseline is the promoted version, or for an SFT version its base (`kind: "base"`, the folder
`model.init_from` names): then the perplexity rule compares with the base, and
`min_kpi_gain_over_base` asks the SFT version's weighted KPI score to reach the base's plus the gain.
"""

from __future__ import annotations

from forge_ray.config.eval import GateConfig
from forge_ray.eval.report import Baseline, GateDecision, GateRule, UngatedReport


def _rule(rule: str, passed: bool, detail: str) -> GateRule:
    return {"rule": rule, "passed": bool(passed), "detail": detail}


def _perplexity_rules(gate: GateConfig, report: UngatedReport, baseline: Baseline | None) -> list[GateRule]:
    ppl = report.get("perplexity") or {}
    rules: list[GateRule] = []
    if gate.max_perplexity_regression_pct is not None:
        if baseline is None:
            rules.append(_rule("max_perplexity_regression_pct", True, "no promoted version to compare with"))
        else:
            limit = gate.max_perplexity_regression_pct
            kind = baseline.get("kind") or "promoted"
            worse: list[str] = []
            lines: list[str] = []
            for domain, r in ppl.items():
                base = baseline["perplexity"].get(domain)
                if base is None:
                    lines.append(f"{domain}: not measured for {baseline['version']}")
                    continue
                change = 100.0 * (r["perplexity"] / base["perplexity"] - 1.0)
                line = f"{domain} {r['perplexity']:.2f} vs {kind} {baseline['version']} {base['perplexity']:.2f} ({change:+.1f}%)"
                (worse if change > limit else lines).append(line)
            detail = "; ".join(worse) + f" > +{limit:g}%" if worse else "; ".join(lines)
            rules.append(_rule("max_perplexity_regression_pct", not worse, detail))
    if gate.max_perplexity:
        over = [f"{d} {ppl[d]['perplexity']:.2f} > {cap:g}" for d, cap in gate.max_perplexity.items()
                if d in ppl and ppl[d]["perplexity"] > cap]
        missing = [d for d in gate.max_perplexity if d not in ppl]
        detail = "; ".join(over + [f"{d}: no such domain evaluated" for d in missing]) or "every domain under its ceiling"
        rules.append(_rule("max_perplexity", not over and not missing, detail))
    return rules


def _base_kpi_rule(gate: GateConfig, score: float | None, baseline: Baseline | None) -> list[GateRule]:
    """An SFT version against its base on the same suites (nothing to compare: no rule)."""
    base_kpi = baseline.get("kpi") if baseline and baseline.get("kind") == "base" else None
    if gate.min_kpi_gain_over_base is None or baseline is None or not base_kpi or score is None:
        return []
    base_score = base_kpi["weighted_score"]
    if base_score is None:
        return []
    need = base_score + gate.min_kpi_gain_over_base
    ok = score >= need - 1e-9
    return [_rule("min_kpi_gain_over_base", ok, f"weighted score {score:.3f} {'>=' if ok else '<'} base "
                  f"{baseline['version']} {base_score:.3f} {gate.min_kpi_gain_over_base:+g}")]


def apply_gate(gate: GateConfig, report: UngatedReport, baseline: Baseline | None = None) -> GateDecision:
    """Decide promote / reject. `gate` is `eval.gate`; `baseline` is {version, perplexity} of the
    promoted version on the same eval data (for an SFT version: its base's, with `kpi`), or None when
    there is nothing to compare with."""
    error = report.get("error")
    if error:
        rules = [_rule("evaluation", False, error)]
    else:
        rules = _perplexity_rules(gate, report, baseline)
        kpi = report.get("kpi")
        if kpi and kpi["suites"]:
            if gate.require_suites_pass:
                failed = [f"{s['name']} {s['score']:.3f} < {s['threshold']:g}" for s in kpi["suites"] if not s["passed"]]
                rules.append(_rule("require_suites_pass", not failed,
                                   "; ".join(failed) or f"{len(kpi['suites'])} suite(s) at or above threshold"))
            score = kpi["weighted_score"]  # a number: there are suites
            if gate.min_kpi_score is not None and score is not None:
                ok = score >= gate.min_kpi_score
                rules.append(_rule("min_kpi_score", ok, f"weighted score {score:.3f} "
                                   f"{'>=' if ok else '<'} {gate.min_kpi_score:g}"))
            rules += _base_kpi_rule(gate, score, baseline)
        mem = report.get("memorisation")
        if mem is not None and gate.max_canary_leaks is not None:
            n = len(mem["leaked"])
            ok = n <= gate.max_canary_leaks
            detail = f"{n} of {mem['canaries']} canaries leaked" + (f": {', '.join(mem['leaked'])}" if n else "")
            rules.append(_rule("max_canary_leaks", ok, f"{detail} (allowed {gate.max_canary_leaks})"))
    passed = all(r["passed"] for r in rules)
    return {"decision": "promote" if passed else "reject", "rules": rules,
            "reasons": [f"{r['rule']}: {r['detail']}" for r in rules if not r["passed"]]}
