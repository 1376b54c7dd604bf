"""KPI suite files: the demo suite loads; every kind of bad suite is one clear error, found
before any model (or registry, or dataset) is touched."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

from forge_ray.config import load_config
from forge_ray.eval import SuiteError, evaluate_and_gate, load_suites
from tests.conftest import DEMO_CONFIG, REPO

GOOD_CASE = "  - {id: ok, prompt: 'Hello', scorer: contains, expected: 'x'}\n"


def suite_file(tmp_path, cases: str, name="s", head="weight: 1\nthreshold: 0.5\n"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{head}cases:\n{textwrap.dedent(cases)}")
    return str(path)


def test_demo_suite_loads_with_every_scorer():
    suites = load_suites(load_config(DEMO_CONFIG).eval.suites)
    assert [s.name for s in suites] == ["kestrel-support"]
    assert {c.scorer for c in suites[0].cases} == {"exact", "contains", "regex", "numeric", "json_schema", "choice"}


@pytest.mark.parametrize(
    "case, expected",
    [
        ("  - {id: a, prompt: p, scorer: fuzzy, expected: x}\n", "cases[1] (id 'a').scorer: unknown scorer 'fuzzy'"),
        ("  - {id: a, prompt: p, expected: x}\n", "cases[1] (id 'a').scorer: required field is missing"),
        ("  - {id: a, prompt: p, scorer: regex, pattern: '(['}\n", "cases[1] (id 'a').pattern: regex does not compile"),
        ("  - {id: a, prompt: p, scorer: exact}\n", "cases[1] (id 'a').expected: required field is missing"),
        ("  - {id: a, scorer: exact, expected: x}\n", "cases[1] (id 'a'): `prompt` (a completion) or `messages` (a chat) is required"),
        ("  - {id: a, prompt: p, scorer: numeric, expected: ten}\n", "cases[1] (id 'a').expected:"),
        ("  - {id: a, prompt: p, scorer: json_schema, schema: {type: nope}}\n", "(id 'a').schema: not a valid JSON schema"),
        ("  - {id: a, prompt: p, scorer: choice, choices: [x, y], answer: z}\n", "answer 'z' is not one of the choices"),
        ("  - {id: a, prompt: p, scorer: contains, expected: x, colour: red}\n", "(id 'a').colour: unknown key"),
        ("  - {id: ok, prompt: p, scorer: contains, expected: x}\n", "case id 'ok' is used twice"),
    ],
)
def test_bad_case_is_named(tmp_path, case, expected):
    path = suite_file(tmp_path, GOOD_CASE + case)
    with pytest.raises(SuiteError) as e:
        load_suites([path])
    text = str(e.value)
    assert path in text and expected in text, text


def test_suite_level_fields_and_all_files_reported_together(tmp_path):
    no_weight = suite_file(tmp_path, GOOD_CASE, name="a", head="threshold: 1.5\n")
    twice = suite_file(tmp_path, GOOD_CASE, name="b")
    with pytest.raises(SuiteError) as e:
        load_suites([no_weight, twice, twice, str(tmp_path / "missing.yaml")])
    problems = e.value.problems
    assert any(p.startswith(f"{no_weight}: weight: required field is missing") for p in problems), problems
    assert any(p.startswith(f"{no_weight}: threshold:") for p in problems), problems
    assert any("missing.yaml: KPI suite file not found" in p for p in problems), problems
    assert any("suite name 'b' is used by more than one file" in p for p in problems), problems


def bad_suite_config(tmp_path):
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["project"]["storage_root"] = str(tmp_path / "empty-root")  # no registry, no dataset
    raw["eval"]["suites"] = [suite_file(tmp_path, "  - {id: a, prompt: p, scorer: regex, pattern: '*x'}\n")]
    path = tmp_path / "forge.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_bad_suite_fails_before_registry_or_model_is_touched(tmp_path):
    config = load_config(bad_suite_config(tmp_path))
    with pytest.raises(SuiteError, match="regex does not compile"):
        evaluate_and_gate(config, "no-such-version")
    assert not (tmp_path / "empty-root").exists()


def test_cli_bad_suite_exits_2_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "forge_ray.cli.main", "eval", "-c", str(bad_suite_config(tmp_path))],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "pattern: regex does not compile" in out.stderr and "Traceback" not in out.stderr
