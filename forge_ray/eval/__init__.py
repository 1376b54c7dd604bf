"""Evaluation and the promotion gate: what a version must show before it is served.

    from forge_ray.eval import evaluate_and_gate, load_suites, format_report
    report = evaluate_and_gate(config, "v3")     # evaluates, then promotes or rejects in the registry
    print(format_report(report))

- held-out perplexity per domain on the prepared dataset's eval split (Ray actors),
- the organisation's KPI suites (YAML; see docs/eval.md) through vLLM (offline or served),
- the memorisation check over the canaries planted in restricted sources,
- the gate's rules from `eval.gate`; the report is stored with the version as "eval".

The report's shape is `EvalReport` (TypedDicts in `forge_ray/eval/report.py`).
"""

from forge_ray.eval.model_files import EvalError
from forge_ray.eval.report import REPORT_NAME, EvalReport, GateDecision, format_report, read_report
from forge_ray.eval.run import evaluate_and_gate, evaluate_version
from forge_ray.eval.suites import Suite, SuiteError, load_suites

__all__ = [
    "REPORT_NAME",
    "EvalError",
    "EvalReport",
    "GateDecision",
    "Suite",
    "SuiteError",
    "evaluate_and_gate",
    "evaluate_version",
    "format_report",
    "load_suites",
    "read_report",
]
