"""KPI on chat-formatted cases: each case's conversation rendered with the model's own chat
template (its tokenizer's; forge's default for a tokenizer without one), a greedy answer, scored by `contains` (case-insensitive).

    report = chat_kpi(model_dir, cases)      # cases: [{"id", "messages", "expected", "task"?}]
    report["score"], report["by_task"], report["cases"]

`forge_ray.corpora.instructions.heldout_cases()` is the embedded held-out suite; the benchmark
(`benchmarks/sft.py`) and the SFT integration test compare a base model and its SFT version on it.
`transformers` generates here (a handful of cases, float32, CPU); the served endpoint renders
with the same template (the tokenizer files travel with the export).
"""

from __future__ import annotations

from collections import defaultdict


def chat_kpi(model_dir: str, cases: list[dict], *, max_new_tokens: int = 12, batch_size: int = 16) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forge_ray.prepare.chat import template_of

    tok = AutoTokenizer.from_pretrained(model_dir)
    # a base model whose tokenizer has none is asked with forge's default, the template its SFT
    # version is trained with (prepare writes it into the SFT dataset's tokenizer)
    template, _ = template_of(tok)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    results = []
    for lo in range(0, len(cases), batch_size):
        chunk = cases[lo: lo + batch_size]
        prompts = [tok.apply_chat_template(c["messages"], chat_template=template, tokenize=False,
                                           add_generation_prompt=True) for c in chunk]
        encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        width = max(map(len, encoded))
        # left padding: every prompt ends where generation starts
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad, eos_token_id=tok.eos_token_id)
        for case, row in zip(chunk, out[:, width:], strict=True):
            answer = tok.decode(row, skip_special_tokens=True)
            hit = case["expected"].lower() in answer.lower()
            results.append({"id": case["id"], "task": case.get("task", ""), "answer": answer, "score": float(hit)})
    by_task: dict[str, list[float]] = defaultdict(list)
    for r in results:
        by_task[r["task"]].append(r["score"])
    return {"score": sum(r["score"] for r in results) / max(1, len(results)),
            "by_task": {t: sum(v) / len(v) for t, v in sorted(by_task.items())}, "cases": results}
