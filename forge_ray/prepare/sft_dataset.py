"""Prepare for instruction tuning: chat / instruction sources -> a prepared dataset version whose
shards carry an assistant-only `loss_mask` beside `input_ids` (docs/sft.md).

    ds = prepare_sft_dataset(config)      # what prepare_dataset calls when the sources are chat / instruction

The same layout, version naming, quarantine and manifest as pre-training data (docs/contracts.md);
what differs: every record is one conversation, checked (`chat.conversation`) or quarantined with its
reason; the PII scan runs on every turn (and on tool-call arguments) with the source's policy;
exact duplicates are dropped by conversation; the held-out split is per conversation; the
tokenizer is reused (the base model's), with its chat template or forge's default saved beside
it; conversations are packed whole, positions restarting per conversation.
The records are processed on the driver: instruction sets are small next to pre-training corpora.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import posixpath
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from forge_ray.config import ForgeConfig, config_hash
from forge_ray.config.redact import redacted_dump
from forge_ray.errors import ConfigError
from forge_ray.prepare.chat import conversation, pack_conversations, render_masked, template_of
from forge_ray.prepare.dataset import (
    MANIFEST,
    SFT_SHARD_SCHEMA,
    SPLITS,
    TOKENIZER_DIR,
    PreparedDataset,
    open_dataset,
    shard_relpath,
    version_dir,
    write_latest,
)
from forge_ray.prepare.read import list_files
from forge_ray.prepare.stages import split_hash
from forge_ray.storage import Storage, sha256_file

log = logging.getLogger(__name__)
_PARQUET_OPTIONS = dict(compression="zstd", compression_level=3, use_dictionary=False, write_statistics=False)


def check_sft_config(config: ForgeConfig) -> None:
    """Plan-time rules: every source conversational, the base model's tokenizer reused."""
    problems = []
    plain = [s.name for s in config.data.sources if not s.is_conversational]
    if plain:
        problems.append(f"data.sources {plain} are not chat / instruction sources: prepare them as a separate "
                        "dataset and mix the two through the mixture")
    if config.prepare.tokenizer.mode != "reuse":
        problems.append("prepare.tokenizer.mode must be 'reuse' for chat / instruction sources: the base "
                        "model's tokenizer (and its chat template) tokenizes them")
    if problems:
        raise ConfigError("prepare", problems)


def _records(fs, path: str):
    """(position, record) of a .jsonl(.gz) or .parquet file; position: line or row (1-based)."""
    with fs.open(path, "rb") as f:
        data = f.read()
    if path.lower().endswith(".gz"):
        data = gzip.decompress(data)
    if ".parquet" in path.lower():
        for i, rec in enumerate(pq.read_table(io.BytesIO(data)).to_pylist(), 1):
            yield i, rec
        return
    for i, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        yield i, rec if isinstance(rec, dict) else None


def _inputs(source, root: str) -> tuple[object, list[str], list[dict]]:
    uri = source.resolved_uri(root)
    fs, files, _ = list_files(uri, "jsonl")
    files = sorted(set(files) | set(list_files(uri, "parquet")[1]))
    if not files:
        raise ConfigError(f"data.sources.{source.name}", [f"no .jsonl or .parquet files at {uri}"])
    return fs, files, [{"uri": fs.unstrip_protocol(p), "sha256": sha256_file(fs, p), "bytes": fs.size(p)}
                       for p in files]


def _scan_turns(messages: list[dict], scanner, policy: str) -> tuple[list[dict] | None, dict[str, int]]:
    """The conversation with each turn's personal data handled by the source's policy:
    (redacted messages, counts), or (None, counts) when the policy drops it."""
    found: dict[str, int] = {}
    out = []
    for m in messages:
        m = dict(m)
        text, counts = scanner.redact(m["content"]) if m["content"] else (m["content"], {})
        m["content"] = text
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                args, more = scanner.redact(c["function"]["arguments"])
                calls.append({**c, "function": {**c["function"], "arguments": args}})
                for k, n in more.items():
                    counts[k] = counts.get(k, 0) + n
            m["tool_calls"] = calls
        for k, n in counts.items():
            found[k] = found.get(k, 0) + n
        out.append(m)
    if found and policy != "redact":
        return None, found
    return out, found


def _tokenizer(config: ForgeConfig, out_dir: str) -> tuple[dict, object, str, str]:
    """(manifest tokenizer entry, transformers tokenizer, template, where it came from): the reused
    tokenizer copied into the dataset, forge's default template written into it when it has none."""
    from transformers import AutoTokenizer

    from forge_ray.prepare.tokenizer import explicit_pad, reuse_tokenizer, tokenizer_info

    cfg = config.prepare.tokenizer
    reuse_tokenizer(cfg, out_dir)
    tok = AutoTokenizer.from_pretrained(out_dir)
    template, origin = template_of(tok)
    if origin == "default":  # saved with the data: export copies it, serving renders with it
        path = os.path.join(out_dir, "tokenizer_config.json")
        with open(path) as f:
            tcfg = json.load(f)
        tcfg["chat_template"] = template
        with open(path, "w") as f:
            json.dump(tcfg, f, indent=2, sort_keys=True)
        tok = AutoTokenizer.from_pretrained(out_dir)
    info = tokenizer_info(out_dir, explicit_pad(cfg))
    return info, tok, template, origin


def prepare_sft_dataset(config: ForgeConfig, storage: Storage | None = None) -> PreparedDataset:
    """Prepare the forge file's chat / instruction sources; the existing version if already complete."""
    from forge_ray.prepare.pii import PiiScanner
    from forge_ray.prepare.run import code_version

    check_sft_config(config)
    storage = storage or Storage(config.project.storage_root)
    cfg = config.prepare
    planned = {s.name: _inputs(s, config.project.storage_root) for s in config.data.sources}
    identity = {"inputs": {s: [(posixpath.basename(f["uri"]), f["sha256"]) for f in p[2]] for s, p in planned.items()},
                "config": config_hash(config, "data", "prepare"), "code": code_version(), "kind": "sft"}
    version = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    rel = version_dir(cfg.dataset, version)
    if storage.is_complete(rel):
        write_latest(storage, cfg.dataset, version)
        return open_dataset(storage, cfg.dataset, version)
    start = time.time()
    with storage.atomic_dir(rel) as tmp, tempfile.TemporaryDirectory(prefix="forge-sft-tok-") as local_tok:
        info, tok, template, origin = _tokenizer(config, local_tok)
        storage.fs.put(local_tok.rstrip("/") + "/", posixpath.join(tmp, TOKENIZER_DIR) + "/", recursive=True)
        sources = {}
        for source in config.data.sources:
            scanner = PiiScanner(cfg.pii, cfg.pii.entities_of(source.name))
            policy = cfg.pii.policy(source.sensitivity)
            fs, files, inputs = planned[source.name]
            sources[source.name] = _prepare_source(source, fs, files, inputs, scanner, policy, tok, template,
                                                   config, info, storage.fs, tmp)
        manifest = {
            "dataset": cfg.dataset, "version": version, "seq_len": cfg.seq_len,
            "source_order": config.data.names, "code_version": code_version(),
            "config_hash": config_hash(config, "data", "prepare"),
            "config": redacted_dump(config, include={"data", "prepare"}),
            "tokenizer": info, "loss_mask": True,
            "sft": {"chat_template": origin, "formats": {s.name: s.format for s in config.data.sources}},
            "sources": sources, "seconds": round(time.time() - start, 2),
        }
        with storage.fs.open(posixpath.join(tmp, MANIFEST), "wb") as f:
            f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    write_latest(storage, cfg.dataset, version)
    return open_dataset(storage, cfg.dataset, version)


def _prepare_source(source, fs, files, inputs, scanner, policy, tok, template, config, info, out_fs, out) -> dict:
    cfg = config.prepare
    counts = {"input": 0, "kept": 0, "redacted": 0, "dropped": {}, "quarantined": {}}
    quarantine: list[dict] = []
    seen: set[str] = set()
    pii_found: dict[str, int] = {}
    items: dict[str, list] = {sp: [] for sp in SPLITS}
    docs = {sp: 0 for sp in SPLITS}
    fields = dict(messages_field=source.messages_field, prompt_field=source.prompt_field,
                  completion_field=source.completion_field, system_field=source.system_field)

    def bump(kind: str, reason: str) -> None:
        counts[kind][reason] = counts[kind].get(reason, 0) + 1

    for file_idx, path in enumerate(files):
        name = posixpath.basename(path)
        for pos, rec in _records(fs, path):
            counts["input"] += 1
            raw = json.dumps(rec, sort_keys=True, ensure_ascii=False) if rec is not None else f"{name}:{pos}"
            digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
            messages, reason = (conversation(rec, source.format, **fields) if rec is not None
                                else (None, "invalid_json"))
            if messages is not None:
                key = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
                if key in seen:
                    bump("dropped", "duplicate")
                    continue
                seen.add(key)
                messages, found = _scan_turns(messages, scanner, policy)
                for k, n in found.items():
                    pii_found[k] = pii_found.get(k, 0) + n
                if messages is None:
                    bump("dropped", "pii")
                    continue
                try:
                    ids, mask = render_masked(messages, tok, template)
                except Exception as e:  # noqa: BLE001 - a template error is this record's, quarantined
                    ids, reason = None, getattr(e, "reason", "template_error")
                if ids is not None and len(ids) > cfg.seq_len:
                    reason = "too_long"
                elif ids is not None and not mask.any():
                    reason = "no_assistant_tokens"
                elif ids is not None:
                    counts["redacted" if found else "kept"] += 1
                    rec_id = str(rec.get(source.id_field)) if source.id_field else f"{name}:{pos}"
                    split = "eval" if split_hash(cfg.seed, source.name, rec_id, file_idx) < cfg.eval_fraction else "train"
                    items[split].append((ids, mask))
                    docs[split] += 1
                    continue
            bump("quarantined", reason)
            quarantine.append({"reason": reason, "position": f"{name}:{pos}", "sha256": digest})
    qpath = posixpath.join(out, "quarantine", f"{source.name}.jsonl")
    out_fs.makedirs(posixpath.dirname(qpath), exist_ok=True)
    with out_fs.open(qpath, "wb") as f:
        f.write("".join(json.dumps(q, sort_keys=True) + "\n" for q in quarantine).encode())
    splits = {}
    for sp in SPLITS:
        splits[sp] = _write_split(items[sp], source.name, sp, docs[sp], cfg, info["pad_token_id"], out_fs, out)
    return {"inputs": inputs, "counts": counts, "pii_found": dict(sorted(pii_found.items())),
            "quarantine": f"quarantine/{source.name}.jsonl", "splits": splits}


def _write_split(items, source: str, split: str, documents: int, cfg, pad_id: int, fs, out: str) -> dict:
    rows = pack_conversations(items, cfg.seq_len, pad_id)
    n = len(rows["input_ids"])
    shards = []
    for index, lo in enumerate(range(0, n, cfg.shard_sequences)):
        hi = min(n, lo + cfg.shard_sequences)
        table = sft_shard_table(rows["input_ids"][lo:hi], rows["position_ids"][lo:hi], rows["loss_mask"][lo:hi], lo)
        buf = io.BytesIO()
        pq.write_table(table, buf, **_PARQUET_OPTIONS)
        data = buf.getvalue()
        rel = shard_relpath(source, split, index)
        fs.makedirs(posixpath.dirname(posixpath.join(out, rel)), exist_ok=True)
        with fs.open(posixpath.join(out, rel), "wb") as f:
            f.write(data)
        shards.append({"path": rel, "rows": hi - lo, "sha256": hashlib.sha256(data).hexdigest()})
    real = int(sum(len(ids) for ids, _ in items))
    return {"documents": documents, "sequences": n, "tokens": real, "padding_tokens": n * cfg.seq_len - real,
            "target_tokens": int(sum(int(m.sum()) for _, m in items)), "shards": shards}


def sft_shard_table(ids: np.ndarray, pos: np.ndarray, mask: np.ndarray, first_row: int) -> pa.Table:
    """A shard of [n, seq_len] token ids, positions and loss masks (rows first_row..)."""
    n, seq_len = ids.shape
    offsets = pa.array(np.arange(0, (n + 1) * seq_len, seq_len, dtype=np.int32))
    return pa.Table.from_arrays([
        pa.ListArray.from_arrays(offsets, pa.array(ids.reshape(-1).astype(np.int32))),
        pa.ListArray.from_arrays(offsets, pa.array(pos.reshape(-1).astype(np.int32))),
        pa.ListArray.from_arrays(offsets, pa.array(mask.reshape(-1).astype(np.int8))),
        pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
    ], schema=SFT_SHARD_SCHEMA)
