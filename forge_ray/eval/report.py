"""The eval report: its shape, where it is stored, and how a person reads it.

`run.evaluate_and_gate` builds it (the measurements of `run.evaluate_version`, the decision of
`gate.apply_gate`) and stores it as JSON with the version, `registry/<model>/_reports/<version>/eval.json`;
the run report (`forge_ray.report`), `forge eval`, `forge registry show` and the pipeline read it.
The TypedDicts below are that JSON: plain dicts at run time, key paths checked by a type checker.

    report = read_report(registry, "v3")                # EvalReport
    report["gate"]["decision"]                          # "promote" | "reject"
    report["perplexity"]["docs"]["perplexity"]          # measured keys are absent when `error` is set
    print(format_report(report))
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict, cast

REPORT_NAME = "eval"  # registry/<model>/_reports/<version>/eval.json


class DatasetRef(TypedDict):
    name: str
    version: str


class DomainPerplexity(TypedDict):
    """Held-out perplexity of one domain (source) on the eval split."""

    perplexity: float  # exp(nll_per_token)
    nll_per_token: float  # nats per scored token
    tokens: int  # scored tokens
    sequences: int  # packed sequences read


class CaseResult(TypedDict):
    id: str
    scorer: str
    score: float  # 0 or 1
    detail: str
    answer: NotRequired[str]  # generated cases: the answer, cut to kpi.ANSWER_CHARS
    loglikelihoods: NotRequired[dict[str, float]]  # choice cases: per choice


class SuiteResult(TypedDict):
    name: str
    description: str
    weight: float
    threshold: float
    score: float  # mean case score
    passed: bool  # score >= threshold
    cases: list[CaseResult]


class KpiReport(TypedDict):
    suites: list[SuiteResult]
    weighted_score: float | None  # None without suites
    passed: bool


class CanaryAttempt(TypedDict):
    kind: Literal["prefix", "context"]
    prompt_chars: int
    answer: str
    leaked: bool
    matched_chars: int  # leading characters of the canary the answer reproduced


class CanaryResult(TypedDict):
    id: str
    canary_chars: int
    attempts: list[CanaryAttempt]
    leaked: bool


class MemorisationReport(TypedDict):
    planted_file: str  # its base name
    canaries: int
    prompts: int  # distinct prompts sent
    leaked: list[str]  # canary ids
    results: list[CanaryResult]


class Baseline(TypedDict):
    """What the candidate is compared with on the same eval data: the promoted version's perplexity
    (the regression rule), or for an SFT version its base's (model.init_from) perplexity and KPI."""

    version: str  # a registry version id, or the base's folder when it is not one
    perplexity: dict[str, DomainPerplexity]
    measured: Literal["stored report", "now"]
    kind: NotRequired[Literal["promoted", "base"]]  # absent in older reports: "promoted"
    kpi: NotRequired[KpiReport | None]  # the base's scores on the candidate's suites (kind "base")


class GateRule(TypedDict):
    rule: str  # the `eval.gate` field it checks, or "evaluation"
    passed: bool
    detail: str


class GateDecision(TypedDict):
    decision: Literal["promote", "reject"]
    rules: list[GateRule]
    reasons: list[str]  # "<rule>: <detail>" of each failed rule


class Measurements(TypedDict, total=False):
    """What `evaluate_version` measured; `kpi` and `memorisation` only when either was asked for."""

    dataset: DatasetRef
    engine: str  # eval.engine.backend
    perplexity: dict[str, DomainPerplexity]  # by domain
    kpi: KpiReport | None
    memorisation: MemorisationReport | None
    duration_s: float


class _Identity(TypedDict):
    model: str
    version: str
    code_version: str
    evaluated: str  # ISO 8601, UTC
    perplexity_settings: dict[str, Any]  # eval.perplexity as evaluated
    gate_rules: dict[str, Any]  # eval.gate as applied
    error: str | None  # why the evaluation could not run (then the measurements are absent)


class UngatedReport(_Identity, Measurements):
    """The report as the gate reads it: everything but the decision."""

    baseline: Baseline | None  # None when nothing was promoted


class EvalReport(UngatedReport):
    """The eval report as stored with the version."""

    gate: GateDecision


def read_report(registry: Any, version: str) -> EvalReport:
    """The eval report stored with `version` (a `forge_ray.registry.Registry`'s version id)."""
    return cast(EvalReport, registry.report(version, REPORT_NAME))


def format_report(report: EvalReport) -> str:
    """A few readable lines: decision, perplexity per domain, KPI suites, canaries, rules."""
    gate = report.get("gate")
    decision = gate["decision"] if gate and "decision" in gate else "?"
    lines = [f"eval of {report.get('model')}/{report.get('version')} "
             f"({report.get('evaluated', '?')}): {decision.upper()}"]
    if report.get("error"):
        lines.append(f"  evaluation failed: {report['error']}")
    ds = report.get("dataset")
    if ds:
        lines.append(f"  dataset {ds['name']}/{ds['version']}")
    baseline = report.get("baseline")
    base = baseline["perplexity"] if baseline else {}
    kind = (baseline.get("kind") or "promoted") if baseline else ""
    for domain, r in (report.get("perplexity") or {}).items():
        vs = f"  ({kind} {baseline['version']}: {base[domain]['perplexity']:.2f})" if baseline and domain in base else ""
        lines.append(f"  perplexity {domain:10s} {r['perplexity']:10.2f}  over {r['tokens']} tokens{vs}")
    kpi = report.get("kpi")
    base_kpi = baseline.get("kpi") if baseline else None
    if kpi:
        base_scores = {s["name"]: s["score"] for s in base_kpi["suites"]} if base_kpi else {}
        for s in kpi["suites"]:
            vs = f"  ({kind} {baseline['version']}: {base_scores[s['name']]:.3f})" \
                if baseline and s["name"] in base_scores else ""
            lines.append(f"  suite {s['name']:20s} {s['score']:.3f} (threshold {s['threshold']:g}, "
                         f"weight {s['weight']:g}) {'pass' if s['passed'] else 'FAIL'}{vs}")
        vs = f"  ({kind} {baseline['version']}: {base_kpi['weighted_score']:.3f})" \
            if baseline and base_kpi and base_kpi["weighted_score"] is not None else ""
        lines.append(f"  weighted KPI score {kpi['weighted_score']:.3f}{vs}")
    mem = report.get("memorisation")
    if mem:
        leaked = ", ".join(mem["leaked"]) or "none"
        lines.append(f"  canaries: {mem['canaries']} tried with {mem['prompts']} prompts, leaked: {leaked}")
    for rule in gate.get("rules", []) if gate else []:
        lines.append(f"  [{'ok' if rule['passed'] else 'FAIL'}] {rule['rule']}: {rule['detail']}")
    return "\n".join(lines)
