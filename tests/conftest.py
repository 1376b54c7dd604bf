"""Shared fixtures: one local Ray cluster per test run, small embedded corpora, config files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import forge_ray  # noqa: F401  (applies the offline environment before Ray is imported)
from tests.s3_server import s3_env, s3_root, s3_server  # noqa: F401  (fixtures: a SeaweedFS S3 server)

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "jobs" / "configs" / "demo.yaml"
# The demo forge file without its synthetic source, for tests that train on a prepared dataset they did not
# synthesise (the demo's mixture weighs escalations_synthetic, which only `forge synthesize` / the pipeline makes).
DEMO_WITHOUT_SYNTHETIC = ["synthesize.sources={}", "mixture.weights={docs: 0.4, code: 0.3, tickets: 0.3, escalations: 0}",
                          "mixture.max_epochs={tickets: 4.0}"]


def pytest_collection_modifyitems(items):
    # Everything under tests/integration runs real Ray / DeepSpeed / vLLM.
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole test run (or the one RAY_ADDRESS names)."""
    import ray

    from forge_ray.cluster import connect

    connect(num_cpus=int(os.environ.get("FORGE_TEST_NUM_CPUS", "8")), object_store_mb=1024)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def small_corpora(tmp_path_factory):
    """The embedded corpora at a small scale, written once under a session storage root."""
    from forge_ray.corpora import write_corpora
    from forge_ray.storage import Storage

    root = tmp_path_factory.mktemp("corpora_root")
    summary = write_corpora(Storage(str(root)), scale=0.05)
    return root, summary


@pytest.fixture
def demo_config_at(tmp_path, small_corpora):
    """A copy of the demo forge file whose storage root holds the small corpora."""
    import yaml

    root, _ = small_corpora
    storage = tmp_path / "root"
    shutil.copytree(root, storage)
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["project"]["storage_root"] = str(storage)
    path = tmp_path / "forge.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def prepared_dataset(tmp_path_factory, small_corpora, ray_cluster):
    """The small corpora prepared once per test session: (storage_root, PreparedDataset).

    The demo forge file's `prepare` section with a small vocabulary (512) and seq_len 128.
    """
    from forge_ray.config import load_config
    from forge_ray.prepare.run import prepare_dataset

    corpora_root, _ = small_corpora
    root = tmp_path_factory.mktemp("prepared_root")
    shutil.copytree(corpora_root, root, dirs_exist_ok=True)
    config = load_config(DEMO_CONFIG, overrides=[
        f"project.storage_root={root}", "prepare.seq_len=128", "prepare.tokenizer.vocab_size=512",
    ])
    return root, prepare_dataset(config)


@pytest.fixture(scope="session")
def sft_version(ray_cluster, tmp_path_factory):
    """A tiny base model fine-tuned on the embedded instruction set (with malformed conversations mixed
    in; full SFT, 120 steps) and exported: test_sft's full run and the SFT model GRPO starts from. {"ws": SftWorkspace, "dataset", "config", "result", "exported"}."""
    from forge_ray.export import export_run
    from forge_ray.prepare.run import prepare_dataset
    from forge_ray.testing.sft import MALFORMED_CONVERSATIONS, sft_config, sft_workspace
    from forge_ray.train import run_training

    ws = sft_workspace(tmp_path_factory.mktemp("sft_version"), n=1200)
    with ws.data.open("a") as f:  # quarantined by prepare (tests/integration/test_sft.py counts them)
        f.write("".join(json.dumps(b) + "\n" for b in MALFORMED_CONVERSATIONS) + "not json\n")
    config = sft_config(ws, ["train.run_name=full", "train.steps=120", "train.log_every=1"])
    dataset = prepare_dataset(config)
    result = run_training(config, dataset)
    return {"ws": ws, "dataset": dataset, "config": config, "result": result,
            "exported": export_run(result, config, dataset)}
