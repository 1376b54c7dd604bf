"""The gate on real perplexity (Ray actors over the prepared eval shards): a trained candidate
beats an untrained one and is promoted, one made worse on purpose is rejected with the rule it
broke, and a version that cannot load is rejected with nothing else changed."""

from __future__ import annotations

import json
import os

import torch
import yaml

from forge_ray.cli.main import main
from forge_ray.config import load_config
from forge_ray.eval import evaluate_and_gate, format_report
from forge_ray.registry import Registry
from forge_ray.storage import Storage
from tests.conftest import DEMO_CONFIG
from tests.integration import eval_tiny

MODEL = "eval-gate"


def gate_config(root, tmp_path):
    """The demo forge file with KPI suites and canaries off: this test is about perplexity."""
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["project"]["storage_root"] = str(root)
    raw["model"]["name"] = MODEL
    raw["eval"].update(suites=[], memorisation={"enabled": False})
    raw["eval"]["perplexity"].update(max_sequences=24, sequences_per_task=8, workers=2)
    raw["eval"]["gate"]["max_perplexity_regression_pct"] = 5
    path = tmp_path / "forge.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, load_config(path)


def test_trained_is_promoted_worse_and_broken_are_rejected(prepared_dataset, tmp_path, capsys):
    root, ds = prepared_dataset
    (config_path, config), storage = gate_config(root, tmp_path), Storage(str(root))
    registry = Registry(storage, MODEL)

    untrained, tok = eval_tiny.build(ds, seed=0)
    eval_tiny.publish(storage, MODEL, "v1-untrained", untrained, tok, tmp_path)
    first = evaluate_and_gate(config, "v1-untrained")
    assert first["gate"]["decision"] == "promote", format_report(first)
    assert registry.promoted() == "v1-untrained"
    scored = [s for s in ds.sources if ds.num_sequences(s, "eval")]  # not the restricted escalations (no shards)
    assert set(first["perplexity"]) == set(scored) and "escalations" not in scored

    trained, _ = eval_tiny.build(ds, seed=0)
    eval_tiny.train_on_rows(trained, eval_tiny.train_rows(ds), steps=40)
    folder = eval_tiny.publish(storage, MODEL, "v2-trained", trained, tok, tmp_path)
    second = evaluate_and_gate(config, os.path.join(str(root), "registry", MODEL, "v2-trained"))
    assert second["gate"]["decision"] == "promote", format_report(second)
    assert second["baseline"]["version"] == "v1-untrained"
    for source in scored:  # better on every held-out domain, by a wide margin
        assert second["perplexity"][source]["perplexity"] < 0.7 * first["perplexity"][source]["perplexity"]
        assert second["perplexity"][source]["tokens"] == first["perplexity"][source]["tokens"] > 100
    assert registry.promoted() == "v2-trained"

    # Worse on purpose: the trained weights with noise on every matrix.
    with torch.no_grad():
        for p in trained.parameters():
            if p.ndim == 2:
                p.add_(torch.randn_like(p) * 0.05)
    eval_tiny.publish(storage, MODEL, "v3-worse", trained, tok, tmp_path)
    capsys.readouterr()
    assert main(["eval", "-c", str(config_path), "--version", "v3-worse"]) == 1  # `forge eval`: 1 = rejected
    assert "[FAIL] max_perplexity_regression_pct" in capsys.readouterr().out
    third = registry.report("v3-worse", "eval")
    assert third["gate"]["decision"] == "reject"
    assert [r["rule"] for r in third["gate"]["rules"] if not r["passed"]] == ["max_perplexity_regression_pct"]
    assert "vs promoted v2-trained" in third["gate"]["reasons"][0]
    assert registry.state("v3-worse") == "rejected" and registry.promoted() == "v2-trained"
    assert "max_perplexity_regression_pct" in registry.get("v3-worse").history[-1]["reason"]
    capsys.readouterr()
    assert main(["registry", "show", "-c", str(config_path), "v3-worse"]) == 0  # prints the eval report
    shown = capsys.readouterr().out
    assert "eval of " in shown and "REJECT" in shown and "[FAIL] max_perplexity_regression_pct" in shown

    # A version that cannot load: weights that are not safetensors (checksums match: it was
    # published like that), so only loading it finds the problem.
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(b"not a safetensors file")
    from forge_ray.registry import publish_version

    publish_version(storage, MODEL, "v4-broken", folder, {"code_version": "test", "canaries": []})
    before = {v: registry.state(v) for v in registry.versions() if v != "v4-broken"}
    pointer = registry.pointer()
    assert main(["eval", "-c", str(config_path)]) == 1  # the newest candidate: v4-broken
    fourth = registry.report("v4-broken", "eval")
    assert fourth["gate"]["decision"] == "reject" and fourth["error"]
    assert [r["rule"] for r in fourth["gate"]["rules"]] == ["evaluation"]
    assert "does not load" in fourth["error"]
    assert registry.state("v4-broken") == "rejected"
    assert {v: registry.state(v) for v in before} == before
    assert registry.pointer().generation == pointer.generation and registry.promoted() == "v2-trained"
    json.dumps(fourth)  # the report is plain JSON
