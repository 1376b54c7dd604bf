"""`forge registry ...` over a registry with fake exports: list, show, promote, rollback, errors."""

from __future__ import annotations

import yaml

from forge_ray.cli.main import main
from forge_ray.registry import Registry, publish_version
from tests.conftest import DEMO_CONFIG
from tests.unit.test_registry import MANIFEST, fake_export


def setup(tmp_path):
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["project"]["storage_root"] = str(tmp_path / "root")
    path = tmp_path / "forge.yaml"
    path.write_text(yaml.safe_dump(raw))
    model = raw["model"]["name"]
    for i, v in enumerate(["a1", "a2"]):
        publish_version(str(tmp_path / "root"), model, v, fake_export(tmp_path, v, f"x{i}".encode()),
                        {**MANIFEST, "created": f"2026-01-0{i + 1}T00:00:00+00:00"})
    return str(path), Registry(str(tmp_path / "root"), model)


def test_promote_list_show_rollback(tmp_path, capsys):
    cfg, reg = setup(tmp_path)
    assert main(["registry", "promote", "-c", cfg, "a1"]) == 0
    assert main(["registry", "promote", "-c", cfg, "a2", "--reason", "better eval"]) == 0
    assert reg.promoted() == "a2" and reg.pointer().generation == 2
    capsys.readouterr()
    assert main(["registry", "list", "-c", cfg]) == 0
    out = capsys.readouterr().out
    assert "promoted a2 (generation 2)" in out and "* a2" in out and "  a1" in out
    assert main(["registry", "show", "-c", cfg, "a2"]) == 0
    assert '"reason": "better eval"' in capsys.readouterr().out
    assert main(["registry", "rollback", "-c", cfg]) == 0
    assert reg.promoted() == "a1" and reg.state("a2") == "rolled_back"


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    cfg, reg = setup(tmp_path)
    assert main(["registry", "promote", "-c", cfg, "nope"]) != 0
    err = capsys.readouterr().err
    assert "no version 'nope'" in err and "Traceback" not in err
    assert main(["registry", "rollback", "-c", cfg]) != 0
    assert "no promoted version" in capsys.readouterr().err
