"""The prepare stage: raw corpora -> a prepared dataset version, on Ray Data.

    from forge_ray.prepare.run import prepare_dataset
    ds = prepare_dataset(config)          # a PreparedDataset; the existing one if already complete

Plan (driver): list and hash the input files, cut them into read units, name the version.
Scan (Ray Data, streaming): read + validate -> PII -> quality -> dedup signatures, materialised
once (spilled to disk when it outgrows the object store). Dedup: a Ray Data groupby on the
LSH / exact buckets. Finalize: dedup decisions and the held-out split; the tokenizer is trained
in a Ray task on the training split; tokenization runs on Ray Data; the packer consumes the
tokenized stream in order (one pass, bounded memory) and writes the shards. Everything lands in
a temporary folder that becomes the version atomically, then LATEST is moved to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import time
from pathlib import Path

from forge_ray.config import ForgeConfig, config_hash
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
from forge_ray.prepare.manifest import build_counts, summary_line
from forge_ray.prepare.outputs import write_side_outputs
from forge_ray.prepare.pack import Packer
from forge_ray.prepare.read import plan_source, unit_dict
from forge_ray.prepare.tokenizer import build_tokenizer
from forge_ray.prepare.validate import Validator
from forge_ray.storage import Storage

log = logging.getLogger(__name__)


def code_version() -> str:
    """The package version plus a hash of the data layer's code: changed code, new version."""
    from forge_ray import __version__

    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if not path.name.startswith("mixture"):
            h.update(path.name.encode() + path.read_bytes())
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
    storage = storage or Storage(config.project.storage_root)
    cfg = config.prepare
    tok = cfg.tokenizer
    if tok.mode == "reuse" and not os.path.isfile(os.path.join(tok.path, "tokenizer.json")):
        raise ConfigError("prepare.tokenizer.path", [f"not a tokenizer folder (no tokenizer.json): {tok.path}"])
    units, inputs, version = plan(config)
    rel = version_dir(cfg.dataset, version)
    if storage.is_complete(rel):
        log.info("dataset %s version %s is already complete", cfg.dataset, version)
        write_latest(storage, cfg.dataset, version)
        return open_dataset(storage, cfg.dataset, version)
    from forge_ray.cluster import connect_for

    connect_for(config, address)
    start = time.time()
    with storage.atomic_dir(rel) as tmp, _data_context():
        manifest = _run(config, units, inputs, storage.fs, tmp)
        manifest.update(version=version, seconds=round(time.time() - start, 2))
        with storage.fs.open(posixpath.join(tmp, MANIFEST), "wb") as f:
            f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    write_latest(storage, cfg.dataset, version)
    ds = open_dataset(storage, cfg.dataset, version)
    log.info("prepared %s in %.1fs: %s", ds.path, time.time() - start, summary_line(manifest))
    return ds


@contextlib.contextmanager
def _data_context():
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


def _run(config: ForgeConfig, units: list, inputs: dict, fs, out: str) -> dict:
    import ray
    import ray.data
    from ray.data.expressions import col

    cfg = config.prepare
    clock = _Clock()
    names = config.data.names
    validators = {s.name: Validator(s, cfg.max_record_bytes, cfg.quarantine_raw_bytes) for s in config.data.sources}
    policies = {s.name: cfg.pii.policy(s.sensitivity) for s in config.data.sources}

    items = [unit_dict(u) for u in units]
    scanned = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .flat_map(stages.read_stage, fn_kwargs={"validators": validators})
        # one batch per read unit (batch_size None): the read and the scan fuse into one task
        .map_batches(stages.scan_stage, batch_format="pyarrow", batch_size=None,
                     fn_kwargs={"pii_cfg": cfg.pii, "policies": policies, "quality_cfg": cfg.quality,
                                "exempt": cfg.quality.exempt_sources, "dedup_cfg": cfg.dedup, "seed": cfg.seed})
        .materialize()
    )
    clock.lap("scan (read, validate, PII, quality, signatures)")
    parts = max(1, min(64, int(ray.cluster_resources().get("CPU", 1)) // 2))  # shuffle partitions
    from forge_ray.prepare.dedup import lsh_params

    bands = lsh_params(cfg.dedup.threshold, cfg.dedup.num_perm)[0] if cfg.dedup.near else 0
    dups = _duplicates(scanned, parts, bands) if (cfg.dedup.exact or cfg.dedup.near) else {}
    clock.lap(f"dedup ({len(dups)} duplicates)")
    counts, forced = _outcomes(scanned, dups, names)
    write_side_outputs(scanned, fs, out, names)
    clock.lap("counts, quarantine, restricted")
    final = scanned.map_batches(stages.finalize_stage, batch_format="pyarrow",
                                fn_kwargs={"dups": dups, "eval_fraction": cfg.eval_fraction,
                                           "forced_eval": forced if cfg.eval_fraction > 0 else {}})

    kept = final.filter(expr=col("outcome").is_in(list(stages.LIVE)))
    tok_dir = posixpath.join(out, TOKENIZER_DIR)
    train_text = kept.filter(expr=col("split") == "train").select_columns(["text"])
    tokenizer, tok_json = build_tokenizer(train_text, cfg.tokenizer, cfg.pii, fs, tok_dir)
    clock.lap(f"tokenizer ({cfg.tokenizer.mode}, {tokenizer['vocab_size']} tokens)")

    packers = {(s, sp): Packer(fs, out, s, sp, seq_len=cfg.seq_len, eos_id=tokenizer["eos_token_id"],
                               pad_id=tokenizer["pad_token_id"], shard_sequences=cfg.shard_sequences)
               for s in names for sp in SPLITS}
    pii = {s: {} for s in names}
    tokenized = kept.map_batches(stages.tokenize_stage, batch_format="pyarrow", batch_size=512,
                                 fn_kwargs={"tokenizer_json": tok_json})
    for batch in tokenized.iter_batches(batch_format="pyarrow", batch_size=1024, prefetch_batches=2):
        ids = batch["input_ids"].combine_chunks()  # token ids as numpy slices, not Python lists
        offsets = ids.offsets.to_numpy()
        offsets = offsets - offsets[0]
        values = ids.flatten().to_numpy(zero_copy_only=False)
        cols = zip(batch["source"].to_pylist(), batch["split"].to_pylist(), batch["pii"].to_pylist(), strict=True)
        for i, (source, split, found) in enumerate(cols):
            packers[(source, split)].add(values[offsets[i] : offsets[i + 1]])
            for entity, n in json.loads(found or "{}").items():
                pii[source][entity] = pii[source].get(entity, 0) + n
    splits = {key: p.finish() for key, p in packers.items()}
    clock.lap("tokenize and pack")

    return {
        "dataset": cfg.dataset,
        "seq_len": cfg.seq_len,
        "source_order": names,
        "code_version": code_version(),
        "config_hash": config_hash(config, "data", "prepare"),
        "config": json.loads(config.model_dump_json(include={"data", "prepare"})),
        "tokenizer": tokenizer,
        "read_units": len(units),
        "phase_seconds": clock.laps,
        "lsh": dict(zip(("bands", "rows"), lsh_params(cfg.dedup.threshold, cfg.dedup.num_perm), strict=True)),
        "sources": {
            s: {
                "inputs": inputs[s],
                "counts": counts[s],
                "pii_found": dict(sorted(pii[s].items())),
                "quarantine": f"quarantine/{s}.jsonl",
                "restricted": f"restricted/{s}.jsonl",
                "splits": {sp: splits[(s, sp)] for sp in SPLITS},
            }
            for s in names
        },
    }


def _duplicates(scanned, parts: int, per_record: int) -> dict[int, str]:
    """{record key: exact_duplicate | near_duplicate} from a groupby over shards of the dedup buckets.

    Shards (`bucket % shards`, ~1 M bucket rows each, at least 16), not single buckets, are the
    groups: one vectorised call per shard instead of one Python call per bucket.
    """
    from forge_ray.prepare.dedup import duplicates_in_bucket

    rows = scanned.count() * (1 + per_record)  # at most; count() of a materialised dataset is metadata
    shards = max(16, rows // 1_000_000 + 1)
    found = (
        scanned.select_columns(["key", "buckets"])
        .map_batches(stages.bucket_rows, batch_format="pyarrow", fn_kwargs={"shards": shards})
        .groupby("shard", num_partitions=parts)
        .map_groups(duplicates_in_bucket, batch_format="numpy")
    )
    dups: dict[int, str] = {}
    for batch in found.iter_batches(batch_format="numpy", batch_size=4096):
        for key, reason in zip(batch["key"].tolist(), batch["reason"].tolist(), strict=True):
            if dups.get(key) != "exact_duplicate":
                dups[key] = reason
    return dups


def _outcomes(scanned, dups: dict[int, str], names: list[str]) -> tuple[dict, dict[str, float]]:
    """(counts per source, smallest split hash per source) in one pass over four small columns.

    The document with the smallest split hash of each source is always held out, so every
    source has an evaluation split however small it is.
    """
    tally: dict[tuple[str, str, str], int] = {}
    forced: dict[str, float] = {}
    cols = ["source", "key", "outcome", "reason", "split_hash"]
    for b in scanned.select_columns(cols).iter_batches(batch_format="pyarrow", batch_size=65536):
        for src, key, outcome, reason, h in zip(*(b[c].to_pylist() for c in cols), strict=True):
            if outcome in stages.LIVE and key in dups:
                outcome, reason = "dropped", dups[key]
            tally[(src, outcome, reason)] = tally.get((src, outcome, reason), 0) + 1
            if outcome in stages.LIVE and h < forced.get(src, 2.0):
                forced[src] = h
    rows = [{"source": s, "outcome": o, "reason": r, "count()": n} for (s, o, r), n in tally.items()]
    return build_counts(rows, names), forced


class _Clock:
    """Logs one line per phase with its wall time."""

    def __init__(self):
        self.t = time.time()
        self.laps: dict[str, float] = {}

    def lap(self, what: str) -> None:
        now = time.time()
        log.info("prepare: %-50s %6.1fs", what, now - self.t)
        self.laps[what.split(" (")[0]] = round(now - self.t, 2)
        self.t = now
