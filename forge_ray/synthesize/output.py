"""The synthetic source on storage, and opening it as a dataset the mixture weighs like any other.

    <root>/datasets/<dataset>/<version>/synthetic/<source>/CURRENT          (the current synthesis id)
    <root>/datasets/<dataset>/<version>/synthetic/<source>/<id>/manifest.json
    <root>/datasets/<dataset>/<version>/synthetic/<source>/<id>/shards/<name>/train-<nnnnn>.parquet
    <root>/datasets/<dataset>/<version>/synthetic/<source>/<id>/samples.jsonl   (kept records, for reports)
    <root>/datasets/<dataset>/<version>/synthetic/<source>/<id>/preview.jsonl   (a few {redacted, synthetic} pairs)

Each synthesis (its id hashes inputs, settings and code) is its own immutable folder: a rerun after a
change writes a new one and moves CURRENT to it, so a version trained on the previous one keeps its
data. (A folder written before this layout, the synthesis directly under `<source>/`, is still read.)

    synth = open_synthetic(dataset, "tickets")          # a PreparedDataset with one source, <name>
    plan = build_plan([dataset, synth], cfg.mixture, ...)
    mixed = with_synthetic(dataset, ["tickets"])        # one PreparedDataset: the dataset + its synthetic sources

`preview.jsonl` pairs a kept sample with the redacted form of the record it came from (every detected
value a placeholder such as <PERSON>: what prepare's `redact` policy puts in shards), for the run
report; it never holds a restricted record's values.

Shards are the prepared dataset's own format, packed by prepare's `pack_and_write` with its tokenizer, so
`open_synthetic` returns a `PreparedDataset` (same dataset and version, its shard paths under
`synthetic/`) and `build_plan` mixes it unchanged. The synthetic source has no eval split: held-out
perplexity is measured on real data.
"""

from __future__ import annotations

import json
import os
import posixpath

from forge_ray.prepare.dataset import MANIFEST, PreparedDataset, version_dir
from forge_ray.synthesize.records import SynthesizeError

SYNTHETIC_DIR = "synthetic"
CURRENT = "CURRENT"
SAMPLES_FILE = "samples.jsonl"
PREVIEW_FILE = "preview.jsonl"


def synthetic_rel(dataset: PreparedDataset, source: str) -> str:
    """The folder of every synthesis of `source` (and its CURRENT pointer)."""
    return f"{version_dir(dataset.dataset, dataset.version)}/{SYNTHETIC_DIR}/{source}"


def synthesis_rel(dataset: PreparedDataset, source: str, synthesis_id: str) -> str:
    return f"{synthetic_rel(dataset, source)}/{synthesis_id}"


def current_rel(dataset: PreparedDataset, source: str) -> str | None:
    """The current complete synthesis of `source`, or None."""
    storage, base = dataset.storage, synthetic_rel(dataset, source)
    if storage.exists(f"{base}/{CURRENT}"):
        rel = synthesis_rel(dataset, source, storage.read_bytes(f"{base}/{CURRENT}").decode().strip())
        return rel if storage.is_complete(rel) else None
    return base if storage.is_complete(base) else None  # the layout before syntheses were kept apart


def set_current(dataset: PreparedDataset, source: str, synthesis_id: str) -> None:
    """Point CURRENT at a complete synthesis (replaced atomically: write, then rename)."""
    if not dataset.storage.is_complete(synthesis_rel(dataset, source, synthesis_id)):
        raise SynthesizeError(f"refusing to point {source}'s CURRENT at incomplete synthesis {synthesis_id}")
    dataset.storage.write_bytes(f"{synthetic_rel(dataset, source)}/{CURRENT}", (synthesis_id + "\n").encode())


def _tokenize(batch: dict, tokenizer_json: str) -> dict:
    """Ray Data stage: token ids with the dataset's tokenizer, as prepare encodes (BOS where the
    tokenizer adds one, no other special tokens)."""
    from tokenizers import Tokenizer

    from forge_ray.prepare.tokenizer import document_prefix

    tok = Tokenizer.from_str(tokenizer_json)
    prefix = document_prefix(tok)
    texts = [str(t) for t in batch["text"]]
    ids = [prefix + e.ids for e in tok.encode_batch(texts, add_special_tokens=False)] if texts else []
    return {"source": batch["source"], "split": batch["split"], "key": batch["key"], "pii": batch["pii"],
            "input_ids": ids}


def write_synthetic(dataset: PreparedDataset, source: str, name: str, texts: list[str], manifest: dict,
                    shard_sequences: int, preview: list[dict] | None = None) -> dict:
    """Tokenize and pack `texts` (prepare's own packer, on Ray Data) and write the manifest, atomically.

    `preview`: a few {redacted, synthetic} pairs for the run report (redacted originals only)."""
    import pyarrow as pa
    import ray.data

    from forge_ray.prepare.pack import pack_and_write

    storage = dataset.storage
    tok = dataset.tokenizer_info
    with open(os.path.join(dataset.tokenizer_path, "tokenizer.json")) as f:
        tokenizer_json = f.read()
    rows = pa.table({"source": [name] * len(texts), "split": ["train"] * len(texts),
                     "key": list(range(len(texts))), "pii": ["{}"] * len(texts), "text": texts})
    with storage.atomic_dir(synthesis_rel(dataset, source, manifest["synthesis_id"])) as tmp:
        tokenized = ray.data.from_arrow(rows).map_batches(
            _tokenize, batch_format="numpy", batch_size=256, fn_kwargs={"tokenizer_json": tokenizer_json}
        ).materialize()
        splits, _ = pack_and_write(tokenized, storage.fs, tmp, [name], seq_len=dataset.seq_len,
                                   shard_sequences=shard_sequences, eos_id=tok["eos_token_id"],
                                   pad_id=tok["pad_token_id"], parts=1)
        manifest = {**manifest, "name": name, "seq_len": dataset.seq_len,
                    "tokenizer": {k: tok[k] for k in ("sha256", "eos_token_id", "pad_token_id") if k in tok},
                    "splits": {sp: splits[(name, sp)] for sp in ("train", "eval")}}
        with storage.fs.open(posixpath.join(tmp, SAMPLES_FILE), "wb") as f:
            f.write("".join(json.dumps({"text": t}) + "\n" for t in texts).encode())
        with storage.fs.open(posixpath.join(tmp, PREVIEW_FILE), "wb") as f:
            f.write("".join(json.dumps(p, sort_keys=True) + "\n" for p in preview or []).encode())
        with storage.fs.open(posixpath.join(tmp, MANIFEST), "wb") as f:
            f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    set_current(dataset, source, manifest["synthesis_id"])
    return manifest


def read_manifest(dataset: PreparedDataset, source: str, synthesis_id: str | None = None) -> dict | None:
    """The manifest of the current synthesis of `source` (or of `synthesis_id`), None when not complete."""
    rel = synthesis_rel(dataset, source, synthesis_id) if synthesis_id else current_rel(dataset, source)
    return dataset.storage.read_json(f"{rel}/{MANIFEST}") if rel and dataset.storage.is_complete(rel) else None


def open_synthetic(dataset: PreparedDataset, source: str) -> PreparedDataset:
    """The synthetic source of `source` as a PreparedDataset that `build_plan` mixes with `dataset`."""
    manifest = read_manifest(dataset, source)
    if manifest is None:
        raise SynthesizeError(f"no complete synthetic source under {dataset.storage.url(synthetic_rel(dataset, source))}"
                              " (run `forge synthesize`)")
    prefix = current_rel(dataset, source).removeprefix(version_dir(dataset.dataset, dataset.version) + "/") + "/"
    splits = {sp: {**e, "shards": [{**s, "path": prefix + s["path"]} for s in e["shards"]]}
              for sp, e in manifest["splits"].items()}
    name = manifest["name"]
    view = {**dataset.manifest, "source_order": [name], "synthetic": {"source": source, "strategy": manifest["strategy"]},
            "sources": {name: {"counts": manifest["counts"], "splits": splits}}}
    return PreparedDataset(storage=dataset.storage, dataset=dataset.dataset, version=dataset.version, manifest=view)


def with_synthetic(dataset: PreparedDataset, sources: list[str]) -> PreparedDataset:
    """`dataset` with the synthetic sources of `sources` added, as one PreparedDataset (what the pipeline
    trains on: training takes one dataset). Their shards stay under `synthetic/`; nothing is copied."""
    if not sources:
        return dataset
    manifest = {**dataset.manifest, "sources": dict(dataset.manifest["sources"]),
                "source_order": list(dataset.sources), "synthetic_sources": {}}
    for source in sources:
        synth = open_synthetic(dataset, source)
        name = synth.sources[0]
        if name in manifest["sources"]:
            raise SynthesizeError(f"synthetic source {name!r} clashes with a source of {dataset.dataset}/{dataset.version}")
        # Its "inputs" (what an exported version's lineage lists per source): the restricted file it was
        # made from, by hash only, and the synthesis that made it.
        made = read_manifest(dataset, source) or {}
        restricted = (made.get("lineage") or {}).get("restricted") or {}
        inputs = [{"uri": f"{SYNTHETIC_DIR}/{source} <- {restricted.get('file', '?')}", "sha256": restricted.get("sha256"),
                   "records": restricted.get("records"), "synthesis_id": made.get("synthesis_id")}]
        manifest["sources"][name] = {**synth.manifest["sources"][name], "inputs": inputs}
        manifest["source_order"].append(name)
        manifest["synthetic_sources"][name] = synth.manifest["synthetic"]
    return PreparedDataset(storage=dataset.storage, dataset=dataset.dataset, version=dataset.version, manifest=manifest)


def training_dataset(config, dataset: PreparedDataset) -> PreparedDataset:
    """The dataset training reads: `dataset` plus the synthetic source of every `synthesize.sources` entry
    (they must have been made: `forge synthesize`, or the pipeline, which runs it)."""
    return with_synthetic(dataset, list(config.synthesize.sources))


def list_synthetic(dataset: PreparedDataset) -> dict[str, dict]:
    """{restricted source: manifest} of every complete synthetic source of the dataset version."""
    base = f"{version_dir(dataset.dataset, dataset.version)}/{SYNTHETIC_DIR}"
    if not dataset.storage.exists(base):
        return {}
    out = {}
    for path in sorted(dataset.storage.fs.ls(dataset.storage.path(base), detail=False)):
        source = posixpath.basename(path.rstrip("/"))
        manifest = read_manifest(dataset, source) if not source.startswith(".") else None
        if manifest is not None:
            out[source] = manifest
    return out


def read_preview(dataset: PreparedDataset, source: str, limit: int = 5) -> list[dict]:
    """{redacted, synthetic} pairs: kept samples beside the redacted form of their record (for the report)."""
    current = current_rel(dataset, source)
    rel = f"{current}/{PREVIEW_FILE}"
    if current is None or not dataset.storage.exists(rel):
        return []
    lines = dataset.storage.read_bytes(rel).decode().splitlines()
    return [json.loads(x) for x in lines[:limit] if x.strip()]


def read_samples(dataset: PreparedDataset, source: str, limit: int = 5) -> list[str]:
    """The first kept synthetic records (for the run report: beside the redacted originals)."""
    current = current_rel(dataset, source)
    rel = f"{current}/{SAMPLES_FILE}"
    if current is None or not dataset.storage.exists(rel):
        return []
    lines = dataset.storage.read_bytes(rel).decode().splitlines()
    return [json.loads(x)["text"] for x in lines[:limit]]
