"""Greedy tokens from `vllm.LLM` for an exported folder's canary prompts (run as a subprocess).

    .venv/bin/python tests/integration/vllm_greedy.py MODEL_DIR OUT.json [MAX_TOKENS]

vLLM's engine core starts by spawn and re-imports the main module, so it lives in a script
with a `__main__` guard rather than in the pytest process.
"""

import json
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import forge_ray  # noqa: F401, I001  (offline environment first)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    model_dir, out = sys.argv[1], sys.argv[2]
    max_tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    manifest = json.load(open(os.path.join(model_dir, "manifest.json")))
    llm = LLM(model=model_dir, dtype="float32", max_model_len=256, enforce_eager=True, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    prompts = [TokensPrompt(prompt_token_ids=c["prompt_token_ids"]) for c in manifest["canaries"]]
    outputs = llm.generate(prompts, params)
    json.dump([list(o.outputs[0].token_ids) for o in outputs], open(out, "w"))
