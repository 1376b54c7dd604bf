"""Done-when of the operate issue: the pipeline job through `ray job submit` and `forge submit`, on a
real head, inside a network namespace that has only loopback (nothing in the path needs the outside).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

from tests.conftest import REPO
from tests.integration.test_operator_output import engine_lines


def test_pipeline_job_serves_a_completion_with_only_loopback(tmp_path):
    assert shutil.which("unshare"), "util-linux `unshare` is needed for the loopback-only namespace"
    out = tmp_path / "seen.json"
    script = REPO / "tests" / "integration" / "pipeline_job_scenario.py"
    # A new network namespace: only `lo`, brought up; no route to anything else.
    cmd = ["unshare", "--net", "sh", "-c",
           f"ip link set lo up && ip -o link show | grep -vq ' lo:' && exit 9; "
           f"exec {sys.executable} {script} {out}"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    seen = json.loads(out.read_text())

    first = seen["ray_job_submit"]
    assert first["rc"] == 0, first["tail"]
    said = "\n".join(first["forge_lines"])
    assert "[done] 1 round(s)" in said and "promoted: demo-moe-r1-" in said, first["tail"]
    # What the operator reads (issue 22): forge's lines, not the engines'; one line per logged step
    # (train.log_every 1, 6 steps), a progress display for prepare, where the engines' logs went.
    output = first["output"]
    assert not engine_lines(output), engine_lines(output)[:20]
    steps = [m.group(1) for line in output if (m := re.match(r"\[train\] step +(\d+)/6 ", line))]
    assert steps == [str(i) for i in range(1, 7)], [line for line in output if "step" in line]
    assert any(line.startswith("[prepare] |") for line in output), output[:40]
    assert sum(line.startswith("[ray] engine logs") for line in output) == 1
    c1 = seen["completion_1"]
    # A 6-step model's greedy text may well be all spaces (the mixture order, and so the model,
    # moves with the dataset version): what must hold is that it generated, and from this round.
    assert c1["version"].startswith("demo-moe-r1-") and c1["tokens"] == 8 and isinstance(c1["text"], str), c1

    again = seen["forge_submit"]
    assert again["rc"] == 0, again["tail"]
    said = "\n".join(again["forge_lines"])
    assert "already finished" in said, again["tail"]  # found its outputs, trained nothing new
    assert "training moe run" not in said
    assert seen["completion_2"]["version"] == c1["version"]
    assert seen["completion_2"]["text"] == c1["text"]  # greedy, the same weights: the same tokens
