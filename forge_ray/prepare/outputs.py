"""The per-source side files of a version: the quarantine and the restricted output.

    quarantine/<source>.jsonl    {reason, position, id, raw, meta} per quarantined record
    restricted/<source>.jsonl    {id, position, text, pii, meta} per record routed to synthesis

Both are written for every source (empty when it has none), in input order, by the driver:
each is one file, and these records are few.
"""

from __future__ import annotations

import json
import posixpath

from forge_ray.prepare.stages import ROUTED


def write_side_outputs(scanned, fs, out: str, names: list[str]) -> None:
    """quarantine/<source>.jsonl and restricted/<source>.jsonl, in input order (every source has both)."""
    from ray.data.expressions import col

    side = scanned.filter(expr=(col("outcome") == "quarantined") | (col("reason") == ROUTED))
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
