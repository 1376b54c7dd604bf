"""TrainStream through Ray Data on the local cluster: tensors, order across world sizes, resume."""

from __future__ import annotations

import pytest
import torch

from forge_ray.config.mixture import MixtureConfig
from forge_ray.mixture import TrainStream, build_plan
from forge_ray.storage import Storage
from forge_ray.testing.synthetic_dataset import write_synthetic_dataset


def read_all(plan, world, micro, start=0, eager=False):
    """{step: samples in global order} as `world` ranks read them, plus one micro batch to inspect."""
    steps: dict[int, list[int]] = {}
    example = None
    for rank in range(world):
        stream = TrainStream(plan, rank, world, micro, start_step=start)
        stream = stream.start() if eager else stream
        for step, micro_batches in stream:
            assert len(micro_batches) == stream.accumulation
            for batch in micro_batches:
                example = example or batch
                # the delivered sequence is the planned one: token 0 = row, token 1 = source
                assert torch.equal(batch["input_ids"][:, 0], batch["row"])
                assert torch.equal(batch["input_ids"][:, 1], batch["source"])
                steps.setdefault(step, []).extend(batch["sample"].tolist())
    return steps, example


def test_stream_delivers_the_same_global_order_to_1_and_2_workers(ray_cluster, tmp_path):
    ds = write_synthetic_dataset(Storage(str(tmp_path)), "mix", {"docs": 60, "code": 30, "tickets": 10}, seq_len=16)
    plan = build_plan(ds, MixtureConfig(weights={"docs": 0.5, "code": 0.3, "tickets": 0.2}), 8, total_steps=6)
    one, batch = read_all(plan, world=1, micro=4)
    two, _ = read_all(plan, world=2, micro=2, eager=True)  # started early, read from its thread
    assert one == two == {k: list(range(8 * k, 8 * k + 8)) for k in range(6)}
    assert batch["input_ids"].shape == batch["position_ids"].shape == batch["labels"].shape == (4, 16)
    assert all(batch[k].dtype == torch.int64 for k in ("input_ids", "position_ids", "labels", "source", "sample"))
    assert batch["source"].shape == (4,) and int(batch["source"].max()) < len(plan.sources)
    # resuming at the cursor (step 4) with another world size continues the same order
    resumed, _ = read_all(plan, world=2, micro=4, start=4)
    assert resumed == {k: one[k] for k in (4, 5)}


def test_stream_over_the_prepared_demo_dataset(ray_cluster, prepared_dataset):
    """The prepare room's real output, the demo forge file's mixture: tokens are the shards' rows."""
    from forge_ray.config import load_config
    from tests.conftest import DEMO_CONFIG

    _, dataset = prepared_dataset
    mixture = load_config(DEMO_CONFIG).mixture
    # the demo's escalations_synthetic is made by synthesize, not prepare: this dataset has none
    mixture = mixture.model_copy(update={f: {n: v for n, v in getattr(mixture, f).items() if n != "escalations_synthetic"}
                                         for f in ("weights", "max_epochs")})
    plan = build_plan(dataset, mixture, global_batch_size=8, total_steps=5)
    assert plan.sources == dataset.sources and plan.seq_len == dataset.seq_len
    report = plan.to_json()
    assert sum(s["samples"] for s in report["sources"]) == 40
    assert [s["target_share"] for s in report["sources"]] == pytest.approx([0.35 / 0.85, 0.25 / 0.85, 0.25 / 0.85, 0.0], abs=1e-6)
    tables = {name: dataset.read_split(name, "train") for name in plan.sources}
    seen = []
    for rank in range(2):
        for step, micro_batches in TrainStream(plan, rank, 2, 2):
            for batch in micro_batches:
                assert all(8 * step <= i < 8 * step + 8 for i in batch["sample"].tolist())
                for i in range(len(batch["sample"])):
                    name = plan.sources[int(batch["source"][i])]
                    row = int(batch["row"][i])
                    assert plan.sample_key(int(batch["sample"][i])) == (name, row)
                    assert batch["input_ids"][i].tolist() == tables[name]["input_ids"][row].as_py()
                    assert batch["position_ids"][i].tolist() == tables[name]["position_ids"][row].as_py()
                    seen.append(int(batch["sample"][i]))
    assert sorted(seen) == list(range(40))
