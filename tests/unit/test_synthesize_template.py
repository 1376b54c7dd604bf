"""Templates: slot errors before generation, keyed slots consistent, fakes' ranges tracked; config rules."""

from __future__ import annotations

import pytest

from forge_ray.config import load_config
from forge_ray.synthesize.records import SourceRecord, SynthesizeError
from forge_ray.synthesize.template import TemplateGenerator
from tests.conftest import DEMO_CONFIG


def test_a_slot_with_no_provider_is_named_before_generation():
    with pytest.raises(SynthesizeError, match=r"template 2: slot \{CUSTOMER_TIER\} has no provider"):
        TemplateGenerator(["Hi {PERSON}", "Tier {CUSTOMER_TIER}"])
    with pytest.raises(SynthesizeError, match="PRODUCT"):
        TemplateGenerator(["{PRODUCT}"], {"PRODUCT": []})  # a type with no values provides nothing


def test_keyed_slots_repeat_and_fakes_are_tracked():
    gen = TemplateGenerator(["Hi {PERSON:c}, {PRODUCT} is fixed. Bye {PERSON:c}. Cc {PERSON}."], {"PRODUCT": ["K2"]})
    s = gen.one(SourceRecord(0, "", (), ""), 0, seed=0, source="t")
    names = [s.text[a:b] for a, b in s.inserted]
    assert len(names) == 3 and names[0] == names[1] and "K2" in s.text
    assert gen.one(SourceRecord(0, "", (), ""), 0, seed=0, source="t").text == s.text


def _demo(overrides):
    return load_config(DEMO_CONFIG, overrides=overrides)


def test_config_rules_name_the_problem():
    with pytest.raises(Exception, match="prepare writes no restricted records"):
        _demo(["synthesize.sources={escalations: {strategy: surrogate}, tickets: {strategy: surrogate}}"])
    with pytest.raises(Exception, match="strategy 'template' needs a `template` section"):
        _demo(["synthesize.sources={tickets: {strategy: template}}"])
    with pytest.raises(Exception, match="exactly one of `model`"):
        _demo(["synthesize.sources={tickets: {strategy: teacher, teacher: {}}}"])


def test_mixture_may_weigh_a_synthetic_source():
    import yaml

    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["data"]["sources"][2]["sensitivity"] = "restricted"
    raw["synthesize"] = {"sources": {"tickets": {"strategy": "surrogate"}}}
    raw["mixture"]["weights"]["tickets_synthetic"] = 0.2
    for field in ("weights", "max_epochs"):  # the demo's own synthetic source, not made here
        raw["mixture"][field].pop("escalations_synthetic")
    from forge_ray.config import ForgeConfig

    cfg = ForgeConfig.model_validate(raw)
    assert cfg.synthesize.output_names() == ["tickets_synthetic"]
    raw["prepare"]["pii"]["sources"] = {"tickets": {"entities": []}}
    with pytest.raises(Exception, match="looks for none"):
        ForgeConfig.model_validate(raw)
