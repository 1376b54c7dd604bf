"""The RL version's gate: its held-out KPI (rl.eval_suite, never the training prompts) against its base's.

    decision = gate_against_base(config, storage, exported)   # {"base", "rl", "delta", "decision", "cases"}

Both models answer every held-out case greedily, asked the way training asked (a conversation
rendered with the model's chat template, or the prompt as is), and the case's KPI scorer scores
the answer. The version is promoted when its score is at least its base's plus
`rl_min_gain` (default 0: no regression), else rejected; the report is attached to the version
(`registry/<model>/<version>/reports/rl_gate.json`) either way.
"""

from __future__ import annotations

from forge_ray.rl.prompts import PromptCase, load_prompt_cases, prompt_text

MIN_GAIN = 0.0


def heldout_kpi(model_dir: str, cases: list[PromptCase], *, batch_size: int = 16) -> dict:
    """{"score", "cases": [{"id", "score"}]}: greedy answers of `transformers` (float32) scored by
    each case's KPI scorer. Answers are not kept: they may quote the prompts' data."""
    from forge_ray.eval.chat_kpi import GreedyModel
    from forge_ray.eval.scorers import score_answer

    model = GreedyModel(model_dir)
    prompts = [model.tok(prompt_text(c, model.tok), add_special_tokens=c.messages is None)["input_ids"] for c in cases]
    answers = model.answers(prompts, [c.case.max_tokens or 32 for c in cases], batch_size)
    rows = [{"id": c.id, "score": score_answer(c.case, a)[0]} for c, a in zip(cases, answers, strict=True)]
    return {"score": sum(r["score"] for r in rows) / max(1, len(rows)), "cases": rows}


def gate_against_base(config, storage, exported) -> dict:
    from forge_ray.registry import local_folder
    from forge_ray.registry.store import Registry
    from forge_ray.rl.driver import expand

    cases = load_prompt_cases(expand(config.rl.eval_suite, storage), "rl.eval_suite")
    base = heldout_kpi(local_folder(config.model.init_from), cases)
    tuned = heldout_kpi(local_folder(exported.path), cases)
    delta = tuned["score"] - base["score"]
    decision = "promote" if delta >= MIN_GAIN else "reject"
    report = {"suite": config.rl.eval_suite, "cases": len(cases), "base": base["score"], "rl": tuned["score"],
              "delta": delta, "decision": decision, "min_gain": MIN_GAIN, "base_version": config.model.init_from}
    registry = Registry(storage, exported.model)
    registry.attach_report(exported.version, "rl_gate", report)
    reason = f"held-out KPI {tuned['score']:.3f} vs base {base['score']:.3f} ({delta:+.3f})"
    if decision == "promote":
        registry.promote(exported.version, reason=reason)
    else:
        registry.reject(exported.version, reason=reason)
    print(f"[rl] gate: {reason} on {len(cases)} held-out cases -> {decision}", flush=True)
    return report
