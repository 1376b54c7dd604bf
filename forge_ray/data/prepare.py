"""The prepare stage: raw corpora -> a prepared dataset version, on Ray Data.

    from forge_ray.data.prepare import prepare_dataset
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

import hashlib
import json
import logging
import posixpath
import time
from pathlib import Path

from forge_ray.config import ForgeConfig, config_hash
from forge_ray.data import stages
from forge_ray.data.dataset import (
    MANIFEST,
    SPLITS,
    TOKENIZER_DIR,
    PreparedDataset,
    open_dataset,
    version_dir,
    write_latest,
)
from forge_ray.data.manifest import build_counts, summary_line
from forge_ray.data.pack import Packer
from forge_ray.data.read import plan_source, unit_dict
from forge_ray.data.validate import Validator
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
    units, inputs, version = plan(config)
    rel = version_dir(cfg.dataset, version)
    if storage.is_complete(rel):
        log.info("dataset %s version %s is already complete", cfg.dataset, version)
        write_latest(storage, cfg.dataset, version)
        return open_dataset(storage, cfg.dataset, version)
    from forge_ray.cluster import connect_for

    connect_for(config, address)
    start = time.time()
    with storage.atomic_dir(rel) as tmp:
        manifest = _run(config, units, inputs, storage.fs, tmp)
        manifest.update(version=version, seconds=round(time.time() - start, 2))
        with storage.fs.open(posixpath.join(tmp, MANIFEST), "wb") as f:
            f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    write_latest(storage, cfg.dataset, version)
    ds = open_dataset(storage, cfg.dataset, version)
    log.info("prepared %s in %.1fs: %s", ds.path, time.time() - start, summary_line(manifest))
    return ds


def _run(config: ForgeConfig, units: list, inputs: dict, fs, out: str) -> dict:
    import ray
    import ray.data

    cfg = config.prepare
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # deterministic order
    ray.data.DataContext.get_current().enable_progress_bars = False
    names = config.data.names
    validators = {s.name: Validator(s, cfg.max_record_bytes, cfg.quarantine_raw_bytes) for s in config.data.sources}
    policies = {s.name: cfg.pii.policy(s.sensitivity) for s in config.data.sources}

    items = [unit_dict(u) for u in units]
    scanned = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .flat_map(stages.read_stage, fn_kwargs={"validators": validators})
        .map_batches(stages.pii_stage, batch_format="pyarrow", batch_size=256,
                     fn_kwargs={"pii_cfg": cfg.pii, "policies": policies})
        .map_batches(stages.quality_stage, batch_format="pyarrow",
                     fn_kwargs={"cfg": cfg.quality, "exempt": cfg.quality.exempt_sources})
        .map_batches(stages.sign_stage, batch_format="pyarrow", batch_size=256,
                     fn_kwargs={"dedup_cfg": cfg.dedup, "seed": cfg.seed})
        .materialize()
    )
    parts = max(1, min(64, int(ray.cluster_resources().get("CPU", 1)) // 2))  # shuffle partitions
    dups = _duplicates(scanned, parts) if (cfg.dedup.exact or cfg.dedup.near) else {}
    deduped = scanned.map_batches(stages.finalize_stage, batch_format="pyarrow",
                                  fn_kwargs={"dups": dups, "eval_fraction": cfg.eval_fraction, "forced_eval": {}})
    forced = _forced_eval(deduped) if cfg.eval_fraction > 0 else {}
    final = scanned.map_batches(stages.finalize_stage, batch_format="pyarrow",
                                fn_kwargs={"dups": dups, "eval_fraction": cfg.eval_fraction, "forced_eval": forced})
    final = final.materialize()
    outcomes = final.select_columns(["source", "outcome", "reason"]).groupby(["source", "outcome", "reason"], num_partitions=1).count()
    _write_side_outputs(final, fs, out, names)

    kept = final.filter(lambda r: r["outcome"] in stages.LIVE)
    tok_dir = posixpath.join(out, TOKENIZER_DIR)
    tokenizer, tok_json = _tokenizer(config, kept, fs, tok_dir)

    packers = {(s, sp): Packer(fs, out, s, sp, seq_len=cfg.seq_len, eos_id=tokenizer["eos_token_id"],
                               pad_id=tokenizer["pad_token_id"], shard_sequences=cfg.shard_sequences)
               for s in names for sp in SPLITS}
    pii = {s: {} for s in names}
    tokenized = kept.map_batches(stages.tokenize_stage, batch_format="pyarrow", batch_size=512,
                                 fn_kwargs={"tokenizer_json": tok_json})
    for batch in tokenized.iter_batches(batch_format="pyarrow", batch_size=1024, prefetch_batches=2):
        for row in batch.to_pylist():
            packers[(row["source"], row["split"])].add(row["input_ids"])
            for entity, n in json.loads(row["pii"] or "{}").items():
                pii[row["source"]][entity] = pii[row["source"]].get(entity, 0) + n
    splits = {key: p.finish() for key, p in packers.items()}

    counts = build_counts(outcomes.take_all(), names)
    from forge_ray.data.dedup import lsh_params

    return {
        "dataset": cfg.dataset,
        "seq_len": cfg.seq_len,
        "source_order": names,
        "code_version": code_version(),
        "config_hash": config_hash(config, "data", "prepare"),
        "config": json.loads(config.model_dump_json(include={"data", "prepare"})),
        "tokenizer": tokenizer,
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


def _duplicates(scanned, parts: int) -> dict[int, str]:
    """{record key: exact_duplicate | near_duplicate} from a groupby over the dedup buckets."""
    from forge_ray.data.dedup import duplicates_in_bucket

    found = (
        scanned.select_columns(["key", "buckets"])
        .map_batches(stages.bucket_rows, batch_format="pyarrow")
        .groupby("bucket", num_partitions=parts)
        .map_groups(duplicates_in_bucket, batch_format="numpy")
    )
    dups: dict[int, str] = {}
    for batch in found.iter_batches(batch_format="numpy", batch_size=4096):
        for key, reason in zip(batch["key"].tolist(), batch["reason"].tolist(), strict=True):
            if dups.get(key) != "exact_duplicate":
                dups[key] = reason
    return dups


def _forced_eval(deduped) -> dict[str, float]:
    """Per source, the smallest split hash among kept documents: that one is always held out."""
    kept = deduped.filter(lambda r: r["outcome"] in stages.LIVE).select_columns(["source", "split_hash"])
    return {r["source"]: r["min(split_hash)"] for r in kept.groupby("source", num_partitions=1).min("split_hash").take_all()}


def _write_side_outputs(final, fs, out: str, names: list[str]) -> None:
    """quarantine/<source>.jsonl and restricted/<source>.jsonl, in input order (every source has both)."""
    side = final.filter(lambda r: r["outcome"] == "quarantined" or r["reason"] == stages.ROUTED)
    lines = {(kind, s): [] for kind in ("quarantine", "restricted") for s in names}
    for r in side.select_columns(["source", "id", "position", "meta", "outcome", "reason", "raw", "pii"]).iter_rows():
        meta = json.loads(r["meta"])
        if r["outcome"] == "quarantined":
            rec = {"reason": r["reason"], "position": r["position"], "id": r["id"], "raw": r["raw"], "meta": meta}
            lines[("quarantine", r["source"])].append(rec)
        else:
            rec = {"id": r["id"], "position": r["position"], "text": r["raw"], "pii": json.loads(r["pii"]), "meta": meta}
            lines[("restricted", r["source"])].append(rec)
    for (kind, source), recs in lines.items():
        path = posixpath.join(out, kind, f"{source}.jsonl")
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write("".join(json.dumps(x, sort_keys=True) + "\n" for x in recs).encode())


def _tokenizer(config: ForgeConfig, kept, fs, tok_dir: str) -> tuple[dict, str]:
    """Train (a Ray task over the training split) or reuse the tokenizer; save it under `tok_dir`."""
    import ray

    cfg = config.prepare
    train_text = kept.filter(lambda r: r["split"] == "train").select_columns(["text"])
    files = ray.get(_build_tokenizer.remote(train_text, cfg.tokenizer, cfg.pii))
    fs.makedirs(tok_dir, exist_ok=True)
    for name, data in sorted(files.items()):
        with fs.open(posixpath.join(tok_dir, name), "wb") as f:
            f.write(data)
    import tempfile

    from forge_ray.data.tokenizer import tokenizer_info

    with tempfile.TemporaryDirectory() as local:
        for name, data in files.items():
            Path(local, name).write_bytes(data)
        info = tokenizer_info(local)
    return info, files["tokenizer.json"].decode()


def _remote(fn):
    import ray

    return ray.remote(num_cpus=1)(fn)


def _build_tokenizer_fn(train_text, tok_cfg, pii_cfg) -> dict[str, bytes]:
    import os
    import tempfile

    from forge_ray.data.tokenizer import reuse_tokenizer, train_tokenizer

    with tempfile.TemporaryDirectory() as d:
        if tok_cfg.mode == "reuse":
            reuse_tokenizer(tok_cfg, d)
        else:
            texts = (t for b in train_text.iter_batches(batch_format="pyarrow", batch_size=256)
                     for t in b["text"].to_pylist())
            train_tokenizer(texts, tok_cfg, pii_cfg, d, max_bytes=int(tok_cfg.max_train_mb * 1e6))
        return {n: Path(d, n).read_bytes() for n in os.listdir(d)}


class _Lazy:
    """`ray.remote` applied on first use, so importing this module does not import Ray."""

    def __init__(self, fn):
        self.fn, self._remote = fn, None

    def remote(self, *args, **kwargs):
        if self._remote is None:
            self._remote = _remote(self.fn)
        return self._remote.remote(*args, **kwargs)


_build_tokenizer = _Lazy(_build_tokenizer_fn)
