"""The prepare stage: raw corpora -> a prepared dataset version, on Ray Data.

    from forge_ray.prepare.run import prepare_dataset
    ds = prepare_dataset(config)          # a PreparedDataset; the existing one if already complete

Plan (driver): list and hash the input files, cut them into read units, name the version.
Scan (Ray Data, streaming): read + validate (raw forms hashed) -> PII -> quality -> dedup
signatures -> restricted sources routed, materialised once (spilled to disk when it outgrows the
object store). Dedup: a Ray Data groupby on the LSH / exact buckets, clusters joined by a
union-find in one Ray task; the dropped keys stay in the object store. Counts and side files
(quarantine, restricted): Ray Data tasks. Finalize: dedup decisions and the held-out split; the
tokenizer is trained in a Ray task on the training split; tokenize, pack and write shards run on
Ray Data (pack.py). The driver only plans, sums small tallies and writes the manifest.
Everything lands in a temporary folder that becomes the version atomically, then LATEST is moved to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import posixpath
import time
from pathlib import Path

from forge_ray.config import ForgeConfig, config_hash
from forge_ray.config.redact import redacted_dump
from forge_ray.console import Progress
from forge_ray.errors import ConfigError
from forge_ray.prepare import stages
from forge_ray.prepare.dataset import (
    MANIFEST,
    SPLITS,
    TOKENIZER_DIR,
    PreparedDataset,
    open_dataset,
    version_dir,
    write_latest,
)
from forge_ray.prepare.dedup import find_duplicates, lsh_params
from forge_ray.prepare.manifest import merge_tallies, summary_line, tally_stage
from forge_ray.prepare.outputs import load_key, read_hidden, route_restricted, write_side_outputs
from forge_ray.prepare.pack import pack_and_write
from forge_ray.prepare.read import plan_source, unit_dict
from forge_ray.prepare.tokenizer import build_tokenizer, reuse_problem
from forge_ray.prepare.validate import Validator
from forge_ray.storage import Storage

log = logging.getLogger(__name__)
_WHOLE = 1 << 62  # no cut: the raw record is hashed whole


def code_version() -> str:
    """The package version plus a hash of the data layer's code: changed code, new version."""
    from forge_ray import __version__

    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):  # the pii/ package included
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return f"{__version__}+{h.hexdigest()[:10]}"


def plan(config: ForgeConfig) -> tuple[list, dict[str, list[dict]], str]:
    """(read units, input files per source, version id): a pure function of inputs and config."""
    root, cfg = config.project.storage_root, config.prepare
    chunk = int(cfg.read_chunk_mb * 1e6)
    units, inputs = [], {}
    for i, src in enumerate(config.data.sources):
        u, files = plan_source(src, i, src.resolved_uri(root), chunk)
        units += u
        inputs[src.name] = files
    identity = {
        "inputs": {s: [(posixpath.basename(f["uri"]), f["sha256"]) for f in fs] for s, fs in inputs.items()},
        "config": config_hash(config, "data", "prepare"),
        "code": code_version(),
    }
    version = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return units, inputs, version


def prepare_dataset(config: ForgeConfig, storage: Storage | None = None, address: str | None = None,
                    ) -> PreparedDataset:
    """Prepare the forge file's corpora; return the (new or already complete) dataset version."""
    if any(s.is_conversational for s in config.data.sources):  # instruction tuning: docs/sft.md
        from forge_ray.prepare.sft_dataset import prepare_sft_dataset

        return prepare_sft_dataset(config, storage)
    storage = storage or Storage(config.project.storage_root)
    cfg = config.prepare
    tok = cfg.tokenizer
    problem = reuse_problem(tok.path) if tok.mode == "reuse" else None  # before any worker starts
    if problem:
        raise ConfigError("prepare.tokenizer.path", [problem])
    key = load_key(cfg.privacy, config.project.storage_root)  # before any work: a bad key fails fast
    units, inputs, version = plan(config)
    rel = version_dir(cfg.dataset, version)
    if storage.is_complete(rel):
        log.info("dataset %s version %s is already complete", cfg.dataset, version)
        write_latest(storage, cfg.dataset, version)
        return open_dataset(storage, cfg.dataset, version)
    from forge_ray.cluster import connect_for

    connect_for(config, address, data_only=True)
    start = time.time()
    with storage.atomic_dir(rel) as tmp, data_context():
        manifest = _run(config, units, inputs, storage.fs, tmp, key)
        manifest.update(version=version, seconds=round(time.time() - start, 2))
        with storage.fs.open(posixpath.join(tmp, MANIFEST), "wb") as f:
            f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    write_latest(storage, cfg.dataset, version)
    ds = open_dataset(storage, cfg.dataset, version)
    log.info("prepared %s in %.1fs: %s", ds.path, time.time() - start, summary_line(manifest))
    return ds


@contextlib.contextmanager
def data_context():
    """Ray Data settings of the prepare stage, restored afterwards (the driver may run other stages).

    preserve_order: the stream reaches the packer in input order, so shards are deterministic.
    Sort-based shuffle for the dedup groupby: plain tasks; the hash shuffle's aggregator actors
    cost more to start than the shuffle itself at these sizes.
    No per-operator resource reservation: it holds back a share of the CPUs for each operator, so
    on a 2-CPU cluster the (fast) read operator kept one CPU from the scan, which then ran about
    one task at a time (measured at 10x: scan 15.3 s with it, 12.8 s without, fused with the read).
    Memory stays bounded by the streaming executor's object-store backpressure.
    """
    import ray.data
    from ray.data.context import ShuffleStrategy

    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.shuffle_strategy,
             ctx.op_resource_reservation_enabled)
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    ctx.op_resource_reservation_enabled = False
    try:
        yield ctx
    finally:
        (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.shuffle_strategy,
         ctx.op_resource_reservation_enabled) = saved


def _run(config: ForgeConfig, units: list, inputs: dict, fs, out: str, key: bytes | None) -> dict:
    import ray
    import ray.data
    from ray.data.expressions import col

    cfg = config.prepare
    clock = _Clock()
    names = config.data.names
    keep = cfg.quarantine_raw_bytes if cfg.privacy.quarantine_raw else 0
    # the validator keeps the whole raw record: read_hidden hashes it (and encrypts a prefix) in the task
    validators = {s.name: Validator(s, cfg.max_record_bytes, _WHOLE) for s in config.data.sources}
    policies = {s.name: cfg.pii.policy(s.sensitivity) for s in config.data.sources}
    restricted = [s.name for s in config.data.sources if s.sensitivity == "restricted"]

    items = [unit_dict(u) for u in units]
    scanned = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .flat_map(read_hidden, fn_kwargs={"validators": validators, "keep_bytes": keep, "key": key})
        # one batch per read unit (batch_size None): the read and the scan fuse into one task
        .map_batches(stages.scan_stage, batch_format="pyarrow", batch_size=None,
                     fn_kwargs={"pii_cfg": cfg.pii, "policies": policies, "quality_cfg": cfg.quality,
                                "exempt": cfg.quality.exempt_sources, "dedup_cfg": cfg.dedup, "seed": cfg.seed})
        .map_batches(route_restricted, batch_format="pyarrow", batch_size=None, fn_kwargs={"restricted": restricted})
        .materialize()
    )
    clock.lap("scan (read, validate, PII, quality, signatures)")
    parts = max(1, min(64, int(ray.cluster_resources().get("CPU", 1)) // 2))  # shuffle partitions
    bands = lsh_params(cfg.dedup.threshold, cfg.dedup.num_perm)[0] if cfg.dedup.near else 0
    dups = find_duplicates(scanned, parts, bands) if (cfg.dedup.exact or cfg.dedup.near) else {}
    clock.lap(f"dedup ({len(dups)} duplicates)")
    tallies = (scanned.select_columns(["source", "key", "outcome", "reason", "split_hash"])
               .map_batches(tally_stage, batch_format="pyarrow", batch_size=None, fn_kwargs={"dups": dups}))
    counts, forced = merge_tallies(tallies.take_all(), names)
    side_records = sum(sum(c["quarantined"].values()) + c["dropped"].get(stages.ROUTED, 0) for c in counts.values())
    side = write_side_outputs(scanned, fs, out, names, key, parts, any_records=side_records > 0)
    clock.lap("counts, quarantine, restricted")
    final = scanned.map_batches(stages.finalize_stage, batch_format="pyarrow",
                                fn_kwargs={"dups": dups, "eval_fraction": cfg.eval_fraction,
                                           "forced_eval": forced if cfg.eval_fraction > 0 else {}})

    kept = final.filter(expr=col("outcome").is_in(list(stages.LIVE)))
    tok_dir = posixpath.join(out, TOKENIZER_DIR)
    train_text = kept.filter(expr=col("split") == "train").select_columns(["text"])
    tokenizer, tok_json = build_tokenizer(train_text, cfg.tokenizer, cfg.pii, fs, tok_dir)
    clock.lap(f"tokenizer ({cfg.tokenizer.mode}, {tokenizer['vocab_size']} tokens)")

    tokenized = kept.map_batches(stages.tokenize_stage, batch_format="pyarrow", batch_size=512,
                                 fn_kwargs={"tokenizer_json": tok_json}).materialize()
    splits, pii = pack_and_write(tokenized, fs, out, names, seq_len=cfg.seq_len, shard_sequences=cfg.shard_sequences,
                                 eos_id=tokenizer["eos_token_id"], pad_id=tokenizer["pad_token_id"], parts=parts)
    clock.lap("tokenize and pack")

    return {
        "dataset": cfg.dataset,
        "seq_len": cfg.seq_len,
        "source_order": names,
        "code_version": code_version(),
        "config_hash": config_hash(config, "data", "prepare"),
        "config": redacted_dump(config, include={"data", "prepare"}),
        "tokenizer": tokenizer,
        "read_units": len(units),
        "phase_seconds": clock.laps,
        "lsh": dict(zip(("bands", "rows"), lsh_params(cfg.dedup.threshold, cfg.dedup.num_perm), strict=True)),
        "privacy": {"quarantine_raw": bool(keep), "restricted": "encrypted" if key else "owner_only"},
        "sources": {
            s: {
                "inputs": inputs[s],
                "counts": counts[s],
                "pii_found": pii[s],
                "quarantine": f"quarantine/{s}.jsonl",
                "restricted": f"restricted/{s}.jsonl",
                "restricted_records": side[f"restricted/{s}.jsonl"],
                "splits": {sp: splits[(s, sp)] for sp in SPLITS},
            }
            for s in names
        },
    }


class _Clock:
    """Times each phase; the console shows the phases done out of PHASES (one line each off a terminal)."""

    PHASES = 4  # scan, dedup, counts, tokenize and pack (the tokenizer is timed too, not counted)

    def __init__(self):
        self.t = time.time()
        self.laps: dict[str, float] = {}
        self.bar = Progress("prepare", self.PHASES, "phases", interval_s=0)

    def lap(self, what: str) -> None:
        now = time.time()
        log.debug("prepare: %-50s %6.1fs", what, now - self.t)
        self.laps[what.split(" (")[0]] = round(now - self.t, 2)
        if not what.startswith("tokenizer"):
            self.bar.advance(note=f"{what} {now - self.t:.1f}s")
            if self.bar.done >= self.PHASES:
                self.bar.close()
        self.t = now
