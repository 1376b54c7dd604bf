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


class GreedyModel:
    """A model folder in `transformers` (float32, CPU) answering token-id prompts greedily, in
    batches with left padding (every prompt ends where generation starts)."""

    def __init__(self, model_dir: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def answers(self, prompts: list[list[int]], max_new_tokens: list[int], batch_size: int = 16) -> list[str]:
        """The decoded answer to each prompt, of at most its `max_new_tokens` tokens."""
        import torch

        tok = self.tok
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        answers = []
        for lo in range(0, len(prompts), batch_size):
            chunk, limits = prompts[lo: lo + batch_size], max_new_tokens[lo: lo + batch_size]
            width = max(map(len, chunk))
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in chunk])
            mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in chunk])
            with torch.no_grad():
                out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(limits),
                                          do_sample=False, pad_token_id=pad, eos_token_id=tok.eos_token_id)
            answers += [tok.decode(row[:limit], skip_special_tokens=True)
                        for row, limit in zip(out[:, width:], limits, strict=True)]
        return answers


def chat_kpi(model_dir: str, cases: list[dict], *, max_new_tokens: int = 12, batch_size: int = 16) -> dict:
    from forge_ray.prepare.chat import template_of

    model = GreedyModel(model_dir)
    tok = model.tok
    # a base model whose tokenizer has none is asked with forge's default, the template its SFT
    # version is trained with (prepare writes it into the SFT dataset's tokenizer)
    template, _ = template_of(tok)
    prompts = [tok(tok.apply_chat_template(c["messages"], chat_template=template, tokenize=False,
                                           add_generation_prompt=True), add_special_tokens=False)["input_ids"]
               for c in cases]
    results = []
    for case, answer in zip(cases, model.answers(prompts, [max_new_tokens] * len(cases), batch_size), strict=True):
        hit = case["expected"].lower() in answer.lower()
        results.append({"id": case["id"], "task": case.get("task", ""), "answer": answer, "score": float(hit)})
    by_task: dict[str, list[float]] = defaultdict(list)
    for r in results:
        by_task[r["task"]].append(r["score"])
    return {"score": sum(r["score"] for r in results) / max(1, len(results)),
            "by_task": {t: sum(v) / len(v) for t, v in sorted(by_task.items())}, "cases": results}
