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
    objective: NotRequired[Literal["sft"]]  # the SFT round (train.sft_round); absent: a pre-training round


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


def sft_round_config(config: ForgeConfig, base_dir: str, pretrain, suite_path: str, run_name: str) -> ForgeConfig:
    """The forge file of the SFT round: the embedded instruction set (chat) prepared with the base's
    tokenizer, trained from the base (`model.init_from`) with the pre-training dataset mixed in by
    `sft_round.pretrain_share`, gated on a chat KPI suite against the base (docs/sft.md)."""
    from forge_ray.config import validate_config

    sr = config.train.sft_round
    raw = config.model_dump(mode="json", by_alias=True)
    raw["data"]["sources"] = [{"name": "instructions", "uri": "{storage_root}/corpora/instructions", "format": "chat",
                               "messages_field": "messages", "id_field": "id", "license": "proprietary",
                               "sensitivity": "internal"}]
    raw["prepare"]["dataset"] = f"{config.prepare.dataset}-sft"
    raw["prepare"]["tokenizer"] = {**raw["prepare"]["tokenizer"], "mode": "reuse", "path": base_dir}
    raw["synthesize"]["sources"] = {}
    raw["model"]["init_from"] = base_dir
    raw["train"].update(objective="sft", steps=sr.steps, lr=sr.lr, warmup_steps=min(10, sr.steps // 10),
                        run_name=run_name, export=True, lora=None)
    sizes = {s: pretrain.num_sequences(s, "train") for s in pretrain.sources}
    weights = {"instructions": 1.0 - sr.pretrain_share}
    weights |= {s: sr.pretrain_share * n / max(1, sum(sizes.values())) for s, n in sizes.items()}
    raw["mixture"] = {"strategy": "weights", "weights": weights, "seed": config.mixture.seed,
                      "datasets": [f"{pretrain.dataset}@{pretrain.version}"] if sr.pretrain_share > 0 else []}
    if sr.pretrain_share == 0:
        raw["mixture"]["weights"] = {}
    raw["eval"]["suites"] = [suite_path]
    raw["eval"]["memorisation"]["context_source"] = None  # the canaries are still tried, by their prefixes
    return validate_config(raw, "sft round")


def _write_sft_inputs(config: ForgeConfig, storage: Storage) -> str:
    """The embedded instruction set under corpora/instructions/ and its held-out chat KPI suite; the suite's path."""
    import json

    import yaml

    from forge_ray.corpora.instructions import heldout_cases, instruction_records

    sr = config.train.sft_round
    records = instruction_records(sr.records, seed=config.prepare.seed)
    storage.write_bytes("corpora/instructions/train.jsonl",
                        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())
    suite = {"name": "instructions", "description": "held-out chat requests of the embedded instruction set",
             "weight": 1.0, "threshold": 0.0, "max_tokens": 12,
             "cases": [{"id": c["id"], "messages": c["messages"], "scorer": "contains", "expected": c["expected"],
                        "ignore_case": True} for c in heldout_cases(sr.kpi_cases)]}
    storage.write_bytes("suites/instructions.yaml", yaml.safe_dump(suite, sort_keys=False).encode())
    return storage.location("suites", "instructions.yaml")


def _chat_answers(endpoint, key: str, requests: list[list[dict]], template_dir: str | None) -> list[dict]:
    """Greedy answers to chat requests: through `/v1/chat/completions`, or for a version whose tokenizer
    has no chat template (a base forge trained) through `/v1/completions` with the conversation rendered
    by forge's default template, the one its SFT version learned."""
    from forge_ray.serve.client import request
    from forge_ray.serve.frontend import VERSION_HEADER

    tok = None
    if template_dir is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(template_dir)
    out = []
    for messages in requests:
        if tok is None:
            body = {"model": endpoint.model, "messages": messages, "max_tokens": 16, "temperature": 0.0}
            status, reply, headers = request(endpoint.base_url, "/chat/completions", key, body)
            text = reply["choices"][0]["message"]["content"] if status == 200 else f"HTTP {status}"
        else:
            from forge_ray.prepare.chat import render, template_of

            prompt = render(tok, template_of(tok)[0], messages, generation_prompt=True)
            body = {"model": endpoint.model, "prompt": prompt, "max_tokens": 16, "temperature": 0.0}
            status, reply, headers = request(endpoint.base_url, "/completions", key, body)
            text = reply["choices"][0]["text"] if status == 200 else f"HTTP {status}"
        out.append({"text": text, "version": headers.get(VERSION_HEADER)})
    return out


def _sft_round(config: ForgeConfig, storage: Storage, registry, dataset, endpoint, key: str,
               address: str | None, say, result: PipelineResult) -> RoundRecord:
    """Instruction-tune the promoted version, gate it against its base, hot-load it, and print both
    versions' answers to the same chat requests; the round's record."""
    from forge_ray.corpora.instructions import heldout_cases
    from forge_ray.eval import evaluate_and_gate
    from forge_ray.export import export_run
    from forge_ray.prepare.dataset import open_dataset
    from forge_ray.prepare.run import prepare_dataset
    from forge_ray.report.version_report import write_version_report
    from forge_ray.serve import wait_for_version
    from forge_ray.train import run_training

    t0 = time.monotonic()
    base = registry.promoted()
    base_dir = registry.version_path(base)
    suite = _write_sft_inputs(config, storage)
    pretrain = open_dataset(storage, dataset.dataset, dataset.version)  # the prepared sources, not synthetic ones
    key_hash = hashlib.sha256(f"{config_hash(config)}:{dataset.version}:{base}:sft".encode()).hexdigest()[:8]
    cfg = sft_round_config(config, base_dir, pretrain, suite, f"{config.model.name}-sft-{key_hash}")
    sft_data = prepare_dataset(cfg, storage, address)
    say(f"[sft] instruction set prepared: {sft_data.dataset}/{sft_data.version} "
        f"({sft_data.num_sequences('instructions', 'train')} packed rows); training from {base}"
        + (f" with {cfg.train.sft_round.pretrain_share:.0%} of {pretrain.dataset} mixed in"
           if cfg.mixture.datasets else ""))
    exported = export_run(run_training(cfg, sft_data, storage), cfg, sft_data, storage)
    requests = [c["messages"] for c in heldout_cases(cfg.train.sft_round.show, seed=7)]
    before = _chat_answers(endpoint, key, requests, template_dir=exported.path)  # the base, asked in the SFT template
    report = evaluate_and_gate(cfg, exported.path, storage)
    version, decision = report["version"], report["gate"]["decision"]
    base_kpi = (report.get("baseline") or {}).get("kpi") or {}
    kpi = report.get("kpi") or {}
    say(f"[sft] eval: {version} -> {decision}; chat KPI {kpi.get('weighted_score', float('nan')):.2f} vs base "
        f"{base} {base_kpi.get('weighted_score', float('nan')):.2f}"
        + ("" if decision == "promote" else f" ({'; '.join(report['gate']['reasons'])})"))
    entry = RoundRecord(round=len(result.rounds) + 1, run=cfg.train.run_name, version=version, decision=decision,
                        objective="sft")
    after = None
    if decision == "promote":
        say(f"[serve] hot-loading the SFT version {version} into the running endpoint ...")
        wait_for_version(endpoint, version, replicas=_replicas(config))
        after = _chat_answers(endpoint, key, requests, template_dir=None)
        result.report = entry["report"] = write_version_report(storage, config.model.name, version)
    for messages, b, a in zip(requests, before, after or [None] * len(before), strict=True):
        say(f"      chat   {messages[-1]['content']!r}")
        say(f"        base [{b['version']}] -> {b['text']!r}")
        if a is not None:
            say(f"        sft  [{a['version']}] -> {a['text']!r}")
    result.rounds.append(entry)
    result.completions.append({"round": entry["round"], "chat": requests, "before": before, "after": after})
    say(f"[sft] done in {time.monotonic() - t0:.0f}s")
    return entry


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

    if config.train.objective == "grpo":
        return run_rl_pipeline(config, address, keep_serving, say)
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
        done = [d for d in record.done if d.get("objective") != "sft"]
        if r < len(done):
            say(f"[round {r + 1}] already finished: {done[r]['version']} ({done[r]['decision']})")
            result.rounds.append(done[r])
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

    if config.train.sft_round.enabled:
        finished = [d for d in record.done if d.get("objective") == "sft"]
        if finished:
            say(f"[sft] already finished: {finished[-1]['version']} ({finished[-1]['decision']})")
            result.rounds.append(finished[-1])
        elif endpoint is None or registry.promoted() is None:
            say("[sft] skipped: no promoted version to instruction-tune")
        else:
            record.add(_sft_round(config, storage, registry, dataset, endpoint, key, address, say, result))

    if result.report:
        say(f"[report] {result.report}")
    say(f"[done] {len(result.rounds)} round(s) in {time.monotonic() - t0:.0f}s; "
        f"promoted: {registry.promoted() or 'none'}")
    if endpoint is not None and not keep_serving:
        from forge_ray.serve import stop_serving

        stop_serving(endpoint)
    result.endpoint = endpoint
    return result


def run_rl_pipeline(config: ForgeConfig, address: str | None = None, keep_serving: bool = False,
                    say=print) -> PipelineResult:
    """A GRPO forge file as a job: RL from `model.init_from`, the held-out gate against the base, the
    run report, and, when promoted, the version served with a completion of each demo prompt."""
    from forge_ray.cluster import connect_for
    from forge_ray.registry import Registry
    from forge_ray.report.version_report import write_version_report
    from forge_ray.rl.driver import train_and_gate
    from forge_ray.serve import start_serving, stop_serving, wait_for_version
    from forge_ray.serve.demo import demo_keys

    t0 = time.monotonic()
    storage = Storage(config.project.storage_root)
    storage.check_writable()
    connect_for(config, address)
    out = train_and_gate(config, storage)
    result = PipelineResult(dataset=f"rl prompts {config.rl.prompts}")
    exported = out["exported"]
    if exported is None:
        return result
    decision = (out["gate"] or {}).get("decision", "candidate")
    result.rounds.append(RoundRecord(round=1, run=out["result"].run, version=exported.version, decision=decision))
    result.report = write_version_report(storage, config.model.name, exported.version)
    say(f"[report] {result.report}")
    if Registry(storage, config.model.name).promoted() == exported.version:
        config, key = demo_keys(config)
        endpoint = start_serving(config, address)
        wait_for_version(endpoint, exported.version, replicas=_replicas(config))
        outs = _complete_all(endpoint, key)
        _show("rl", outs, say)
        result.completions.append({"round": 1, "after": outs})
        result.endpoint = endpoint
        if not keep_serving:
            stop_serving(endpoint)
    say(f"[done] GRPO in {time.monotonic() - t0:.0f}s; {exported.version}: {decision}")
    return result
