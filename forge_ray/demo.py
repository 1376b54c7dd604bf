"""The demo: the pipeline on the embedded default corpora, stage by stage, saying what it did.

Each room adds its stage here as it lands (prepare -> mixture -> train -> eval -> serve).
"""

from __future__ import annotations

import logging

from forge_ray.cluster import connect_for
from forge_ray.config import ForgeConfig
from forge_ray.corpora import write_corpora
from forge_ray.storage import Storage

log = logging.getLogger(__name__)


def count_records(config: ForgeConfig) -> dict[str, int]:
    """A first Ray Data job over the sources: records per source (read on the cluster)."""
    import ray.data

    readers = {"jsonl": ray.data.read_json, "parquet": ray.data.read_parquet, "text": ray.data.read_text}
    counts = {}
    for source in config.data.sources:
        uri = source.resolved_uri(config.project.storage_root)
        counts[source.name] = readers[source.format](uri).count()
    return counts


def run_demo(config: ForgeConfig, address: str | None = None, scale: float = 1.0) -> dict:
    storage = Storage(config.project.storage_root)
    summary = write_corpora(storage, scale=scale, seed=config.prepare.seed)
    print(f"[1/2] embedded corpora written under {storage.url('corpora')}")
    for name, info in summary.items():
        print(f"      {name:8s} {info['records']:6d} records  {info['bytes'] / 1e6:6.2f} MB")
    connect_for(config, address)
    counts = count_records(config)
    print("[2/2] Ray Data read every source on the cluster:")
    for name, n in counts.items():
        print(f"      {name:8s} {n:6d} records")
    return {"corpora": summary, "counts": counts}
