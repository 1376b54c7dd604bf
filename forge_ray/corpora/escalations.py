"""`escalations`: the demo's restricted source, tickets escalated to Kestrel's account team.

    records, planted = escalation_records(n=300, seed=0)   # ids E-00-00000 ...

Made by the tickets generator (tickets.py) under a seed of its own, so no escalation repeats a
ticket; each carries the same planted personal values and a few canaries, listed in `planted`
(written as `escalations.planted.json`). The demo marks the source `restricted`: prepare routes
every record to `restricted/`, none reaches the shards, and the synthesize stage turns them into
`escalations_synthetic`, which the mixture weighs like any other source.
"""

from __future__ import annotations

from forge_ray.corpora.tickets import ticket_records

_SEED_OFFSET = 7919  # a seed stream apart from the tickets' (ticket_records(seed) for seed 0, 1, ...)


def escalation_records(n: int = 300, seed: int = 0, canaries: int = 3) -> tuple[list[dict], dict]:
    """Return (records, planted) as `ticket_records` does, with ids E-<seed>-<n> and an escalation level."""
    records, planted = ticket_records(n=n, seed=seed + _SEED_OFFSET, canaries=canaries)
    ids = {rec["id"]: f"E-{seed:02d}-{i:05d}" for i, rec in enumerate(records)}
    out = [{**rec, "id": ids[rec["id"]], "escalated_to": "account team" if i % 3 else "legal"}
           for i, rec in enumerate(records)]
    planted = {"seed": seed, "values": [{**v, "id": ids[v["id"]]} for v in planted["values"]],
               "canaries": [{**c, "id": ids[c["id"]]} for c in planted["canaries"]]}
    return out, planted
