"""Reading planned samples from shards, stream arguments, and the consumption check (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from forge_ray.config.mixture import MixtureConfig
from forge_ray.mixture import ConsumptionRecord, MixtureError, TrainStream, build_plan, check_consumption
from forge_ray.mixture.reader import read_samples
from forge_ray.mixture.stream import rank_slots
from forge_ray.prepare.dataset import shard_table, write_shard
from forge_ray.storage import Storage
from forge_ray.testing.synthetic_dataset import PAD, write_synthetic_dataset

SIZES = {"docs": 50, "code": 20, "tickets": 9}
CFG = MixtureConfig(weights={"docs": 0.5, "code": 0.3, "tickets": 0.2}, seed=5)


@pytest.fixture
def dataset(tmp_path):
    return write_synthetic_dataset(Storage(str(tmp_path)), "mix", SIZES, seq_len=16, rows_per_shard=7)


def test_read_samples_returns_the_planned_sequences_across_shards(dataset):
    plan = build_plan(dataset, CFG, global_batch_size=10, total_steps=20)
    for step in (0, 7, 19):
        sources, rows = plan.batch(step)
        out = read_samples(plan, sources, rows)
        assert out["input_ids"].shape == (10, 16) and out["input_ids"].dtype == np.int64
        assert np.array_equal(out["input_ids"][:, 0], rows) and np.array_equal(out["input_ids"][:, 1], sources)
        expected = [dataset.read_split(plan.sources[s], "train")["position_ids"][int(r)].as_py() for s, r in zip(sources, rows, strict=True)]
        assert out["position_ids"].tolist() == expected


def test_labels_are_the_tokens_and_padding_is_the_plans_pad_id(dataset):
    plan = build_plan(dataset, CFG, global_batch_size=10, total_steps=20)
    assert plan.pad_token_id == PAD
    sources = np.array([0, 0, 2], dtype=np.int64)
    rows = np.array([49, 3, 8], dtype=np.int64)  # docs' last row, a middle row, tickets' last row
    out = read_samples(plan, sources, rows)
    assert np.array_equal(out["labels"], out["input_ids"])
    assert (out["input_ids"][[0, 2], 8:] == PAD).all()  # the last rows end in padding
    assert not (out["input_ids"][1] == PAD).any()


def test_a_shard_that_does_not_match_its_manifest_fails_loudly(dataset):
    plan = build_plan(dataset, CFG, global_batch_size=10, total_steps=2)
    sp = plan.source_plans[1]
    uri = sp.shard_uris[1]
    ids = np.zeros((7, 16), dtype=np.int32)
    write_shard(dataset.storage.fs, dataset.storage.fs._strip_protocol(uri), shard_table(ids, ids, first_row=100))
    with pytest.raises(MixtureError, match="does not match the manifest's row order"):
        read_samples(plan, np.array([1]), np.array([8]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rank=0, world_size=3, micro_batch_size=1), "does not split over 3 workers"),
        (dict(rank=0, world_size=2, micro_batch_size=3), "not a multiple of world_size 2 x micro batch 3"),
        (dict(rank=2, world_size=2, micro_batch_size=1), "rank 2 is not in a world of 2"),
        (dict(rank=0, world_size=1, micro_batch_size=1, start_step=21), "start_step 21 outside"),
    ],
)
def test_stream_arguments_are_checked(dataset, kwargs, message):
    plan = build_plan(dataset, CFG, global_batch_size=10, total_steps=20)
    with pytest.raises(MixtureError, match=message):
        TrainStream(plan, **kwargs)
    assert len(TrainStream(plan, 1, 2, 5, start_step=20)) == 0 and TrainStream(plan, 1, 2, 5).accumulation == 1


def _train(plan, run_dir, world, start, stop):
    """What a Ray Train attempt at `world` workers records for steps start..stop-1."""
    for rank in range(world):
        rec = ConsumptionRecord(str(run_dir), rank=rank, world_size=world, start_step=start)
        for step in range(start, stop):
            rec.add(step, [rank_slots(plan, rank, world, step)])


def test_consumption_check_counts_the_last_attempt_of_a_rerun_step(dataset, tmp_path):
    plan = build_plan(dataset, CFG, global_batch_size=10, total_steps=12)
    _train(plan, tmp_path, world=2, start=0, stop=5)  # step 4 trained, then the run fails before its checkpoint
    _train(plan, tmp_path, world=1, start=4, stop=9)  # resumed at 1 worker from cursor 4; step 8 lost
    _train(plan, tmp_path, world=2, start=8, stop=12)  # grown back to 2 from cursor 8
    report = check_consumption(plan, str(tmp_path))
    assert report.steps == 12 and report.samples == 120
    assert report.world_sizes == [2] * 4 + [1] * 4 + [2] * 4
    assert report.superseded == 2 + 1  # step 4 on both ranks of the first attempt, step 8 of the second


def test_consumption_check_names_skipped_steps_and_wrong_samples(dataset, tmp_path):
    plan = build_plan(dataset, CFG, global_batch_size=10, total_steps=6)
    _train(plan, tmp_path, world=2, start=0, stop=3)
    _train(plan, tmp_path, world=2, start=4, stop=6)  # resumed one step too late
    with pytest.raises(MixtureError, match=r"steps never trained: \[3\].*planned sample\(s\) never consumed"):
        check_consumption(plan, str(tmp_path))
    wrong = tmp_path / "wrong"
    rec = ConsumptionRecord(str(wrong), rank=0, world_size=1, start_step=0)
    for step in range(6):
        slots = rank_slots(plan, 0, 1, step)
        if step == 2:
            slots = {**slots, "row": slots["row"][::-1]}  # the stream delivered other sequences
        rec.add(step, [slots])
    with pytest.raises(MixtureError, match=r"step 2: sample 2\d was \("):
        check_consumption(plan, str(wrong))
