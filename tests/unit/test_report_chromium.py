"""The run report as a person opens it: headless Chromium loads the HTML, every plot decodes as an
image and every section is there (a report a browser cannot show is not a report)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
SECTIONS = ["Training loss per domain", "Data mixture", "Tokens per expert", "Evaluation against the previous version",
            "Reinforcement learning on KPI rewards", "Synthetic data from restricted sources",
            "Lineage of the served version"]
# Appended to the page: once loaded, record which images the browser decoded.
PROBE = ("<script>window.addEventListener('load', () => { document.body.dataset.images = "
         "[...document.images].map(i => i.id + ':' + (i.complete && i.naturalWidth > 0)).join(','); });</script>")


def _browser_view(html: str, tmp_path) -> tuple[str, dict[str, bool]]:
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--virtual-time-budget=10000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-images="([^"]*)"', dom)
    assert found, f"Chromium did not finish loading the report:\n{dom[:500]}"
    images = dict(item.rsplit(":", 1) for item in found.group(1).split(",") if item)
    return dom, {k: v == "true" for k, v in images.items()}


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")
def test_every_section_and_plot_of_a_report_shows_in_chromium(tmp_path):
    from forge_ray.report.render import render_report

    metrics = [{"step": s, "loss": 5 - s * 0.1, "loss_by_source": {"docs": 5 - s * 0.1, "code": 4.8 - s * 0.1},
                "expert_tokens": [10 + s, 12, 9, 11]} for s in range(8)]
    mixture = {"sources": [{"name": "docs", "target_share": 0.6, "expected_share": 0.6},
                           {"name": "code", "target_share": 0.4, "expected_share": 0.4}]}
    eval_report = {"version": "v2", "perplexity": {"docs": {"perplexity": 40.0}, "code": {"perplexity": 30.0}},
                   "kpi": {"suites": [{"name": "tickets", "score": 0.7, "threshold": 0.5}]},
                   "gate": {"decision": "promote"}}
    rl = {"metrics": [{"step": s, "reward_mean": 0.3 + 0.02 * s, "kl": 0.001 * s, "response_len": 4.0,
                       "reward_failed": 0, "sync_s": 0.03, "logprob_gap": 1e-7} for s in range(8)],
          "gate": {"suite": "heldout.jsonl", "cases": 40, "base": 0.5, "rl": 0.55, "delta": 0.05,
                   "decision": "promote"}}
    html = render_report(metrics=metrics, mixture=mixture, realised={"docs": 60, "code": 40}, eval_report=eval_report,
                         lineage={"model": "m", "version": "v2", "run": "r"}, title="m v2", rl=rl)
    dom, images = _browser_view(html, tmp_path)
    headings = re.findall(r"<h2>([^<]*)</h2>", dom)
    assert headings == SECTIONS
    assert set(images) == {"plot-loss", "plot-mixture", "plot-experts", "plot-eval", "plot-rl"}
    assert all(images.values()), images
