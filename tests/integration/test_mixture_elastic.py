"""Done-when test of the mixture: an elastic Ray Train job 2 -> 1 -> 2 workers consumes exactly its plan.

The scenario needs its own multi-node `ray.cluster_utils.Cluster`, which cannot share a
process with the session `ray_cluster`, so it runs as a subprocess (elastic_mixture_job.py)
and this test reads what it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from forge_ray.offline import OFFLINE_ENV

JOB = Path(__file__).with_name("elastic_mixture_job.py")
REPO = JOB.parent.parent.parent


def test_elastic_run_consumes_exactly_the_plan(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(OFFLINE_ENV)
    env["PYTHONPATH"] = str(REPO)
    # The job bounds its own waits (3 x 180 s) and always shuts its cluster down; the timeout
    # here is a last resort above that, so no Ray node of the job is ever left behind.
    proc = subprocess.run(
        [sys.executable, str(JOB), str(tmp_path)], env=env, cwd=REPO, capture_output=True, text=True, timeout=660
    )
    result_file = tmp_path / "result.json"
    assert result_file.exists(), f"job wrote no result (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    result = json.loads(result_file.read_text())
    assert proc.returncode == 0 and result["error"] is None, (result.get("error"), proc.stderr[-4000:])
    # check_consumption found every step trained once, by all ranks of its attempt, and the
    # multiset of (source, row) consumed equal to the plan's (nothing skipped or repeated).
    assert "check_error" not in result, result["check_error"]
    report = result["report"]
    plan = result["plan"]
    assert report["steps"] == plan["total_steps"] and report["samples"] == plan["total_samples"]
    # The run really went 2 -> 1 -> 2 workers: a prefix at 2, a middle at 1, a suffix at 2.
    sizes = report["world_sizes"]
    first_one, last_one = sizes.index(1), len(sizes) - 1 - sizes[::-1].index(1)
    assert set(sizes[:first_one]) == {2} and set(sizes[first_one : last_one + 1]) == {1}, sizes
    assert set(sizes[last_one + 1 :]) == {2} and last_one + 1 < len(sizes), sizes
    # The steps held when the cluster changed were consumed twice; only the re-runs count.
    assert report["superseded"] >= 2
    assert result["final_metrics"]["step"] == plan["total_steps"] - 1
