"""The whole pipeline: prepare -> synthesize -> train -> export -> eval -> promote -> serve, round after round.

    python -m jobs.pipeline --config jobs/configs/demo.yaml [--rounds N]
    forge demo -c jobs/configs/demo.yaml

When `synthesize.sources` names restricted sources, their synthetic sources are made (or found)
after prepare and trained on beside the prepared ones (the mixture weighs them by name).
Round 1 trains from the config (scratch or `model.init_from`); each later round continues
from the last promoted version on a reshuffled mix. A promoted version is served (round 1
starts the endpoint) or hot-loaded into the running endpoint, and a completion is shown
before and after the swap with the version that produced it.

Re-running is safe: the prepared dataset is found by its content version, and each finished
round is recorded in `<root>/pipeline/<project>/rounds.json`, so a re-submitted pipeline
skips what it had finished (and a failed round's training resumes from its checkpoints,
since its run name is deterministic).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Literal, NotRequired, TypedDict

from forge_ray.config import ForgeConfig, config_hash
from forge_ray.storage import Storage

log = logging.getLogger(__name__)

PROMPTS = ["def main():", "Hello Kestrel support,"]


class RoundRecord(TypedDict):
    """A finished round, as `rounds.json` keeps it (a re-submitted pipeline skips these)."""

    round: int  # 1-based
    run: str  # the training run, <storage_root>/runs/<run>/
    version: str  # the exported registry version
    decision: Literal["promote", "reject"]  # the eval gate's
    report: NotRequired[str]  # the run report's URL, for a promoted version


@dataclass
class PipelineResult:
    dataset: str
    rounds: list[RoundRecord] = field(default_factory=list)
    completions: list[dict] = field(default_factory=list)
    report: str | None = None
    endpoint: object | None = None


def ensure_embedded_corpora(config: ForgeConfig, storage: Storage, scale: float = 1.0) -> bool:
    """Write the embedded corpora if a source reads them from the storage root and they are absent."""
    from forge_ray.corpora import CORPORA_DIR, LAST_FILE, write_corpora

    wanted = any(s.uri.startswith("{storage_root}/" + CORPORA_DIR) for s in config.data.sources)
    if not wanted or storage.exists(CORPORA_DIR, LAST_FILE):
        return False
    write_corpora(storage, scale=scale, seed=config.prepare.seed)
    return True


def round_config(config: ForgeConfig, round_no: int, dataset_version: str, init_from: str | None) -> ForgeConfig:
    """Round `round_no` (0-based): a deterministic run name; later rounds continue from `init_from`."""
    key = hashlib.sha256(f"{config_hash(config)}:{dataset_version}:{round_no}:{init_from}".encode()).hexdigest()
    train = config.train.model_copy(update={"run_name": f"{config.model.name}-r{round_no + 1}-{key[:8]}"})
    updates = {"train": train}
    if round_no > 0:
        updates["model"] = config.model.model_copy(update={"init_from": init_from})
        updates["mixture"] = config.mixture.model_copy(update={"seed": config.mixture.seed + round_no})
    return config.model_copy(update=updates)


class _Rounds:
    """The record of finished rounds, `<root>/pipeline/<project>/rounds.json`."""

    def __init__(self, storage: Storage, config: ForgeConfig, dataset_version: str):
        self.storage, self.rel = storage, f"pipeline/{config.project.name}/rounds.json"
        self.key = f"{config_hash(config)}:{dataset_version}"
        data = storage.read_json(self.rel) if storage.exists(self.rel) else {}
        self.done: list[RoundRecord] = data.get("rounds", []) if data.get("key") == self.key else []

    def add(self, record: RoundRecord) -> None:
        self.done.append(record)
        self.storage.write_json(self.rel, {"key": self.key, "rounds": self.done})


def _synthesize(config: ForgeConfig, dataset, storage: Storage, address: str | None, say, t0: float):
    """Restricted sources -> synthetic sources; the dataset to train on, with them added."""
    from forge_ray.synthesize import synthesize, training_dataset

    cfg = config.model_copy(update={"synthesize": config.synthesize.model_copy(
        update={"dataset_version": dataset.version})})  # the version prepare just made, not LATEST
    for source, m in synthesize(cfg, storage, address).items():
        c = m["counts"]
        say(f"[synthesize] {m['name']} <- {source} ({m['strategy']}): kept {c['kept']} of {c['samples']} samples"
            f"{', dropped ' + str(c['dropped']) if c['dropped'] else ''} ({time.monotonic() - t0:.0f}s)")
    return training_dataset(config, dataset)


def _complete_all(endpoint, key: str, max_tokens: int = 16) -> list[dict]:
    from forge_ray.serve.client import complete

    return [complete(endpoint.base_url, key, endpoint.model, p, max_tokens=max_tokens) for p in PROMPTS]


def _show(tag: str, outs: list[dict], say) -> None:
    for p, out in zip(PROMPTS, outs, strict=True):
        say(f"      {tag:6s} [{out['version']}] {p!r} -> {out['text']!r}")


def _replicas(config: ForgeConfig) -> int:
    """Model replicas that must all serve a version before it counts as served."""
    r = config.serve.replicas
    return r.autoscaling.min_replicas if r.autoscaling else r.num_replicas


def run_pipeline(config: ForgeConfig, address: str | None = None, rounds: int | None = None,
                 keep_serving: bool = False, scale: float = 1.0, say=print) -> PipelineResult:
    """Run every stage on the cluster; returns what each round made and the completions shown."""
    from forge_ray.cluster import connect_for
    from forge_ray.eval import evaluate_and_gate
    from forge_ray.export import export_run
    from forge_ray.prepare.run import prepare_dataset
    from forge_ray.registry import Registry
    from forge_ray.report.version_report import write_version_report
    from forge_ray.serve import start_serving, wait_for_version
    from forge_ray.serve.demo import demo_keys
    from forge_ray.train import run_training

    t0 = time.monotonic()
    storage = Storage(config.project.storage_root)
    storage.check_writable()
    rounds = rounds or config.train.rounds
    if ensure_embedded_corpora(config, storage, scale):
        say(f"[corpora] embedded corpora written under {storage.url('corpora')}")
    connect_for(config, address)

    dataset = prepare_dataset(config, storage, address)
    say(f"[prepare] dataset {dataset.dataset}/{dataset.version} at {dataset.path} ({time.monotonic() - t0:.0f}s)")
    if config.synthesize.sources:
        dataset = _synthesize(config, dataset, storage, address, say, t0)
    result = PipelineResult(dataset=f"{dataset.dataset}/{dataset.version}")
    registry = Registry(storage, config.model.name)
    record = _Rounds(storage, config, dataset.version)
    config, key = demo_keys(config)
    endpoint = None

    for r in range(rounds):
        previous = registry.promoted()
        cfg = round_config(config, r, dataset.version, registry.version_path(previous) if previous else None)
        if r < len(record.done):
            say(f"[round {r + 1}] already finished: {record.done[r]['version']} ({record.done[r]['decision']})")
            result.rounds.append(record.done[r])
            continue
        say(f"[round {r + 1}] training {cfg.model.family} run {cfg.train.run_name}"
            + (f" from {previous}" if r and previous else ""))
        # run -> export, as `forge train` does; exported whatever train.export says: the gate needs a version
        exported = export_run(run_training(cfg, dataset, storage), cfg, dataset, storage)
        before = _complete_all(endpoint, key) if endpoint else None
        report = evaluate_and_gate(cfg, exported.path, storage)
        version, decision = report["version"], report["gate"]["decision"]
        say(f"[round {r + 1}] eval: {version} -> {decision}"
            + ("" if decision == "promote" else f" ({'; '.join(report['gate']['reasons'])})"))
        entry = RoundRecord(round=r + 1, run=cfg.train.run_name, version=version, decision=decision)
        if decision == "promote":
            if endpoint is None:
                endpoint = start_serving(config, address)
                say(f"[serve] {endpoint.base_url} serves {config.model.name}/{version}")
                wait_for_version(endpoint, version, replicas=_replicas(config))
                outs = _complete_all(endpoint, key)
                _show("first", outs, say)
                result.completions.append({"round": r + 1, "after": outs})
            else:
                say(f"[serve] hot-loading {version} into the running endpoint ...")
                _show("before", before, say)
                wait_for_version(endpoint, version, replicas=_replicas(config))
                outs = _complete_all(endpoint, key)
                _show("after", outs, say)
                result.completions.append({"round": r + 1, "before": before, "after": outs})
            result.report = write_version_report(storage, config.model.name, version)
            entry["report"] = result.report
        record.add(entry)
        result.rounds.append(entry)

    if result.report:
        say(f"[report] {result.report}")
    say(f"[done] {len(result.rounds)} round(s) in {time.monotonic() - t0:.0f}s; "
        f"promoted: {registry.promoted() or 'none'}")
    if endpoint is not None and not keep_serving:
        from forge_ray.serve import stop_serving

        stop_serving(endpoint)
    result.endpoint = endpoint
    return result
