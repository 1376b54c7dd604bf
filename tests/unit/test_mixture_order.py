"""The global sample order: realised shares, stratified batches, world-size independence, determinism."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pytest

from forge_ray.config.mixture import MixtureConfig
from forge_ray.mixture import MixtureError, build_plan
from forge_ray.mixture.stream import rank_slots
from forge_ray.storage import Storage
from forge_ray.testing.synthetic_dataset import write_synthetic_dataset

SIZES = {"docs": 3000, "code": 1500, "tickets": 700}
WEIGHTS = MixtureConfig(weights={"docs": 0.5, "code": 0.3, "tickets": 0.2}, seed=7)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(Storage(str(tmp_path_factory.mktemp("mix"))), "mix", SIZES, seq_len=8, rows_per_shard=500)


def source_counts(plan, steps):
    return np.array([np.bincount(plan.batch(k)[0], minlength=len(plan.sources)) for k in steps])


@pytest.mark.parametrize(
    "cfg",
    [WEIGHTS, MixtureConfig(strategy="temperature", alpha=0.5, seed=1), MixtureConfig(seed=2)],
    ids=["weights", "temperature", "by-size"],
)
def test_realised_shares_over_10000_samples_within_1pp_and_every_batch_within_rounding(dataset, cfg):
    plan = build_plan(dataset, cfg, global_batch_size=50, total_steps=200)  # 10,000 samples
    per_batch = source_counts(plan, range(plan.total_steps))
    realised = per_batch.sum(axis=0) / plan.total_samples
    for i, sp in enumerate(plan.source_plans):
        assert abs(realised[i] - sp.share.target_share) <= 0.01, (sp.name, realised[i], sp.share.target_share)
        # every global batch holds floor or ceil of its expected count: stratified, not lumpy
        expected = plan.global_batch_size * sp.share.expected_share(plan.total_samples)
        assert set(per_batch[:, i]) <= {int(np.floor(expected)), int(np.ceil(expected))}, sp.name
        # and every prefix of the run stays within one sample of its share
        drift = np.cumsum(per_batch[:, i]) - expected * np.arange(1, plan.total_steps + 1)
        assert np.abs(drift).max() <= 1.0 + 1e-9


def test_caps_hold_in_the_realised_order(dataset):
    cfg = MixtureConfig(weights={"docs": 1, "code": 1, "tickets": 2}, max_epochs={"tickets": 1.0}, max_share={"docs": 0.3})
    plan = build_plan(dataset, cfg, global_batch_size=40, total_steps=100)
    counts = Counter(plan.sources[s] for k in range(plan.total_steps) for s in plan.batch(k)[0])
    assert counts["tickets"] == 700  # one epoch, exactly
    assert counts["docs"] == 1200  # 30 % of 4000
    keys = plan.planned_keys()
    assert max(c for (src, _), c in keys.items() if src == "tickets") == 1  # no ticket seen twice


def test_the_same_plan_read_by_1_2_or_4_workers_is_the_same_global_order(dataset):
    plan = build_plan(dataset, WEIGHTS, global_batch_size=8, total_steps=30)
    for step in (0, 13, 29):
        src, rows = plan.batch(step)
        for world in (1, 2, 4):
            parts = [rank_slots(plan, r, world, step) for r in range(world)]
            assert np.array_equal(np.concatenate([p["source"] for p in parts]), src)
            assert np.array_equal(np.concatenate([p["row"] for p in parts]), rows)
            assert np.concatenate([p["sample"] for p in parts]).tolist() == list(range(step * 8, step * 8 + 8))
    src13, rows13 = plan.batch(13)
    assert plan.sample_key(13 * 8 + 5) == (plan.sources[int(src13[5])], int(rows13[5]))


def test_the_order_is_a_pure_function_of_seed_version_and_mixture(dataset, tmp_path):
    a = build_plan(dataset, WEIGHTS, global_batch_size=16, total_steps=20)
    b = pickle.loads(pickle.dumps(build_plan(dataset, WEIGHTS, global_batch_size=16, total_steps=20)))
    keys = lambda p: [p.sample_key(i) for i in range(0, p.total_samples, 7)]  # noqa: E731
    assert keys(a) == keys(b) and a.plan_id == b.plan_id
    reseeded = build_plan(dataset, WEIGHTS.model_copy(update={"seed": 8}), global_batch_size=16, total_steps=20)
    assert keys(reseeded) != keys(a) and reseeded.plan_id != a.plan_id
    other_version = write_synthetic_dataset(Storage(str(tmp_path)), "mix", SIZES, seq_len=8, seed=1)
    assert keys(build_plan(other_version, WEIGHTS, global_batch_size=16, total_steps=20)) != keys(a)


def test_rows_repeat_only_as_often_as_the_epochs_ask(dataset):
    cfg = MixtureConfig(weights={"docs": 0.2, "code": 0.2, "tickets": 0.6})
    plan = build_plan(dataset, cfg, global_batch_size=50, total_steps=40)  # tickets: 1200 of 700 rows
    keys = plan.planned_keys()
    for sp in plan.source_plans:
        per_row = Counter(keys.get((sp.name, row), 0) for row in range(sp.share.sequences))
        full, rest = divmod(sp.share.samples, sp.share.sequences)
        # every row is seen floor(epochs) times, `rest` of them once more: no row runs ahead
        assert per_row == Counter({full + 1: rest, full: sp.share.sequences - rest}) - Counter(), sp.name
    assert plan.source_plans[2].share.samples == 1200  # tickets: 1.71 epochs


def test_adding_a_source_keeps_each_sources_own_row_order(dataset, tmp_path):
    extra = write_synthetic_dataset(Storage(str(tmp_path)), "wiki", {"wiki": 400}, seq_len=8)
    alone = build_plan(dataset, WEIGHTS, global_batch_size=10, total_steps=30)
    cfg = MixtureConfig(weights={"docs": 0.4, "code": 0.2, "tickets": 0.2, "wiki": 0.2}, seed=7)
    mixed = build_plan([dataset, extra], cfg, global_batch_size=10, total_steps=30)
    assert mixed.sources == ["docs", "code", "tickets", "wiki"]

    def rows_of(plan, name):
        return [r for i in range(plan.total_samples) for s, r in [plan.sample_key(i)] if s == name]

    a, b = rows_of(alone, "docs"), rows_of(mixed, "docs")
    n = min(len(a), len(b))
    assert n > 50 and a[:n] == b[:n]  # re-weighted and extended, docs still reads the same row stream


def test_token_budget_sets_or_bounds_the_run_length(dataset):
    cfg = WEIGHTS.model_copy(update={"token_budget": 8 * 16 * 25 + 5})
    assert build_plan(dataset, cfg, global_batch_size=16).total_steps == 25
    assert build_plan(dataset, cfg, global_batch_size=16, total_steps=10).to_json()["total_tokens"] == 1280
    with pytest.raises(MixtureError, match="exceeds mixture.token_budget"):
        build_plan(dataset, cfg, global_batch_size=16, total_steps=26)
    with pytest.raises(MixtureError, match="total_steps .* or mixture.token_budget"):
        build_plan(dataset, WEIGHTS, global_batch_size=16)


def test_plan_errors_name_the_problem(dataset, tmp_path):
    with pytest.raises(MixtureError, match=r"names source\(s\) \['wiki'\] that no dataset has"):
        build_plan(dataset, MixtureConfig(max_share={"wiki": 0.5}), global_batch_size=4, total_steps=2)
    other = write_synthetic_dataset(Storage(str(tmp_path)), "again", {"docs": 10}, seq_len=16)
    with pytest.raises(MixtureError, match="must share seq_len"):
        build_plan([dataset, other], MixtureConfig(), global_batch_size=4, total_steps=2)
    same_len = write_synthetic_dataset(Storage(str(tmp_path)), "dup", {"docs": 10}, seq_len=8)
    with pytest.raises(MixtureError, match="source 'docs' is in both"):
        build_plan([dataset, same_len], MixtureConfig(), global_batch_size=4, total_steps=2)


def test_resolved_plan_is_reported_for_the_manifest_and_printed(dataset):
    cfg = MixtureConfig(weights={"docs": 1, "code": 1, "tickets": 2}, max_epochs={"tickets": 1.0})
    plan = build_plan(dataset, cfg, global_batch_size=40, total_steps=50)
    report = plan.to_json()
    tickets = next(s for s in report["sources"] if s["name"] == "tickets")
    assert tickets == {**tickets, "target_share": 0.5, "samples": 700, "epochs": 1.0, "capped_by": "max_epochs"}
    assert tickets["expected_share"] == pytest.approx(700 / 2000)
    assert sum(s["samples"] for s in report["sources"]) == report["total_samples"] == 2000
    assert report["datasets"] == [f"mix/{dataset.version}"]
    text = plan.summary()
    assert "tickets" in text and "max_epochs" in text and "50.0%" in text and plan.plan_id in text


def test_continued_training_on_a_new_mix_reads_fresh_rows_first(dataset):
    first = build_plan(dataset, WEIGHTS, global_batch_size=10, total_steps=20)  # 200 samples
    new_mix = MixtureConfig(weights={"docs": 0.2, "code": 0.2, "tickets": 0.6}, seed=7)
    second = build_plan(dataset, new_mix, global_batch_size=10, total_steps=20, continue_from=first.to_json())
    report = second.to_json()
    assert report["continues"] and [s["offset"] for s in report["sources"]] == [s.share.samples for s in first.source_plans]
    # each source's rows in the second run pick up where the first run's stream stopped
    longer = build_plan(dataset, WEIGHTS, global_batch_size=10, total_steps=200)
    for src, sp in enumerate(second.source_plans):
        taken = first.source_plans[src].share.samples
        nxt = longer._rows(src, np.arange(taken, taken + sp.share.samples))
        assert second._rows(src, np.arange(sp.share.samples)).tolist() == nxt.tolist(), sp.name
    # tickets: 120 fresh rows of 700, none the first run read
    seen_before = {row for (name, row) in first.planned_keys() if name == "tickets"}
    seen_now = {row for (name, row) in second.planned_keys() if name == "tickets"}
    assert len(seen_now) == 120 and not seen_now & seen_before
    with pytest.raises(MixtureError, match="same mixture.seed"):
        build_plan(dataset, new_mix.model_copy(update={"seed": 1}), 10, 20, continue_from=first.to_json())
