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
