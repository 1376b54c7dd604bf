"""Evaluate a version and gate its promotion: the eval stage of the pipeline.

    from forge_ray.eval import evaluate_and_gate
    report = evaluate_and_gate(config, "v3")            # a registry version id
    report = evaluate_and_gate(config, "/exports/v3")  # or an exported folder (published first)
    report["gate"]["decision"]                           # "promote" | "reject"

Order matters: suites are validated before any model loads (a bad suite is the operator's
mistake, not the candidate's: it raises and nothing changes), then the candidate's checksums
are verified, then perplexity (Ray actors), KPI suites and canaries (vLLM). If the candidate
cannot be loaded or evaluated, it is rejected with the cause and nothing else changes.

The baseline the gate compares with is the promoted version, except for an SFT version
(`train.objective: sft`): its base, the folder `model.init_from` names (a registry version's or an
open-weights one), measured now on the same eval data and the same KPI suites; the report holds both.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import posixpath
import time
from typing import TYPE_CHECKING

from forge_ray import __version__
from forge_ray.config import ForgeConfig
from forge_ray.console import Progress
from forge_ray.eval.gate import apply_gate
from forge_ray.eval.generation import EndpointEngine, OfflineEngine
from forge_ray.eval.kpi import run_suites
from forge_ray.eval.memorisation import memorisation_check
from forge_ray.eval.model_files import EvalError, local_model_dir
from forge_ray.eval.perplexity import perplexity_by_domain
from forge_ray.eval.report import REPORT_NAME, Baseline, EvalReport, Measurements, UngatedReport, read_report
from forge_ray.eval.suites import Suite, load_suites
from forge_ray.storage import Storage

if TYPE_CHECKING:
    from forge_ray.prepare.dataset import PreparedDataset
    from forge_ray.registry import Registry

log = logging.getLogger(__name__)


def make_engine(config: ForgeConfig, model_url: str, tokenizer_dir: str):
    eng = config.eval.engine
    if eng.backend == "endpoint":
        return EndpointEngine(eng.endpoint_url, eng.endpoint_model or config.model.name, tokenizer_dir,
                              eng.max_model_len, eng.request_timeout_s)
    return OfflineEngine(model_url, tokenizer_dir, eng)


def evaluate_version(config: ForgeConfig, model_url: str, dataset: PreparedDataset,
                     suites: list[Suite]) -> Measurements:
    """Perplexity per domain, KPI suites and the memorisation check of the model at `model_url`.

    Raises EvalError if the model cannot be loaded or evaluated.
    """
    started = time.monotonic()
    report: Measurements = {"dataset": {"name": dataset.dataset, "version": dataset.version},
                            "engine": config.eval.engine.backend}
    mem = config.eval.memorisation
    # Units: perplexity, each KPI suite, the memorisation check.
    units = 1 + len(suites) + int(mem.enabled)
    with Progress("eval", units, "units", interval_s=0) as bar:
        report["perplexity"] = perplexity_by_domain(model_url, dataset, config.eval.perplexity)
        bar.update(1, "perplexity")
        if suites or mem.enabled:
            with local_model_dir(model_url) as local:
                engine = make_engine(config, model_url, local)
                try:
                    report["kpi"] = run_suites(engine, suites) if suites else None
                    bar.update(1 + len(suites), "KPI suites")
                    report["memorisation"] = (memorisation_check(engine, mem, config.data, config.project.storage_root)
                                              if mem.enabled else None)
                    bar.update(units, "memorisation")
                finally:
                    engine.close()
    report["duration_s"] = round(time.monotonic() - started, 2)
    return report


def sft_base(config: ForgeConfig, registry: Registry) -> tuple[str, str] | None:
    """(name, location) of the base an SFT version started from, or None (not SFT, or from scratch):
    a registry version's id when `model.init_from` is one of this model's versions, else the folder."""
    init = config.model.init_from
    if config.train.objective != "sft" or not init:
        return None
    for version in registry.versions():
        if registry.version_path(version).rstrip("/") == init.rstrip("/") or \
                os.path.abspath(registry.version_path(version)) == os.path.abspath(init):
            return version, registry.get(version).url
    return init, init


def _base_baseline(config: ForgeConfig, name: str, url: str, dataset: PreparedDataset,
                   suites: list[Suite]) -> Baseline:
    """The SFT base on the candidate's eval data and suites (the base is never served: vLLM offline)."""
    log.info("measuring the SFT base %s on dataset %s and %d suite(s) for comparison", name, dataset.version,
             len(suites))
    ppl = perplexity_by_domain(url, dataset, config.eval.perplexity)
    kpi = None
    if suites:
        with local_model_dir(url) as local:
            engine = OfflineEngine(url, local, config.eval.engine)
            try:
                kpi = run_suites(engine, suites)
            finally:
                engine.close()
    return {"version": name, "perplexity": ppl, "measured": "now", "kind": "base", "kpi": kpi}


def _baseline(config: ForgeConfig, registry: Registry, dataset: PreparedDataset,
              suites: list[Suite] | None = None) -> Baseline | None:
    """What the candidate is compared with: an SFT version's base (perplexity and KPI, measured now),
    else the promoted version's perplexity on the same eval data: from its stored report if that
    was measured on this dataset version over as many sequences, else measured now."""
    base = sft_base(config, registry)
    if base is not None:
        return _base_baseline(config, *base, dataset, suites or [])
    promoted = registry.promoted()
    if promoted is None:
        return None
    if REPORT_NAME in registry.get(promoted).reports:
        old = read_report(registry, promoted)
        same_rows = (old.get("perplexity_settings") or {}).get("max_sequences") == config.eval.perplexity.max_sequences
        if old.get("dataset", {}).get("version") == dataset.version and same_rows:
            return {"version": promoted, "perplexity": old["perplexity"], "measured": "stored report",
                    "kind": "promoted"}
    log.info("measuring the promoted version %s on dataset %s for comparison", promoted, dataset.version)
    ppl = perplexity_by_domain(registry.get(promoted).url, dataset, config.eval.perplexity)
    return {"version": promoted, "perplexity": ppl, "measured": "now", "kind": "promoted"}


def resolve_version(config: ForgeConfig, storage: Storage, version_dir_or_id: str) -> str:
    """A registry version id: the id itself, a registry folder, or an exported folder published now."""
    from forge_ray.registry import Registry, publish_version

    registry = Registry(storage, config.model.name)
    name = posixpath.basename(version_dir_or_id.rstrip("/"))
    if "://" in version_dir_or_id and registry.version_path(name) == version_dir_or_id.rstrip("/"):
        return name  # a version's folder on an object-store root (export's `path`)
    if not os.path.isdir(version_dir_or_id):
        return version_dir_or_id
    folder = os.path.abspath(version_dir_or_id)
    name = os.path.basename(folder.rstrip("/"))
    if os.path.abspath(registry.version_path(name)) == folder:
        return name
    manifest_path = os.path.join(folder, "manifest.json")
    manifest = {}
    if os.path.isfile(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
    version = manifest.get("version") or name
    if version not in registry.versions():
        publish_version(storage, config.model.name, version, folder, manifest)
        log.info("published %s as candidate %s/%s", folder, config.model.name, version)
    return version


def evaluate_and_gate(config: ForgeConfig, version_dir_or_id: str, storage: Storage | None = None) -> EvalReport:
    """Evaluate a candidate and promote or reject it through the registry; return the report.

    The report (with `gate`: decision, rules, reasons) is attached to the version as "eval".
    """
    from forge_ray.prepare.dataset import open_dataset
    from forge_ray.registry import CorruptVersionError, Registry, RegistryError

    suites = load_suites(config.eval.suites)  # before any model loads
    storage = storage or Storage(config.project.storage_root)
    registry = Registry(storage, config.model.name)
    version = resolve_version(config, storage, version_dir_or_id)
    state = registry.state(version)
    if state != "candidate":
        raise RegistryError(f"{config.model.name}/{version} is {state}; only candidates go through the gate")
    dataset = open_dataset(storage, config.prepare.dataset)
    evaluated = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    log.info("evaluating %s/%s on dataset %s/%s", config.model.name, version, dataset.dataset, dataset.version)
    measured: Measurements = {}
    baseline, error = None, None
    try:
        registry.verify(version)
        measured = evaluate_version(config, registry.get(version).url, dataset, suites)
        baseline = _baseline(config, registry, dataset, suites)
    except (EvalError, CorruptVersionError) as e:
        log.error("evaluation of %s failed: %s", version, e)
        error = str(e)
    ungated: UngatedReport = {"model": config.model.name, "version": version, "code_version": __version__,
                              "evaluated": evaluated, "perplexity_settings": config.eval.perplexity.model_dump(),
                              "gate_rules": config.eval.gate.model_dump(), "error": error, **measured,
                              "baseline": baseline}
    report: EvalReport = {**ungated, "gate": apply_gate(config.eval.gate, ungated, baseline)}
    registry.attach_report(version, REPORT_NAME, dict(report))  # stored as the plain JSON object it is
    if report["gate"]["decision"] == "promote":
        registry.promote(version, reason="passed the eval gate")
        log.info("promoted %s/%s", config.model.name, version)
    else:
        registry.reject(version, "; ".join(report["gate"]["reasons"]))
        log.warning("rejected %s/%s: %s", config.model.name, version, "; ".join(report["gate"]["reasons"]))
    return report
