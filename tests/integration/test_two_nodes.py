"""Done-when of the object-store issue: a run whose workers span two Ray nodes, with its storage root
only on the object store (SeaweedFS), survives the second node being killed and finishes on the head
with every planned step and every sample trained exactly once.

The scenario (two_nodes_scenario.py) starts its own head and second node, so it runs as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.s3_server import BUCKET

STEPS = 40


@pytest.fixture(scope="module")
def two_nodes(s3_server, s3_env):
    s3_root = f"s3://{BUCKET}/two-nodes-{uuid.uuid4().hex[:8]}"
    out = Path(tempfile.mkdtemp(prefix="f2n-")) / "result.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS", "RAY_AUTH"))}
    env.update(s3_server.env, PYTHONPATH=str(REPO))
    script = REPO / "tests" / "integration" / "two_nodes_scenario.py"
    proc = subprocess.run([sys.executable, str(script), s3_root, str(out), str(STEPS)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=420)
    out.with_name("stderr.txt").write_text(proc.stderr)  # the whole of it, for a failure's post-mortem
    assert out.exists(), f"the scenario wrote no result (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    result = json.loads(out.read_text())
    assert proc.returncode == 0 and result["error"] is None, (result["error"], proc.stderr[-4000:])
    return result


def test_workers_span_both_nodes_and_the_run_finishes_on_the_head(two_nodes):
    assert two_nodes["nodes_before"] == 2 and two_nodes["nodes_after"] == 1
    assert len(two_nodes["worker_on_node2"]) == 1  # one of the two ranks ran on the node that was killed
    assert two_nodes["final_step"] == STEPS - 1
    assert two_nodes["checkpoint_dir"].startswith("s3://")


def test_the_run_resumes_from_its_last_checkpoint_with_one_worker(two_nodes):
    kill, every = two_nodes["events"]["kill"], two_nodes["checkpoint_every"]
    assert kill["world_after"] == 1
    assert kill["resumed_at"] % every == 0 and 0 <= kill["steps_done_before"] - kill["resumed_at"] <= every
    latest = {r["step"]: r for r in two_nodes["records"]}  # the latest attempt of each step
    assert sorted(latest) == list(range(STEPS))
    assert all(latest[s]["world_size"] == 1 for s in range(kill["resumed_at"], STEPS))


def test_no_sample_repeated_or_skipped(two_nodes):
    assert "consumption_error" not in two_nodes, two_nodes.get("consumption_error")
    report = two_nodes["consumption"]
    assert report["steps"] == STEPS and report["samples"] == STEPS * 8 and report["superseded"] >= 1
