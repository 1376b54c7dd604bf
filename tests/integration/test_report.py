"""The run report rendered in a real headless Chromium: the plots are there, decoded and drawn.

Chromium comes from Debian (`make browser` installs it; FIELD_NOTES lists the flags that keep
it from calling out). The page is opened through a small harness (an iframe and a script that
measures every plot image after load), dumped with --dump-dom; a screenshot of the report
itself checks that the plots paint.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from forge_ray.report.render import read_jsonl, render_report, write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PLOTS = ["plot-loss", "plot-mixture", "plot-experts", "plot-eval"]
DOMAINS = ["docs", "code", "tickets"]

HARNESS = """<!DOCTYPE html><html><body>
<iframe id="r" src="report.html" width="1200" height="3200"></iframe><pre id="result">pending</pre>
<script>
window.addEventListener("load", () => {
  const doc = document.getElementById("r").contentDocument;
  const plots = [...doc.querySelectorAll("img.plot")].map(i => { const b = i.getBoundingClientRect();
    return {id: i.id, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight, shownW: b.width, shownH: b.height}; });
  document.getElementById("result").textContent = JSON.stringify({title: doc.title, plots,
    text: doc.body.innerText});
});
</script></body></html>"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    assert Path(CHROMIUM).exists(), "chromium is not installed: run `make browser` (apt-get install chromium)"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def run_inputs() -> dict:
    """Inputs in the formats the rooms write: train metrics.jsonl, the mixture plan, the eval report."""
    metrics = []
    for step in range(30):
        base = 6 * math.exp(-step / 10) + 2
        by_layer = [[400 + 10 * e + step for e in range(4)], [420 - 5 * e for e in range(4)]]
        metrics.append({
            "step": step, "loss": base, "lm_loss": base - 0.01, "aux_loss": 0.5,
            "loss_by_source": {"docs": base + 0.4, "code": base - 0.3, **({"tickets": base} if step % 3 else {})},
            "expert_tokens": [sum(col) for col in zip(*by_layer, strict=True)], "expert_tokens_by_layer": by_layer,
        })
    plan = {"plan_id": "p1", "sources": [
        {"name": "docs", "target_share": 0.4, "expected_share": 0.38},
        {"name": "code", "target_share": 0.3, "expected_share": 0.32},
        {"name": "tickets", "target_share": 0.3, "expected_share": 0.30},
    ]}
    eval_report = {
        "model": "demo-moe", "version": "v2", "gate": {"decision": "promote", "rules": []},
        "perplexity": {d: {"perplexity": p, "tokens": 1000} for d, p in zip(DOMAINS, [40.0, 20.0, 15.0], strict=True)},
        "baseline": {"version": "v1", "perplexity": {d: {"perplexity": p} for d, p in
                                                      zip(DOMAINS, [45.0, 22.0, 14.0], strict=True)}},
        "kpi": {"suites": [{"name": "support-answers", "score": 0.7, "threshold": 0.5, "weight": 1, "passed": True}],
                "weighted_score": 0.7},
    }
    previous = {"version": "v1", "kpi": {"suites": [{"name": "support-answers", "score": 0.6}]}}
    lineage = {
        "dataset": "demo", "dataset_version": "3f2a9c1d", "run": "demo-moe-20261201",
        "input_hashes": {"docs": [{"uri": "corpora/docs/part-0.jsonl", "sha256": "a" * 64}],
                         "tickets": [{"uri": "corpora/tickets/part-0.jsonl", "sha256": "b" * 64}]},
        "config": {"project": {"name": "demo"}, "train": {"steps": 30}},
    }
    return {"metrics": metrics, "mixture": plan, "realised": {"docs": 385, "code": 310, "tickets": 305},
            "eval_report": eval_report, "previous_eval": previous, "lineage": lineage, "title": "demo-moe v2"}


def svg_of(html_text: str, plot_id: str) -> str:
    uri = re.search(rf'id="{plot_id}"[^>]*src="data:image/svg\+xml;base64,([^"]+)"', html_text).group(1)
    return base64.b64decode(uri).decode()


def test_report_renders_every_plot_in_headless_chromium(tmp_path):
    metrics_file = tmp_path / "metrics.jsonl"
    inputs = run_inputs()
    metrics_file.write_text("".join(json.dumps(m) + "\n" for m in inputs["metrics"]))
    inputs["metrics"] = read_jsonl(metrics_file)
    report = write_report(tmp_path / "report.html", **inputs)
    text = report.read_text()
    assert "<script" not in text and "http" not in text  # self-contained and static

    (tmp_path / "harness.html").write_text(HARNESS)
    out = chromium("--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom",
                   (tmp_path / "harness.html").as_uri(), profile=tmp_path / "profile")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(re.search(r'<pre id="result">(.*?)</pre>', out.stdout, re.S).group(1).replace("&quot;", '"'))
    assert result["title"] == "demo-moe v2"
    shown = {p["id"]: p for p in result["plots"]}
    assert sorted(shown) == sorted(PLOTS)
    for p in shown.values():
        assert p["complete"] and p["w"] > 200 and p["h"] > 100, p  # the SVG decoded
        assert p["shownW"] > 200 and p["shownH"] > 100, p  # and takes room on the page
    # The lineage of the served version is on the page as text.
    for needle in ("3f2a9c1d", "corpora/tickets/part-0.jsonl", "b" * 64, "demo-moe-20261201", "steps: 30"):
        assert needle in result["text"]

    # What each plot says: one line per domain, target vs realised, previous version alongside.
    loss = svg_of(text, "plot-loss")
    assert all(d in loss for d in DOMAINS) and "total" in loss
    assert "realised" in svg_of(text, "plot-mixture") and "target" in svg_of(text, "plot-mixture")
    assert "expert 3" in svg_of(text, "plot-experts") and "layer 1" in svg_of(text, "plot-experts")
    ev = svg_of(text, "plot-eval")
    assert "previous (v1)" in ev and "support-answers" in ev

    # The plots paint: a screenshot of the report has plenty of non-white, coloured pixels.
    from PIL import Image

    shot = tmp_path / "shot.png"
    out = chromium("--window-size=1200,3200", f"--screenshot={shot}", report.as_uri(), profile=tmp_path / "profile2")
    assert out.returncode == 0 and shot.exists(), out.stderr[-2000:]
    image = Image.open(shot).convert("RGB").resize((300, 800))
    coloured = sum(1 for r, g, b in image.getdata() if max(r, g, b) - min(r, g, b) > 60)
    assert coloured > 2000, coloured  # matplotlib's blue / orange / green bars and lines


def test_missing_inputs_say_what_is_missing_instead_of_plotting():
    inputs = run_inputs()
    dense = [{k: v for k, v in m.items() if not k.startswith("expert")} for m in inputs["metrics"]]
    text = render_report(metrics=dense, mixture=None, eval_report=None, lineage=None)
    assert 'id="plot-loss"' in text and 'id="plot-experts"' not in text and 'id="plot-mixture"' not in text
    assert "a dense model has none" in text and "no mixture plan given" in text
    assert "no evaluation report given" in text and "no lineage given" in text


def test_flat_metric_keys_and_share_dicts_are_read_too():
    flat = [{"step": s, "loss": 3.0 - s / 10, "loss/docs": 3.2 - s / 10, "experts/0": 10, "experts/1": 30} for s in range(5)]
    text = render_report(metrics=flat, mixture={"target": {"docs": 1.0}}, realised={"docs": 7})
    assert "docs" in svg_of(text, "plot-loss")
    experts = svg_of(text, "plot-experts")
    assert re.search(r">\s*150\s*</text>", experts) and re.search(r">\s*50\s*</text>", experts)  # 5 steps x 30, x 10


@pytest.mark.parametrize("bad", [[{"step": 0}], [{"loss": 1.0}]])
def test_metrics_without_step_or_loss_are_left_out(bad):
    assert 'id="plot-loss"' not in render_report(metrics=bad)


def test_version_report_is_gathered_from_the_registry_run_and_eval_artefacts(tmp_path):
    """A version published, trained-on and evaluated through the rooms' own writers."""
    import torch

    from forge_ray.mixture.consumption import ConsumptionRecord
    from forge_ray.registry import Registry, publish_version
    from forge_ray.report.version_report import write_version_report
    from forge_ray.storage import Storage
    from forge_ray.train.metrics import MetricsWriter

    storage = Storage(str(tmp_path / "root"))
    inputs = run_inputs()
    # The report reads manifests, not weights: a minimal folder that the registry accepts will do.
    from safetensors.torch import save_file

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    save_file({"w": torch.zeros(2)}, str(hf_dir / "model.safetensors"))
    for version, run in (("v1", "run-a"), ("v2", "run-b")):
        lineage = {**inputs["lineage"], "run": run, "mixture_plan": inputs["mixture"], "model": {"family": "dense"}}
        publish_version(storage, "demo-moe", version, str(hf_dir), {"code_version": "test", "canaries": [],
                                                               "lineage": lineage, "metrics": {}})
    run_dir = storage.path("runs", "run-b")
    writer = MetricsWriter(run_dir, tensorboard=False)
    for rec in inputs["metrics"]:
        writer.write(rec)
    # Each step trains 4 samples: sources 0, 0, 1, 2 (docs, docs, code, tickets); step 1 is re-run
    # by a second attempt, which must be counted once.
    for attempt, steps in ((0, range(3)), (1, range(1, 3))):
        record = ConsumptionRecord(run_dir, rank=0, world_size=1, start_step=attempt)
        for step in steps:
            record.add(step, [{"sample": torch.arange(step * 4, step * 4 + 4), "source": torch.tensor([0, 0, 1, 2]),
                               "row": torch.arange(4)}])
    registry = Registry(storage, "demo-moe")
    registry.attach_report("v1", "eval", {"version": "v1", "kpi": {"suites": [{"name": "support-answers", "score": 0.55}]}})
    registry.attach_report("v2", "eval", inputs["eval_report"])
    registry.promote("v2")

    url = write_version_report(storage, "demo-moe", "v2")
    text = (tmp_path / "root" / "reports" / "demo-moe" / "v2.html").read_text()
    assert url.endswith("reports/demo-moe/v2.html")
    assert "promoted (serving)" in text and "run-b" in text and "3f2a9c1d" in text and "b" * 64 in text
    mixture = svg_of(text, "plot-mixture")
    assert "realised" in mixture and "50.0%" in mixture and "25.0%" in mixture  # 6 docs of 12 samples, 3 code
    assert "previous (v1)" in svg_of(text, "plot-eval")
    assert all(d in svg_of(text, "plot-loss") for d in DOMAINS)
    assert 'id="plot-experts"' in text
