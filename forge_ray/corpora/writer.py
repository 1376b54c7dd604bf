"""Writing the embedded corpora under `<storage_root>/corpora/` (idempotent, atomic)."""

from __future__ import annotations

import io
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq

from forge_ray.corpora.code import code_records
from forge_ray.corpora.docs import docs_records
from forge_ray.corpora.escalations import escalation_records
from forge_ray.corpora.tickets import ticket_records
from forge_ray.storage import Storage

log = logging.getLogger(__name__)

CORPORA_DIR = "corpora"

# scale 1.0 is the demo size (~3 MB of text); tests use a small fraction.
_FULL = {"docs_topics": None, "code_bytes": 2_000_000, "tickets": 1200, "escalations": 300}
# Written last: its presence means every corpus file is there (pipeline.ensure_embedded_corpora).
LAST_FILE = "escalations.planted.json"


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _parquet(records: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buf, compression="zstd")
    return buf.getvalue()


def write_corpora(storage: Storage, scale: float = 1.0, seed: int = 0) -> dict[str, dict]:
    """Write docs (jsonl), code (parquet), tickets and escalations (jsonl + planted values); return a summary.

    The output is a pure function of (scale, seed, Python version): re-running rewrites
    the same bytes, so content hashes in later manifests stay stable.
    """
    if not 0 < scale <= 1.0:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    from pydoc_data.topics import topics

    n_topics = max(1, int(len(topics) * scale))
    docs = list(docs_records(limit=n_topics))
    code = list(code_records(max_bytes=max(50_000, int(_FULL["code_bytes"] * scale))))
    tickets, planted = ticket_records(n=max(20, int(_FULL["tickets"] * scale)), seed=seed)
    escalations, esc_planted = escalation_records(n=max(20, int(_FULL["escalations"] * scale)), seed=seed)

    files = {
        f"{CORPORA_DIR}/docs/docs.jsonl": _jsonl(docs),
        f"{CORPORA_DIR}/code/code.parquet": _parquet(code),
        f"{CORPORA_DIR}/tickets/tickets.jsonl": _jsonl(tickets),
        f"{CORPORA_DIR}/tickets.planted.json": (json.dumps(planted, indent=2) + "\n").encode(),
        f"{CORPORA_DIR}/escalations/escalations.jsonl": _jsonl(escalations),
        f"{CORPORA_DIR}/{LAST_FILE}": (json.dumps(esc_planted, indent=2) + "\n").encode(),
    }
    for rel, data in files.items():
        storage.write_bytes(rel, data)
    summary = {
        "docs": {"records": len(docs), "bytes": len(files[f"{CORPORA_DIR}/docs/docs.jsonl"])},
        "code": {"records": len(code), "bytes": sum(len(r["text"]) for r in code)},
        "tickets": {
            "records": len(tickets),
            "bytes": len(files[f"{CORPORA_DIR}/tickets/tickets.jsonl"]),
            "planted_values": len(planted["values"]),
            "canaries": len(planted["canaries"]),
        },
        "escalations": {
            "records": len(escalations),
            "bytes": len(files[f"{CORPORA_DIR}/escalations/escalations.jsonl"]),
            "planted_values": len(esc_planted["values"]),
            "canaries": len(esc_planted["canaries"]),
        },
    }
    log.info("wrote embedded corpora under %s: %s", storage.url(CORPORA_DIR), summary)
    return summary
