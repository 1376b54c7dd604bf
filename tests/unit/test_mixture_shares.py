"""Mixture strategies and caps: the resolved shares a user would check in the printed plan."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from forge_ray.config.mixture import MixtureConfig
from forge_ray.mixture.shares import MixtureError, resolve_shares, target_shares

SIZES = {"docs": 9000, "code": 900, "tickets": 100}


def shares(cfg, total, sizes=SIZES):
    return {s.name: s for s in resolve_shares(cfg, sizes, total)}


def test_explicit_weights_are_the_targets_and_the_counts_when_uncapped():
    got = shares(MixtureConfig(weights={"docs": 2, "code": 1, "tickets": 1}), 1000)
    assert {n: s.target_share for n, s in got.items()} == {"docs": 0.5, "code": 0.25, "tickets": 0.25}
    assert {n: s.samples for n, s in got.items()} == {"docs": 500, "code": 250, "tickets": 250}
    assert got["tickets"].epochs == 2.5 and got["tickets"].cap_reason is None


def test_empty_weights_mean_shares_by_size():
    got = shares(MixtureConfig(), 1000)
    assert {n: s.samples for n, s in got.items()} == {"docs": 900, "code": 90, "tickets": 10}


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_temperature_shares_follow_size_to_the_alpha(alpha):
    got = target_shares(MixtureConfig(strategy="temperature", alpha=alpha), SIZES)
    raw = {n: s**alpha for n, s in SIZES.items()}
    for name, share in got.items():
        assert share == pytest.approx(raw[name] / sum(raw.values()))
    if alpha == 0.0:
        assert got["tickets"] == pytest.approx(1 / 3)  # uniform across sources
    # lower alpha up-weights the small source
    assert got["tickets"] >= SIZES["tickets"] / sum(SIZES.values()) - 1e-12


def test_max_epochs_caps_a_source_and_the_rest_is_shared_by_weight():
    cfg = MixtureConfig(weights={"docs": 1, "code": 1, "tickets": 2}, max_epochs={"tickets": 1.5})
    got = shares(cfg, 1000)
    assert got["tickets"].samples == 150 and got["tickets"].cap_reason == "max_epochs"
    assert got["tickets"].epochs == 1.5
    # the other 850 samples go to docs and code in their 1:1 ratio
    assert got["docs"].samples + got["code"].samples == 850
    assert abs(got["docs"].samples - got["code"].samples) <= 1


def test_max_share_caps_a_source_and_a_second_cap_can_bind_after_redistribution():
    cfg = MixtureConfig(weights={"docs": 6, "code": 3, "tickets": 1}, max_share={"docs": 0.4}, max_epochs={"code": 0.4})
    got = shares(cfg, 1000)
    assert got["docs"].samples == 400 and got["docs"].cap_reason == "max_share"
    # code fits its 300 at first, but after docs' excess it would get 450 > 0.4 epochs = 360
    assert got["code"].samples == 360 and got["code"].cap_reason == "max_epochs"
    assert got["tickets"].samples == 240 and got["tickets"].cap_reason is None
    assert got["tickets"].expected_share(1000) == 0.24 and got["tickets"].target_share == 0.1
    assert sum(s.samples for s in got.values()) == 1000


def test_counts_sum_to_total_and_respect_caps_under_rounding():
    cfg = MixtureConfig(weights={"docs": 1, "code": 1, "tickets": 1}, max_epochs={"tickets": 0.33})
    for total in (7, 97, 1001, 9999):
        got = shares(cfg, total)
        assert sum(s.samples for s in got.values()) == total
        assert got["tickets"].samples <= math.floor(0.33 * 100)
        uncapped = [got["docs"].samples, got["code"].samples]
        assert max(uncapped) - min(uncapped) <= 1


def test_caps_too_tight_fail_naming_the_caps():
    cfg = MixtureConfig(max_epochs={"docs": 0.01, "code": 0.1, "tickets": 1.0})
    with pytest.raises(MixtureError, match=r"cannot supply 1000 samples.*docs max_epochs -> 90"):
        resolve_shares(cfg, SIZES, 1000)


def test_weights_must_name_every_source_and_sources_need_sequences():
    with pytest.raises(MixtureError, match=r"does not name source\(s\) \['tickets'\]"):
        resolve_shares(MixtureConfig(weights={"docs": 1, "code": 1}), SIZES, 10)
    with pytest.raises(MixtureError, match=r"\['code'\] have weight > 0 but no train sequences"):
        resolve_shares(MixtureConfig(weights={"docs": 1, "code": 1}), {"docs": 5, "code": 0}, 10)
    got = shares(MixtureConfig(weights={"docs": 1, "code": 0, "tickets": 1}), 10)
    assert got["code"].samples == 0 and got["code"].target_share == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "temperature"}, "needs alpha"),
        ({"strategy": "temperature", "alpha": 0.5, "weights": {"docs": 1}}, "takes no weights"),
        ({"alpha": 0.5}, "only to strategy 'temperature'"),
        ({"weights": {"docs": -1}}, "must be >= 0"),
        ({"weights": {"docs": 0}}, "at least one weight"),
        ({"max_share": {"docs": 1.5}}, r"in \(0, 1\]"),
        ({"max_epochs": {"docs": 0}}, "must be > 0"),
        ({"strategy": "temperature", "alpha": 2.0}, "less than or equal to 1"),
    ],
)
def test_config_rejects_inconsistent_fields(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        MixtureConfig(**kwargs)


def test_forge_file_rejects_caps_on_unknown_sources(tmp_path):
    from forge_ray.config import load_config
    from forge_ray.errors import ConfigError

    path = tmp_path / "forge.yaml"
    path.write_text(
        "project: {name: acme}\n"
        "data:\n  sources:\n    - {name: docs, uri: /d, format: jsonl, license: MIT, sensitivity: public}\n"
        "mixture: {max_epochs: {docs: 1.0, wiki: 2.0}}\n"
    )
    with pytest.raises(ConfigError, match=r"mixture.max_epochs names unknown source\(s\) \['wiki'\]"):
        load_config(path)
