"""`forge mixture -c FILE`: the plan an operator checks before a run, and its one-line errors."""

from __future__ import annotations

import json

import yaml

from forge_ray.cli.main import main
from forge_ray.storage import Storage
from forge_ray.testing.synthetic_dataset import write_synthetic_dataset
from tests.conftest import DEMO_CONFIG


def forge_file(tmp_path, prepared: bool = True):
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["project"]["storage_root"] = str(tmp_path / "root")
    # without the demo's restricted escalations and its synthetic source: this dataset is docs, code, tickets
    raw["data"]["sources"] = [s for s in raw["data"]["sources"] if s["name"] != "escalations"]
    raw["synthesize"]["sources"] = {}
    for field in ("weights", "max_epochs"):
        raw["mixture"][field] = {k: v for k, v in raw["mixture"][field].items() if not k.startswith("escalations")}
    if prepared:
        write_synthetic_dataset(Storage(str(tmp_path / "root")), raw["prepare"]["dataset"],
                                {"docs": 400, "code": 300, "tickets": 100}, seq_len=16)
    path = tmp_path / "forge.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, raw


def test_prints_the_plan_and_its_json(tmp_path, capsys):
    path, raw = forge_file(tmp_path)
    assert main(["mixture", "-c", str(path), "--set", "mixture.max_epochs={tickets: 1.0}"]) == 0
    table = capsys.readouterr().out
    total = raw["train"]["steps"] * raw["train"]["global_batch_size"]
    assert f"{total} samples" in table
    tickets = next(line for line in table.splitlines() if line.strip().startswith("tickets"))
    assert "max_epochs" in tickets and "1.00" in tickets
    assert main(["mixture", "-c", str(path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in plan["sources"]] == ["docs", "code", "tickets"]
    assert sum(s["samples"] for s in plan["sources"]) == total


def test_errors_are_one_line(tmp_path, capsys):
    path, _ = forge_file(tmp_path)
    assert main(["mixture", "-c", str(path), "--set", "mixture.max_epochs={docs: 0.1, code: 0.1, tickets: 0.1}"]) == 2
    err = capsys.readouterr().err
    assert "cannot supply" in err and "Traceback" not in err
    (tmp_path / "bare").mkdir()
    bare, _ = forge_file(tmp_path / "bare", prepared=False)
    assert main(["mixture", "-c", str(bare)]) != 0
    assert "no prepared dataset 'demo'" in capsys.readouterr().err
