"""The run report: one self-contained HTML file (inline SVG plots, no scripts, nothing fetched).

    from forge_ray.report.render import write_report
    write_report("report.html", metrics=read_metrics(run_dir), mixture=plan.to_json(),
                 realised={"docs": 812, "code": 640}, eval_report=report, lineage=manifest["lineage"],
                 title="demo-moe v3")

Inputs are plain data, in the formats the rooms already write (each may be None or empty; its
section then says what is missing instead of plotting):
- `metrics`: per-step dicts with `step`, `loss` and either `loss_by_source: {domain: loss}` /
  `expert_tokens: [n per expert]` (`expert_tokens_by_layer`: [[...]]) as the train room's
  metrics.jsonl has them, or flat keys `loss/<domain>` and `experts/<i>`.
- `mixture`: the mixture plan's `to_json()` (`sources: [{name, target_share, expected_share}]`),
  or `{"target": {name: share}, "expected": {...}}`.
- `realised`: what training consumed per source (counts or shares; normalised here).
- `eval_report`: the eval report (`forge_ray.eval.report.EvalReport`: `perplexity: {domain:
  {perplexity}}`, `baseline: {version, perplexity}`, `kpi: {suites: [{name, score, threshold}]}`,
  `gate: {decision}`); `previous_eval`: the previous version's eval report, for its KPI scores.
- `lineage`: the served version's lineage (`dataset`, `dataset_version`, `input_hashes`, `config`,
  `run`), as in the exported version's manifest.
- `synthetic`: per synthetic source (`version_report.synthetic_sections`): `source`, `name`,
  `strategy`, `trained`, `counts`, `max_shared_ngram_tokens`, `ngram_tokens`, `distance`, and
  `pairs` [{redacted, synthetic}]: synthetic samples beside the redacted form of their restricted
  record (placeholders only; the report never shows a restricted value).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from forge_ray.config.redact import redact_tree
from forge_ray.eval.report import EvalReport, SuiteResult
from forge_ray.report import plots

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .5rem 0; } td, th { padding: .2rem .8rem; text-align: left;
 border-bottom: 1px solid #eee; vertical-align: top; } code, pre { font-size: .85rem; }
pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; max-height: 30rem; }
img.plot { max-width: 100%; height: auto; display: block; } .missing { color: #888; font-style: italic; }
"""


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) else None


def _domain_losses(record: Mapping[str, Any]) -> dict[str, Any]:
    per = dict(record.get("loss_by_source") or {})
    per.update({k.split("/", 1)[1]: v for k, v in record.items() if k.startswith("loss/")})
    return per


def loss_series(metrics: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[float], dict[str, list[float | None]]]:
    """Steps, total loss and loss per domain (None where a step has no sample of that domain)."""
    rows = sorted((m for m in metrics if _num(m.get("loss")) is not None and "step" in m), key=lambda r: r["step"])
    domains: dict[str, list[float | None]] = {d: [] for m in rows for d in _domain_losses(m)}
    steps, total = [], []
    for m in rows:
        per = _domain_losses(m)
        steps.append(int(m["step"]))
        total.append(float(m["loss"]))
        for d, values in domains.items():
            values.append(_num(per.get(d)))
    return steps, total, domains


def expert_totals(metrics: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[list[int]] | None]:
    """Routed tokens per expert summed over steps (and per layer where recorded)."""
    totals: list[int] = []
    layers: list[list[int]] | None = None
    for m in metrics:
        counts = m.get("expert_tokens")
        if counts is None:
            flat = {int(k.split("/", 1)[1]): v for k, v in m.items() if k.startswith("experts/") and k[8:].isdigit()}
            counts = [flat[i] for i in sorted(flat)] if flat else None
        if counts:
            totals = [a + int(b) for a, b in zip(totals or [0] * len(counts), counts, strict=True)]
        by_layer = m.get("expert_tokens_by_layer")
        if by_layer:
            layers = layers or [[0] * len(row) for row in by_layer]
            layers = [[a + int(b) for a, b in zip(r0, r1, strict=True)] for r0, r1 in zip(layers, by_layer, strict=True)]
    return totals, layers


def mixture_shares(mixture: dict | None, realised: dict | None) -> tuple[list[str], dict[str, list[float | None]]]:
    mixture = mixture or {}
    if "sources" in mixture:
        target = {s["name"]: s.get("target_share") for s in mixture["sources"]}
        expected = {s["name"]: s.get("expected_share") for s in mixture["sources"]}
    else:
        target, expected = dict(mixture.get("target") or {}), dict(mixture.get("expected") or {})
    real_total = sum(float(v) for v in (realised or {}).values()) or 1.0
    real = {k: float(v) / real_total for k, v in (realised or {}).items()}
    names = list(dict.fromkeys([*target, *expected, *real]))
    series = {"target": [_num(target.get(n)) for n in names]}
    if any(v is not None for v in expected.values()):
        series["planned (after caps)"] = [_num(expected.get(n)) for n in names]
    if real:
        series["realised"] = [real.get(n) for n in names]
    return names, series


def _field(record: Mapping[str, Any] | None, key: str) -> Any:
    return record.get(key) if record else None


def _suites(report: EvalReport | None) -> list[SuiteResult]:
    kpi = report.get("kpi") if report else None
    return kpi.get("suites", []) if kpi else []


def eval_series(report: EvalReport, previous: EvalReport | None):
    base = report.get("baseline")
    base_ppl = (base.get("perplexity") if base else None) or {}
    this = report.get("perplexity") or {}
    domains = list(this)
    label = str(report.get("version") or "this version")
    ppl = {label: [_num(_field(this[d], "perplexity")) for d in domains]}
    # the baseline is the promoted version, or an SFT version's base (eval/report.py `Baseline.kind`)
    base_label = f"{'base' if (base or {}).get('kind') == 'base' else 'previous'} ({(base or {}).get('version', '?')})"
    if base and base_ppl:
        ppl[base_label] = [_num(_field(base_ppl.get(d), "perplexity")) for d in domains]
    suites_now = {s["name"]: s for s in _suites(report)}
    suites_prev = {s["name"]: s for s in _suites(previous)}
    names = list(suites_now)
    suites: dict[str, Any] = {"names": names, "scores": {label: [_num(suites_now[n].get("score")) for n in names]}}
    if (base or {}).get("kind") == "base" and base.get("kpi"):  # an SFT version: its base's scores, same suites
        base_suites = {s["name"]: s for s in base["kpi"].get("suites", [])}
        suites["scores"][base_label] = [_num(_field(base_suites.get(n), "score")) for n in names]
    elif previous and suites_prev:
        suites["scores"][f"previous ({previous.get('version', '?')})"] = [
            _num(_field(suites_prev.get(n), "score")) for n in names
        ]
    suites["thresholds"] = [_num(suites_now[n].get("threshold")) for n in names]
    return domains, ppl, suites


def _figure(plot_id: str, uri: str, caption: str) -> str:
    return (f'<figure><img class="plot" id="plot-{plot_id}" alt="{html.escape(caption)}" src="{uri}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _missing(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _lineage_section(lineage: dict | None) -> str:
    if not lineage:
        return _missing("no lineage given (the served version's manifest has it under 'lineage')")
    keys = ("model", "version", "dataset", "dataset_version", "run", "checkpoint_step", "tokens_seen", "mixture_plan_id")
    rows = [(k, lineage[k]) for k in keys if lineage.get(k) is not None and not isinstance(lineage[k], dict | list)]
    out = [_table(rows)]
    hashes = lineage.get("input_hashes") or {}
    if hashes:
        flat = _flatten_hashes(hashes)
        out.append("<h3>Input files</h3><table><tr><th>file</th><th>sha256</th></tr>" + "".join(
            f"<tr><td><code>{html.escape(k)}</code></td><td><code>{html.escape(str(v))}</code></td></tr>"
            for k, v in flat) + "</table>")
    if lineage.get("config"):
        # Hashes for deny-list terms and patterns, also for versions exported before export redacted them.
        text = yaml.safe_dump(redact_tree(lineage["config"]), sort_keys=False)
        out.append(f"<h3>Config</h3><pre id=\"lineage-config\">{html.escape(text)}</pre>")
    return "".join(out)


def _synthetic_section(synthetic: Sequence[Mapping[str, Any]] | None) -> str:
    if not synthetic:
        return _missing("no synthetic source in this version's dataset (synthesize.sources is empty)")
    out = []
    for s in synthetic:
        c = s.get("counts") or {}
        dropped = ", ".join(f"{k} {v}" for k, v in (c.get("dropped") or {}).items()) or "none"
        dist = s.get("distance") or {}
        out.append(f"<h3 id=\"synthetic-{html.escape(str(s.get('source')))}\">{html.escape(str(s.get('name')))} "
                   f"&larr; {html.escape(str(s.get('source')))} ({html.escape(str(s.get('strategy')))})</h3>")
        out.append(_table([
            ("trained on by this version", "yes" if s.get("trained") else "no"),
            ("restricted records", c.get("records", "?")),
            ("samples kept / generated", f"{c.get('kept', '?')} / {c.get('samples', '?')}"),
            ("dropped, by first failed check", dropped),
            ("longest token run shared with a restricted record",
             f"{s.get('max_shared_ngram_tokens', '?')} (limit: under {s.get('ngram_tokens', '?')})"),
            ("distance to the closest restricted record (median / min)",
             f"{dist.get('p50', '?')} / {dist.get('p00', '?')}" if dist.get("count") else "?"),
        ]))
        pairs = s.get("pairs") or []
        if pairs:
            rows = "".join(f"<tr><td><pre>{html.escape(str(p.get('redacted', '')))}</pre></td>"
                           f"<td><pre>{html.escape(str(p.get('synthetic', '')))}</pre></td></tr>" for p in pairs)
            out.append('<table class="synthetic-pairs"><tr><th>restricted record, redacted</th>'
                       f"<th>synthetic sample</th></tr>{rows}</table>")
        else:
            out.append(_missing("no preview pairs (no sample kept, or a synthesis written before previews)"))
    return "".join(out)


def _rl_section(rl: Mapping[str, Any] | None) -> str:
    """GRPO's reward, KL and length curves and its held-out gate against the base."""
    if not rl:
        return _missing("not an RL version (train.objective is not grpo)")
    rows = sorted((m for m in rl.get("metrics", []) if "reward_mean" in m), key=lambda r: r["step"])
    out = []
    if rows:
        out.append(_figure("rl", plots.rl_plot([r["step"] for r in rows], [r["reward_mean"] for r in rows],
                                               [r.get("kl", 0.0) for r in rows], [r["response_len"] for r in rows]),
                           "reward, KL and completion length per step"))
        last = rows[-1]
        out.append(_table([("steps", len(rows)), ("final mean reward", f"{last['reward_mean']:.3f}"),
                           ("rewards that failed", sum(r.get("reward_failed", 0) for r in rows)),
                           ("weight sync per step (median)",
                            f"{sorted(r['sync_s'] for r in rows)[len(rows) // 2] * 1e3:.0f} ms"),
                           ("rollout / trainer log-prob gap (max)", f"{max(r['logprob_gap'] for r in rows):.2e}")]))
    else:
        out.append(_missing("no GRPO metrics found for the run"))
    gate = rl.get("gate")
    if gate:
        out.append(_table([("held-out suite", gate.get("suite")), ("cases", gate.get("cases")),
                           ("base KPI", f"{gate['base']:.3f}"), ("RL KPI", f"{gate['rl']:.3f}"),
                           ("gain", f"{gate['delta']:+.3f}"), ("decision", gate.get("decision"))]))
    else:
        out.append(_missing("no held-out gate (rl.eval_suite unset)"))
    return "\n".join(out)


def _flatten_hashes(hashes: Any, prefix: str = "") -> list[tuple[str, str]]:
    """{source: [{uri, sha256}]} or {uri: sha} or nested dicts -> [(name, sha256)]."""
    if isinstance(hashes, dict):
        if "sha256" in hashes:
            return [(str(hashes.get("uri") or prefix), hashes["sha256"])]
        return [row for k, v in hashes.items() for row in _flatten_hashes(v, f"{prefix}{k}" if not prefix else f"{prefix}/{k}")]
    if isinstance(hashes, list):
        return [row for item in hashes for row in _flatten_hashes(item, prefix)]
    return [(prefix, str(hashes))]


def render_report(
    *,
    metrics: Sequence[Mapping[str, Any]] | None = None,
    mixture: dict | None = None,
    realised: dict | None = None,
    eval_report: EvalReport | None = None,
    previous_eval: EvalReport | None = None,
    lineage: dict | None = None,
    title: str = "forge_ray run report",
    summary: dict | None = None,
    synthetic: Sequence[Mapping[str, Any]] | None = None,
    rl: Mapping[str, Any] | None = None,
) -> str:
    """The report as an HTML string (see the module docstring for the inputs)."""
    metrics = metrics or []
    parts = [f"<h1>{html.escape(title)}</h1>"]
    steps, total, domains = loss_series(metrics)
    facts = dict(summary or {})
    if steps:
        facts.setdefault("steps", f"{steps[0]}..{steps[-1]}")
        facts.setdefault("final loss", f"{total[-1]:.4f}")
    if eval_report and (eval_report.get("gate") or {}).get("decision"):
        facts.setdefault("promotion gate", eval_report["gate"]["decision"])
    if facts:
        parts.append(_table(list(facts.items())))

    parts.append("<h2>Training loss per domain</h2>")
    parts.append(_figure("loss", plots.loss_plot(steps, total, domains), "loss per domain over steps")
                 if steps else _missing("no training metrics given"))

    parts.append("<h2>Data mixture</h2>")
    names, shares = mixture_shares(mixture, realised)
    parts.append(_figure("mixture", plots.mixture_plot(names, shares), "mixture shares per source: target vs realised")
                 if names else _missing("no mixture plan given"))

    parts.append("<h2>Tokens per expert</h2>")
    tokens, by_layer = expert_totals(metrics)
    parts.append(_figure("experts", plots.experts_plot(tokens, by_layer), "routed tokens per expert")
                 if tokens else _missing("no expert routing in the metrics (a dense model has none)"))

    parts.append("<h2>Evaluation against the previous version</h2>")
    if eval_report and eval_report.get("perplexity"):
        d, ppl, suites = eval_series(eval_report, previous_eval)
        parts.append(_figure("eval", plots.eval_plot(d, ppl, suites), "perplexity per domain and KPI suites"))
    else:
        parts.append(_missing("no evaluation report given"))

    parts.append("<h2>Reinforcement learning on KPI rewards</h2>")
    parts.append(_rl_section(rl))

    parts.append("<h2>Synthetic data from restricted sources</h2>")
    parts.append(_synthetic_section(synthetic))

    parts.append("<h2>Lineage of the served version</h2>")
    parts.append(_lineage_section(lineage))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def write_report(path: str | Path, **inputs: Any) -> Path:
    """Render the report (inputs as for `render_report`) and write it to `path`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_report(**inputs), encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a report
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    """metrics.jsonl -> list of dicts (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
