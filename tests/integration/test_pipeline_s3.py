"""Done-when of the object-store issue: the whole pipeline with its storage root on SeaweedFS, and
nothing written on local disk but caches and logs.

The pipeline runs in a child process (tests/integration/pipeline_s3_scenario.py) whose working
directory, HOME, TMPDIR (where Ray keeps its session logs) and FORGE_CACHE_DIR are fresh folders
of one scratch directory; afterwards every file left there must be in the cache or in Ray's logs,
and every artefact must be on the store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from tests.conftest import REPO

# File names that are artefacts, never caches or logs: none may be on local disk outside the cache.
ARTEFACTS = (".safetensors", ".parquet", "metrics.jsonl", "state.json", "run.json", "eval.json", ".html",
             "pointer.json", "api_keys")


# forge's node-local cache; Ray's session (logs, sockets, spilled objects) and its auth token; the
# serve room's HAProxy state; compile and font caches of torch, DeepSpeed, matplotlib, vLLM.
ALLOWED = ("cache/", "tmp/ray/", "home/.ray/", "tmp/forge-haproxy-", "tmp/torchinductor_", "home/.cache/",
           "home/.config/")


def _local_files(scratch: Path) -> list[str]:
    """Regular files under `scratch`, the TMPDIR link followed (sockets, such as vLLM's ZMQ IPC
    endpoints named by a UUID in TMPDIR, are runtime state that holds nothing)."""
    out = []
    for top, _, files in os.walk(scratch, followlinks=True):
        paths = [os.path.join(top, f) for f in files]
        out += [os.path.relpath(p, scratch) for p in paths if os.path.isfile(p)]
    return sorted(out)


def test_pipeline_on_the_object_store_writes_nothing_local_but_caches_and_logs(s3_server, s3_root):
    scratch = Path(tempfile.mkdtemp(prefix="fs3-", dir="/tmp"))
    dirs = {name: scratch / name for name in ("cwd", "home", "tmp", "cache")}
    for d in dirs.values():
        d.mkdir()
    # TMPDIR short: Ray's and HAProxy's sockets live under it (HAProxy's path, with a 56-character
    # node id, must fit in 97 bytes); reached through a link so the listing below covers it.
    short = Path(f"/tmp/f{uuid.uuid4().hex[:5]}")
    dirs["tmp"].rmdir()
    short.mkdir()
    dirs["tmp"].symlink_to(short)
    out = scratch / "out.json"  # the test's own record, removed from the listing below
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS", "FORGE_"))}
    env.update(s3_server.env, HOME=str(dirs["home"]), TMPDIR=str(short), FORGE_CACHE_DIR=str(dirs["cache"]),
               FORGE_API_KEYS="forge-s3-test-key", PYTHONPATH=str(REPO))
    script = REPO / "tests" / "integration" / "pipeline_s3_scenario.py"
    run = subprocess.run([sys.executable, str(script), s3_root, str(out)], cwd=dirs["cwd"], env=env,
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    seen = json.loads(out.read_text())
    out.unlink()

    # What a user checks: a round that promoted, a report, an endpoint that answered from it.
    assert [r["decision"] for r in seen["rounds"]] == ["promote"], seen["log"]
    version = seen["rounds"][0]["version"]
    assert seen["completion"]["version"] == version and seen["completion"]["tokens"] == 8
    assert seen["report"].startswith(s3_root + "/reports/"), seen["report"]

    # Every artefact is on the store.
    fs = s3_server.client()
    prefix = s3_root.removeprefix("s3://")
    on_store = [p[len(prefix) + 1:] for p in fs.find(prefix)]
    run_name = seen["rounds"][0]["run"]
    for wanted in (f"runs/{run_name}/run.json", f"runs/{run_name}/metrics.jsonl",
                   f"registry/demo-moe/{version}/manifest.json", f"registry/demo-moe/_reports/{version}/eval.json",
                   f"reports/demo-moe/{version}.html"):
        assert wanted in on_store, (wanted, on_store[:50])
    for kind in ("checkpoint_", "consumption/", "tensorboard/events.out.tfevents", "datasets/demo/", "corpora/"):
        assert any(kind in p for p in on_store), (kind, on_store[:50])
    assert any(p.startswith(f"runs/{run_name}/checkpoint_") and p.endswith("/state.json") for p in on_store)

    # On local disk only caches, logs and runtime state (ALLOWED); no artefact outside forge's cache.
    left = _local_files(scratch)
    elsewhere = [p for p in left if not p.startswith(ALLOWED)]
    assert elsewhere == [], elsewhere[:40]
    artefacts = [p for p in left if not p.startswith("cache/") and p.endswith(ARTEFACTS)]
    assert artefacts == [], artefacts[:20]
    assert any(p.startswith("cache/") and p.endswith(".safetensors") for p in left)  # eval / serve copied it
    # No secret at rest on the store or in the logs.
    secret = s3_server.secret_key.encode()
    readable = [scratch / p for p in left if (scratch / p).is_file() and (scratch / p).stat().st_size < 5 << 20]
    assert not [p for p in readable if secret in p.read_bytes()]
    shutil.rmtree(scratch, ignore_errors=True)  # kept for a look when the test fails
    shutil.rmtree(short, ignore_errors=True)
