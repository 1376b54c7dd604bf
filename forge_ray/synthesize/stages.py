"""The Ray Data stages of synthesis: generate samples from scanned records, then check each one.

Both are plain functions over numpy batches: a worker process keeps its PII scanner between tasks
(records.py `_scanner`), and the generator and the privacy index travel in `fn_kwargs`.
"""

from __future__ import annotations

import json

from forge_ray.synthesize.records import as_record


def generate_stage(batch: dict, gen, samples: int, seed: int, source: str) -> dict:
    """Scanned records -> samples {index, j, text, inserted (JSON), prompt}."""
    records = [as_record({k: batch[k][i] for k in ("index", "text", "spans", "redacted")})
               for i in range(len(batch["index"]))]
    out = gen.generate(records, samples, seed, source)
    return {"index": [s.index for s in out], "j": [s.j for s in out], "text": [s.text for s in out],
            "inserted": [json.dumps(s.inserted) for s in out], "prompt": [s.prompt for s in out]}


def check_stage(batch: dict, index, pii_cfg, entities: list[str], rescan: bool) -> dict:
    """Samples + {failed (JSON list, in check order), distance, shared}: every privacy check per sample."""
    from forge_ray.synthesize.records import _scanner

    scanner = _scanner(pii_cfg, tuple(entities)) if rescan else None
    failed, distance, shared = [], [], []
    for text, i, inserted in zip(batch["text"], batch["index"], batch["inserted"], strict=True):
        text = str(text)
        spans = [(s.start, s.end, s.entity) for s in scanner.find(text)] if scanner else None
        ranges = [tuple(x) for x in json.loads(str(inserted))]
        v = index.check(text, int(i), ranges, spans) if text.strip() else None
        failed.append(json.dumps(v.failed if v else ["empty"]))
        distance.append(v.distance if v else 1.0)
        shared.append(v.shared_tokens if v else 0)
    return {**batch, "failed": failed, "distance": distance, "shared": shared}
