"""The whole pipeline with its storage root on an object store, as a script (run by test_pipeline_s3.py).

    AWS_ENDPOINT_URL=... AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... FORGE_CACHE_DIR=... TMPDIR=... \
        python tests/integration/pipeline_s3_scenario.py s3://bucket/prefix OUT.json [ROUNDS]

Runs `run_pipeline` (corpora -> prepare -> train -> export -> eval gate -> registry -> serve ->
report) at a small scale on a local Ray cluster started here, so that Ray and every worker
inherit the store's settings from this process's environment; the test sets the working
directory, TMPDIR (Ray's logs go under it), HOME and FORGE_CACHE_DIR, and then checks that
nothing but caches and logs was written on local disk. Writes what it saw to OUT.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from forge_ray.config import load_config  # noqa: E402
from forge_ray.pipeline import run_pipeline  # noqa: E402
from forge_ray.serve.client import complete  # noqa: E402
from forge_ray.testing.local_head import free_port  # noqa: E402

OVERRIDES = [
    "serve.replicas.num_replicas=1", "prepare.seq_len=128", "prepare.tokenizer.vocab_size=512",
    "train.steps=6", "train.min_workers=1", "train.max_workers=2", "train.global_batch_size=8",
    "train.micro_batch_size=2", "train.checkpoint_every=3", "train.warmup_steps=1", "train.tensorboard=true",
    "eval.suites=[]", "eval.memorisation.enabled=false", "eval.perplexity.max_sequences=16",
]


def main(root: str, out_path: str, rounds: int = 1) -> None:
    port = free_port()
    config = load_config(REPO / "jobs" / "configs" / "demo.yaml",
                         [f"project.storage_root={root}", f"serve.port={port}", *OVERRIDES])
    t0 = time.monotonic()
    lines: list[str] = []

    def say(msg: str) -> None:
        lines.append(msg)
        print(msg, flush=True)

    result = run_pipeline(config, rounds=rounds, scale=0.05, keep_serving=True, say=say)
    seen: dict = {"seconds": round(time.monotonic() - t0, 1), "log": lines, "rounds": result.rounds,
                  "report": result.report}
    endpoint = result.endpoint
    if endpoint is not None:
        key = "forge-s3-test-key"
        seen["completion"] = complete(endpoint.base_url, key, endpoint.model, "Hello Kestrel support,",
                                      max_tokens=8)
        from forge_ray.serve import stop_serving

        stop_serving(endpoint)
    Path(out_path).write_text(json.dumps(seen, indent=2, default=str))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1)
