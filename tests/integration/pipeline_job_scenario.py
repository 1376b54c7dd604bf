"""The operator's path end to end, as a script (run by test_pipeline_job.py, inside `unshare --net`).

    python tests/integration/pipeline_job_scenario.py OUT.json

A real head (`ray start --head`, LocalHead), then `ray job submit --working-dir . -- python -m
jobs.pipeline --config jobs/configs/demo.yaml` (small overrides so it fits a test), a completion
from the endpoint it leaves serving, the same pipeline again through `forge submit` (which finds
its outputs and does nothing new), a completion again, and the head stopped. Writes what it saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from forge_ray.serve.client import complete  # noqa: E402
from forge_ray.testing.local_head import LocalHead, free_port  # noqa: E402


def main(out_path: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="forge-pipeline-"))
    port = free_port()
    overrides = [
        f"project.storage_root={root}", f"serve.port={port}", "serve.replicas.num_replicas=1",
        "prepare.seq_len=128", "prepare.tokenizer.vocab_size=512",
        "train.steps=6", "train.max_workers=1", "train.global_batch_size=8", "train.checkpoint_every=6",
        "train.warmup_steps=1", "eval.suites=[]", "eval.memorisation.enabled=false",
        "eval.perplexity.max_sequences=16",
    ]
    args = ["--config", "jobs/configs/demo.yaml", "--scale", "0.05", "--rounds", "1", "--keep-serving",
            *[a for o in overrides for a in ("--set", o)]]
    seen: dict = {"storage_root": str(root)}
    with LocalHead(num_cpus=8) as head:
        t0 = time.monotonic()
        job = subprocess.run(
            [f"{head.bin_dir}/ray", "job", "submit", "--address", head.dashboard_url, "--working-dir", ".",
             "--", "python", "-m", "jobs.pipeline", *args],
            cwd=REPO, env=head.env, capture_output=True, text=True, timeout=1200)
        seen["ray_job_submit"] = {"rc": job.returncode, "tail": job.stdout[-4000:] + job.stderr[-2000:],
                                  "forge_lines": forge_lines(job.stdout),
                                  "output": job.stdout.splitlines(),  # what the operator saw, all of it
                                  "seconds": round(time.monotonic() - t0, 1)}
        key = (root / "secrets" / "api_keys").read_text().split()[0]
        base = f"http://127.0.0.1:{port}/v1"
        seen["completion_1"] = complete(base, key, "demo-moe", "Hello Kestrel support,", max_tokens=8)

        t0 = time.monotonic()
        env = {k: v for k, v in head.env.items() if k != "RAY_AUTH_MODE"}
        forge = subprocess.run(
            [sys.executable, "-m", "forge_ray.cli.main", "submit", "pipeline", "-c", "jobs/configs/demo.yaml",
             "--address", head.dashboard_url, *[a for o in overrides for a in ("--set", o)],
             "--", "--scale", "0.05", "--rounds", "1", "--keep-serving"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
        seen["forge_submit"] = {"rc": forge.returncode, "tail": forge.stdout[-4000:] + forge.stderr[-2000:],
                                "forge_lines": forge_lines(forge.stdout),
                                "seconds": round(time.monotonic() - t0, 1)}
        seen["completion_2"] = complete(base, key, "demo-moe", "Hello Kestrel support,", max_tokens=8)
    Path(out_path).write_text(json.dumps(seen, indent=2))


def forge_lines(stdout: str) -> list[str]:
    """forge's own stage lines ("[round 1] ...", "[done] ..."): the engines' logs around them can
    push them out of any fixed-size tail."""
    return [line for line in stdout.splitlines() if line.startswith("[")]


if __name__ == "__main__":
    main(sys.argv[1])
