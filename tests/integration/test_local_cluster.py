"""The local Ray cluster: explicit resources, the offline env in workers, a Ray Data job."""

from __future__ import annotations

import os

from forge_ray.offline import OFFLINE_ENV


def test_cluster_has_explicit_logical_cpus(ray_cluster):
    assert ray_cluster.cluster_resources()["CPU"] == int(os.environ.get("FORGE_TEST_NUM_CPUS", "8"))


def test_workers_get_offline_env(ray_cluster):
    @ray_cluster.remote
    def env():
        return {k: os.environ.get(k) for k in OFFLINE_ENV}

    assert ray_cluster.get(env.remote()) == OFFLINE_ENV


def test_ray_data_reads_embedded_corpora(ray_cluster, demo_config_at):
    """A trivial Ray Data job on the cluster: every embedded corpus is read in its own format."""
    import ray.data

    from forge_ray.config import load_config

    cfg = load_config(demo_config_at)
    readers = {"jsonl": ray.data.read_json, "parquet": ray.data.read_parquet}
    counts = {
        s.name: readers[s.format](s.resolved_uri(cfg.project.storage_root)).count() for s in cfg.data.sources
    }
    assert set(counts) == {"docs", "code", "tickets", "escalations"}
    assert counts["tickets"] == max(20, int(1200 * 0.05))
    assert all(n > 0 for n in counts.values())
