"""The run report's sections: GRPO's curves and gate, an SFT version against its base."""

from __future__ import annotations


def test_the_run_report_shows_grpo_curves_and_the_gate():
    from forge_ray.report.render import render_report

    recs = [{"step": s, "reward_mean": 0.2 + 0.1 * s, "kl": 0.01 * s, "response_len": 5.0, "reward_failed": 0,
             "sync_s": 0.03, "logprob_gap": 1e-6} for s in range(4)]
    gate = {"suite": "heldout.jsonl", "cases": 40, "base": 0.4, "rl": 0.55, "delta": 0.15, "decision": "promote"}
    html = render_report(metrics=recs, rl={"metrics": recs, "gate": gate})
    assert 'id="plot-rl"' in html
    assert "0.550" in html and "+0.150" in html and "promote" in html
    assert "not an RL version" in render_report(metrics=[])


def test_an_sft_versions_report_compares_it_with_its_base_not_a_previous_version():
    from forge_ray.report.render import eval_series

    report = {"version": "sft-v1", "perplexity": {"docs": {"perplexity": 30.0}},
              "kpi": {"suites": [{"name": "chat", "score": 0.7, "threshold": 0.5}]},
              "baseline": {"kind": "base", "version": "base-v3", "perplexity": {"docs": {"perplexity": 35.0}},
                           "kpi": {"suites": [{"name": "chat", "score": 0.1, "threshold": 0.5}]}}}
    _, ppl, suites = eval_series(report, None)
    assert ppl == {"sft-v1": [30.0], "base (base-v3)": [35.0]}
    assert suites["scores"] == {"sft-v1": [0.7], "base (base-v3)": [0.1]}
