"""The forge file: the demo validates; bad files name every bad field; every field is described."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import BaseModel

from forge_ray.config import ForgeConfig, config_hash, load_config
from forge_ray.errors import ConfigError
from tests.conftest import DEMO_CONFIG


def write(tmp_path, text: str):
    path = tmp_path / "forge.yaml"
    path.write_text(textwrap.dedent(text))
    return path


MINIMAL = """
project: {name: acme}
data:
  sources:
    - {name: docs, uri: /data/docs, format: jsonl, license: MIT, sensitivity: public}
"""


def test_demo_config_loads_with_four_sources_one_restricted():
    cfg = load_config(DEMO_CONFIG)
    assert cfg.project.name == "demo"
    assert cfg.data.names == ["docs", "code", "tickets", "escalations"]
    assert cfg.data.source("tickets").sensitivity == "internal"
    assert cfg.data.source("escalations").sensitivity == "restricted"  # trained on only as a synthetic source
    assert cfg.synthesize.sources["escalations"].strategy == "surrogate"
    assert cfg.mixture.weights["escalations"] == 0 and cfg.mixture.weights["escalations_synthetic"] > 0


def test_minimal_file_gets_defaults(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.project.storage_root == "./forge_data"
    assert cfg.data.sources[0].text_field == "text"
    assert cfg.project.local_cluster.num_cpus == 8


def test_unknown_key_and_wrong_type_are_both_named(tmp_path):
    path = write(tmp_path, MINIMAL + "  colour: blue\ntrain: {steps: lots}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    problems = e.value.problems
    assert any(p.startswith("data.colour: unknown key") for p in problems), problems
    assert any(p.startswith("train.steps:") and "integer" in p for p in problems), problems
    assert len(problems) == 2


def test_problem_path_names_the_list_index(tmp_path):
    path = write(tmp_path, MINIMAL + "    - {name: code, uri: '', format: jsonl, license: MIT, sensitivity: top}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    paths = sorted(p.split(":")[0] for p in e.value.problems)
    assert paths == ["data.sources[1].sensitivity", "data.sources[1].uri"]


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("    - {name: docs, uri: /x, format: jsonl, license: MIT, sensitivity: public}\n", "used twice"),
        ("mixture: {weights: {nope: 1.0}}\n", "unknown source"),
    ],
)
def test_cross_field_rules(tmp_path, extra, expected):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, MINIMAL + extra))
    assert expected in str(e.value)


def test_uri_template_only_storage_root(tmp_path):
    bad = MINIMAL.replace("/data/docs", "'{home}/docs'")
    with pytest.raises(ConfigError, match=r"data.sources\[0\].uri"):
        load_config(write(tmp_path, bad))
    cfg = load_config(write(tmp_path, MINIMAL.replace("/data/docs", "'{storage_root}/corpora/docs'")))
    assert cfg.data.sources[0].resolved_uri("s3://bucket/root/") == "s3://bucket/root/corpora/docs"


def test_missing_file_and_yaml_syntax(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="YAML syntax error: line 3, column 1"):
        load_config(write(tmp_path, "project:\n  name: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_overrides_apply_and_are_validated(tmp_path):
    path = write(tmp_path, MINIMAL)
    cfg = load_config(path, ["train.steps=7", "project.storage_root=memory://forge"])
    assert cfg.train.steps == 7 and cfg.project.storage_root == "memory://forge"
    with pytest.raises(ConfigError, match="train.steps"):
        load_config(path, ["train.steps=-1"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(path, ["train.steps"])


def test_config_hash_tracks_content(tmp_path):
    a = load_config(write(tmp_path, MINIMAL))
    b = load_config(write(tmp_path, MINIMAL), ["train.steps=3"])
    assert config_hash(a) != config_hash(b)
    assert config_hash(a, "data") == config_hash(b, "data")


def _fields_without_description(model: type[BaseModel], prefix: str = "") -> list[str]:
    missing = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if not field.description:
            missing.append(path)
        ann = field.annotation
        for candidate in (ann, *getattr(ann, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                missing += _fields_without_description(candidate, path + ".")
    return missing


def test_every_field_has_a_description():
    assert _fields_without_description(ForgeConfig) == []


def test_demo_file_has_every_section():
    raw = __import__("yaml").safe_load(DEMO_CONFIG.read_text())
    # optional sections (default None) are shown by their own files: rl -> jobs/configs/rl.yaml
    optional = {name for name, f in ForgeConfig.model_fields.items() if f.default is None}
    assert optional == {"rl"}
    assert set(raw) == set(ForgeConfig.model_fields) - optional


def test_pii_selection_for_an_unknown_source_is_refused():
    with pytest.raises(ConfigError) as e:
        load_config(DEMO_CONFIG, ["prepare.pii.sources={tikets: {entities: [EMAIL]}}"])
    assert "tikets" in str(e.value) and "prepare.pii.sources" in str(e.value)
