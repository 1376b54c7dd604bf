"""The eval report as a person reads it (`forge eval`, `forge registry show`)."""

from __future__ import annotations


def format_report(report: dict) -> str:
    """A few readable lines: decision, perplexity per domain, KPI suites, canaries, rules."""
    gate = report.get("gate") or {}
    lines = [f"eval of {report.get('model')}/{report.get('version')} "
             f"({report.get('evaluated', '?')}): {gate.get('decision', '?').upper()}"]
    if report.get("error"):
        lines.append(f"  evaluation failed: {report['error']}")
    ds = report.get("dataset")
    if ds:
        lines.append(f"  dataset {ds['name']}/{ds['version']}")
    base = (report.get("baseline") or {}).get("perplexity") or {}
    for domain, r in (report.get("perplexity") or {}).items():
        vs = f"  (promoted {report['baseline']['version']}: {base[domain]['perplexity']:.2f})" if domain in base else ""
        lines.append(f"  perplexity {domain:10s} {r['perplexity']:10.2f}  over {r['tokens']} tokens{vs}")
    kpi = report.get("kpi")
    if kpi:
        for s in kpi["suites"]:
            lines.append(f"  suite {s['name']:20s} {s['score']:.3f} (threshold {s['threshold']:g}, "
                         f"weight {s['weight']:g}) {'pass' if s['passed'] else 'FAIL'}")
        lines.append(f"  weighted KPI score {kpi['weighted_score']:.3f}")
    mem = report.get("memorisation")
    if mem:
        leaked = ", ".join(mem["leaked"]) or "none"
        lines.append(f"  canaries: {mem['canaries']} tried with {mem['prompts']} prompts, leaked: {leaked}")
    for r in gate.get("rules", []):
        lines.append(f"  [{'ok' if r['passed'] else 'FAIL'}] {r['rule']}: {r['detail']}")
    return "\n".join(lines)
