"""The manifest's counts: per source, every input record as exactly one outcome, and a summary.

    counts = {"input": n, "kept": n, "redacted": n,
              "dropped": {reason: n}, "quarantined": {reason: n}}
    input == kept + redacted + sum(dropped) + sum(quarantined)      (checked: `reconcile`)
"""

from __future__ import annotations

from forge_ray.errors import ForgeError


class ReconcileError(ForgeError):
    """The manifest's counts do not add up: a record was lost or counted twice."""


def build_counts(rows: list[dict], names: list[str]) -> dict[str, dict]:
    """Counts per source from rows {source, outcome, reason, count()} (a Ray Data groupby)."""
    counts = {s: {"input": 0, "kept": 0, "redacted": 0, "dropped": {}, "quarantined": {}} for s in names}
    for r in rows:
        c, n = counts[r["source"]], int(r["count()"])
        c["input"] += n
        if r["outcome"] == "ok":
            c["kept"] += n
        elif r["outcome"] == "redacted":
            c["redacted"] += n
        else:
            bucket = c[r["outcome"]]
            bucket[r["reason"]] = bucket.get(r["reason"], 0) + n
    for c in counts.values():
        c["dropped"] = dict(sorted(c["dropped"].items()))
        c["quarantined"] = dict(sorted(c["quarantined"].items()))
    reconcile(counts)
    return counts


def tally_stage(batch, dups) -> dict:
    """Per block: how many records of each (source, outcome, reason), once the dedup decisions
    (`dups`, a `DupIndex` or {}) apply; and the smallest split hash of each source's live records."""
    import numpy as np

    from forge_ray.prepare.stages import LIVE, apply_dedup

    batch = apply_dedup(batch, dups)
    outcome, reason = batch["outcome"].to_pylist(), batch["reason"].to_pylist()
    live = np.isin(np.asarray(outcome, dtype=object), LIVE)
    hashes = batch["split_hash"].to_numpy()
    tally: dict[tuple, list] = {}
    for i, k in enumerate(zip(batch["source"].to_pylist(), outcome, reason, strict=True)):
        t = tally.setdefault(k, [0, 2.0])
        t[0] += 1
        if live[i]:
            t[1] = min(t[1], float(hashes[i]))
    keys = list(tally)
    return {"source": [k[0] for k in keys], "outcome": [k[1] for k in keys], "reason": [k[2] for k in keys],
            "count()": [tally[k][0] for k in keys], "min_hash": [tally[k][1] for k in keys]}


def merge_tallies(rows: list[dict], names: list[str]) -> tuple[dict[str, dict], dict[str, float]]:
    """(counts per source, smallest live split hash per source) from the blocks' tallies.

    The document with the smallest split hash of each source is always held out, so every
    source has an evaluation split however small it is.
    """
    forced: dict[str, float] = {}
    for r in rows:
        if r["min_hash"] < forced.get(r["source"], 2.0):
            forced[r["source"]] = r["min_hash"]
    return build_counts(rows, names), forced


def reconcile(counts: dict[str, dict]) -> None:
    for source, c in counts.items():
        total = c["kept"] + c["redacted"] + sum(c["dropped"].values()) + sum(c["quarantined"].values())
        if total != c["input"]:
            raise ReconcileError(f"source {source!r}: {c['input']} input records but {total} outcomes")


def summary_line(manifest: dict) -> str:
    parts = []
    for s, info in manifest["sources"].items():
        c, sp = info["counts"], info["splits"]
        parts.append(
            f"{s}: {c['input']} in, {c['kept'] + c['redacted']} kept ({c['redacted']} redacted), "
            f"{sum(c['dropped'].values())} dropped, {sum(c['quarantined'].values())} quarantined, "
            f"{sp['train']['tokens']}+{sp['eval']['tokens']} tokens"
        )
    return "; ".join(parts)


def summary_table(manifest: dict) -> str:
    """A few lines a person reads: outcomes, reasons and tokens per source."""
    lines = [f"dataset {manifest['dataset']} version {manifest['version']}  seq_len {manifest['seq_len']}  "
             f"vocab {manifest['tokenizer']['vocab_size']}  code {manifest['code_version']}"]
    header = f"  {'source':10s} {'input':>7s} {'kept':>7s} {'redact':>7s} {'dropped':>7s} {'quarant':>7s}" \
             f" {'train seq':>9s} {'eval seq':>8s} {'tokens':>9s}"
    lines.append(header)
    for s in manifest.get("source_order", manifest["sources"]):
        info = manifest["sources"][s]
        c, sp = info["counts"], info["splits"]
        lines.append(
            f"  {s:10s} {c['input']:7d} {c['kept']:7d} {c['redacted']:7d} {sum(c['dropped'].values()):7d} "
            f"{sum(c['quarantined'].values()):7d} {sp['train']['sequences']:9d} {sp['eval']['sequences']:8d} "
            f"{sp['train']['tokens'] + sp['eval']['tokens']:9d}"
        )
        reasons = {**{f"dropped:{k}": v for k, v in c["dropped"].items()},
                   **{f"quarantined:{k}": v for k, v in c["quarantined"].items()}}
        if reasons:
            lines.append("      " + ", ".join(f"{k}={v}" for k, v in reasons.items()))
        if info.get("pii_found"):
            lines.append("      pii redacted: " + ", ".join(f"{k}={v}" for k, v in info["pii_found"].items()))
    return "\n".join(lines)
