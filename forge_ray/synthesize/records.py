"""What the stage reads and makes: restricted records with their detected spans, and samples.

    records = read_restricted(dataset, "tickets")     # [{"index", "text", ...}] in input order
    rng = sample_rng(seed, "tickets", index, j)        # one seeded stream per (record, sample)

The restricted records are the `restricted/<source>.jsonl` side output of prepare
(forge_ray/prepare/outputs.py). Lineage keeps their hashes, never their content or ids (an id may
itself be a customer number).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field

from forge_ray.errors import ForgeError
from forge_ray.prepare.dataset import PreparedDataset, version_dir


class SynthesizeError(ForgeError):
    """The synthesize stage cannot run as configured (bad input is named before any generation)."""

    exit_code = 2


@dataclass(frozen=True)
class SourceRecord:
    """One restricted record: its text, the entity spans the PII scanner found, and its redacted form."""

    index: int                      # position in the restricted file (the seed stream's key)
    text: str
    spans: tuple[tuple[int, int, str], ...]  # (start, end, entity)
    redacted: str

    def values(self) -> list[tuple[str, str]]:
        """(entity, value) of every detected span."""
        return [(e, self.text[s:t]) for s, t, e in self.spans]


@dataclass
class Sample:
    """One synthetic record before its privacy checks; `inserted` are the fakes' character ranges."""

    index: int
    j: int
    text: str
    inserted: list[tuple[int, int]] = field(default_factory=list)
    prompt: str = ""


def sample_rng(seed: int, source: str, index: int, j: int) -> random.Random:
    """The random stream of sample j of record `index`: independent of batching and worker count."""
    return random.Random(f"forge-synthesize/{seed}/{source}/{index}/{j}")


def restricted_rel(dataset: PreparedDataset, source: str) -> str:
    entry = dataset.manifest["sources"][source].get("restricted", f"restricted/{source}.jsonl")
    return f"{version_dir(dataset.dataset, dataset.version)}/{entry}"


def read_restricted(dataset: PreparedDataset, source: str, key: bytes | None = None) -> tuple[list[dict], dict]:
    """(records {index, text}, lineage {file, sha256, records, records_sha256}) of a restricted source.

    Reads the file as prepare writes it (forge_ray/prepare/outputs.py): one JSON line per record,
    its text in clear or, with a key, inside `encrypted` (Fernet, prepare's `decrypt`).
    """
    from forge_ray.prepare.outputs import decrypt

    if source not in dataset.manifest["sources"]:
        raise SynthesizeError(f"dataset {dataset.dataset}/{dataset.version} has no source {source!r}")
    rel = restricted_rel(dataset, source)
    if not dataset.storage.exists(rel):
        raise SynthesizeError(f"{dataset.storage.url(rel)} is missing: prepare wrote no restricted output")
    raw = dataset.storage.read_bytes(rel)
    records, digests = [], hashlib.sha256()
    for line in raw.decode().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if "encrypted" in rec:
            if key is None:
                raise SynthesizeError(f"{dataset.storage.url(rel)} is encrypted: configure prepare.privacy.key_env "
                                      "or key_file with its key")
            rec = {**rec, **json.loads(decrypt(key, rec["encrypted"]))}
        text = rec["text"]
        digests.update(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
        records.append({"index": len(records), "text": text})
    lineage = {"file": "/".join(rel.rsplit("/", 2)[-2:]), "sha256": hashlib.sha256(raw).hexdigest(),
               "records": len(records), "records_sha256": digests.hexdigest()}
    return records, lineage


def scan_records(batch: dict, pii_cfg, entities: list[str]) -> dict:
    """Ray Data stage: the spans and redacted form of each restricted record (the prepare scanner)."""
    from forge_ray.prepare.pii import placeholder

    scanner = _scanner(pii_cfg, tuple(entities))
    spans, redacted = [], []
    for text in batch["text"]:
        found = scanner.find(str(text))
        spans.append(json.dumps([[s.start, s.end, s.entity] for s in found]))
        out, last = [], 0
        for s in found:
            out += [text[last:s.start], placeholder(s.entity)]
            last = s.end
        redacted.append("".join(out) + text[last:])
    return {"index": batch["index"], "text": batch["text"], "spans": spans, "redacted": redacted}


_SCANNERS: dict = {}


def _scanner(pii_cfg, entities: tuple[str, ...]):
    """One scanner per process and configuration (its detectors, spaCy included, load once)."""
    from forge_ray.prepare.pii import PiiScanner

    key = (pii_cfg.model_dump_json(), entities)
    if key not in _SCANNERS:
        _SCANNERS.clear()
        _SCANNERS[key] = PiiScanner(pii_cfg, list(entities))
    return _SCANNERS[key]


def as_record(row: dict) -> SourceRecord:
    spans = tuple((int(s), int(e), str(k)) for s, e, k in json.loads(row["spans"]))
    return SourceRecord(int(row["index"]), str(row["text"]), spans, str(row["redacted"]))
