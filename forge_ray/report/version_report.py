"""The run report of one registry version, gathered from the artefacts the rooms already write.

    from forge_ray.report.version_report import write_version_report
    url = write_version_report(Storage(root), "demo-moe", "v3")   # <root>/reports/demo-moe/v3.html

Where each part comes from (docs/contracts.md):
- lineage, mixture plan:  registry/<model>/<version>/manifest.json  ("lineage")
- loss per domain, experts: runs/<run>/metrics.jsonl               (train room's read_metrics)
- realised mixture:        runs/<run>/consumption/*.jsonl           (what each step trained on)
- evaluation:              registry/<model>/_reports/<version>/eval.json, and the eval report of
                           the version it was compared with (its "baseline")
- synthetic sources:       datasets/<dataset>/<version>/synthetic/<source>/ (manifest, preview pairs:
                           synthetic samples beside redacted originals, never a restricted value)
A part that is missing (a run dir on other storage, no eval yet) leaves its section saying so.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from forge_ray.errors import StorageError
from forge_ray.eval.report import REPORT_NAME, EvalReport, read_report
from forge_ray.report.render import render_report
from forge_ray.storage import Storage

log = logging.getLogger(__name__)


def realised_counts(run_dir: str, source_names: list[str]) -> dict[str, int]:
    """Samples trained per source, counting each step once (the attempt that trained it last)."""
    from forge_ray.mixture.consumption import effective_steps, read_records

    counts: Counter = Counter()
    for recs in effective_steps(read_records(run_dir)).values():
        for rec in recs:
            counts.update(source_names[i] for i in rec["source"])
    return dict(counts)


def _eval_report(registry, version: str) -> EvalReport | None:
    try:
        return read_report(registry, version) if REPORT_NAME in registry.get(version).reports else None
    except Exception as e:  # noqa: BLE001 - a report with one part missing is still a report
        log.warning("no eval report for %s/%s: %s", registry.model, version, e)
        return None


def synthetic_sections(storage: Storage, lineage: Mapping[str, Any], trained: list[str]) -> list[dict]:
    """Per synthetic source of the version's dataset: strategy, counts, privacy figures and preview pairs."""
    from forge_ray.prepare.dataset import open_dataset
    from forge_ray.synthesize import list_synthetic, read_preview

    if not lineage.get("dataset") or not lineage.get("dataset_version"):
        return []
    try:
        dataset = open_dataset(storage, lineage["dataset"], lineage["dataset_version"])
        found = list_synthetic(dataset)
    except Exception as e:  # noqa: BLE001 - a report with one part missing is still a report
        log.warning("no synthetic sources read for %s: %s", lineage.get("dataset_version"), e)
        return []
    out = []
    for source, m in found.items():
        privacy = m.get("privacy") or {}
        out.append({"source": source, "name": m.get("name"), "strategy": m.get("strategy"),
                    "trained": m.get("name") in trained, "counts": m.get("counts") or {},
                    "max_shared_ngram_tokens": privacy.get("max_shared_ngram_tokens_kept"),
                    "ngram_tokens": privacy.get("ngram_tokens"),
                    "distance": privacy.get("distance_to_closest_restricted_kept"),
                    "pairs": read_preview(dataset, source)})
    return out


def version_report_inputs(storage: Storage, model: str, version: str) -> dict[str, Any]:
    """The keyword arguments of `render_report` for one version of `model`."""
    from forge_ray.registry import Registry
    from forge_ray.train.metrics import read_metrics

    registry = Registry(storage, model)
    info = registry.get(version)
    lineage = dict(info.manifest.get("lineage") or {})
    plan = lineage.get("mixture_plan") or {}
    run = lineage.get("run")
    metrics: Sequence[Mapping[str, Any]] = []
    realised: dict[str, int] = {}
    if run and storage.exists("runs", run):
        metrics = read_metrics(storage.location("runs", run))  # a path, or a URI on an object store
        names = [s["name"] for s in plan.get("sources", [])]
        if names and storage.exists("runs", run, "consumption"):
            realised = realised_counts(storage.url("runs", run), names)
    eval_report = _eval_report(registry, version)
    baseline = eval_report.get("baseline") if eval_report else None
    previous = _eval_report(registry, baseline["version"]) if baseline and baseline.get("version") else None
    pointer = registry.pointer()
    summary = {
        "model": model,
        "version": version,
        "state": info.state + (" (serving)" if pointer.version == version else ""),
        "architecture": info.architecture,
        "created": info.created,
        "run": run or "?",
    }
    synthetic = synthetic_sections(storage, lineage, [s["name"] for s in plan.get("sources", [])])
    rl = None
    if lineage.get("objective") == "grpo":
        try:
            gate = registry.report(version, "rl_gate")
        except (FileNotFoundError, StorageError):  # no held-out suite, or the gate has not run
            gate = None
        rl = {"metrics": metrics, "gate": gate}
    lineage.pop("mixture_plan", None)  # plotted above; the lineage table keeps its id below
    lineage.pop("model", None)  # the model's config: also in the forge file under "config"
    if plan.get("plan_id"):
        lineage.setdefault("mixture_plan_id", plan["plan_id"])
    return {
        "metrics": metrics,
        "mixture": plan,
        "realised": realised,
        "eval_report": eval_report,
        "previous_eval": previous,
        "lineage": {"model": model, "version": version, **lineage},
        "title": f"{model} {version}",
        "summary": summary,
        "synthetic": synthetic,
        "rl": rl,
    }


def write_version_report(storage: Storage | str, model: str, version: str, rel: str | None = None) -> str:
    """Render the report of `model`/`version` to `<root>/reports/<model>/<version>.html`; return its URI."""
    storage = storage if isinstance(storage, Storage) else Storage(storage)
    rel = rel or f"reports/{model}/{version}.html"
    storage.write_bytes(rel, render_report(**version_report_inputs(storage, model, version)).encode("utf-8"))
    return storage.url(rel)
