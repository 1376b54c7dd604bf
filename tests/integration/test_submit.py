"""Jobs on a real Ray head (`ray start --head`): `ray job submit` and `forge submit / jobs / status`.

One head for the module (LocalHead: own temp dir, ports and token; stopped by killing exactly its
own processes). The job is `jobs.prepare` (a real Ray Data stage) on the small embedded corpora:
`jobs.demo` / `jobs.pipeline` run everything up to serving and are tested on their own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from forge_ray.operate.client import job_client, wait_until_done
from forge_ray.operate.submit import job_runtime_env
from forge_ray.testing.local_head import LocalHead, free_port
from tests.conftest import REPO

DONE = "prepared dataset:"
SMALL = ["prepare.seq_len=128", "prepare.tokenizer.vocab_size=512"]  # as tests/conftest.py prepared_dataset


@pytest.fixture(scope="module")
def head():
    with LocalHead(num_cpus=4) as h:
        yield h


@pytest.fixture
def client(head, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", head.env["RAY_AUTH_TOKEN_PATH"])  # forge sends the token
    return job_client(head.dashboard_url)


def forge(head, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The forge CLI as an operator runs it: no RAY_AUTH_MODE, only the token file (forge finds it)."""
    env = {k: v for k, v in head.env.items() if k != "RAY_AUTH_MODE"}
    return subprocess.run([sys.executable, "-m", "forge_ray.cli.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def submission_id(stdout: str) -> str:
    return re.search(r"submitted (forge-\S+):", stdout).group(1)


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def test_ray_job_submit_then_forge_submit_of_the_same_job_finds_its_output(head, client, small_corpora, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(small_corpora[0], root)
    cmd = [f"{head.bin_dir}/ray", "job", "submit", "--address", head.dashboard_url,
           "--working-dir", ".", "--runtime-env", "cluster/runtime_env.yaml", "--",
           "python", "-m", "jobs.prepare", "--config", "jobs/configs/demo.yaml",
           *sets(f"project.storage_root={root}", *SMALL)]
    out = subprocess.run(cmd, cwd=REPO, env=head.env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert DONE in out.stdout
    latest = root / "datasets" / "demo" / "LATEST"
    assert latest.is_file()  # written under the storage root it was given
    version = latest.read_text().strip()
    job = next(j for j in client.list_jobs() if "jobs.prepare" in j.entrypoint and str(root) in j.entrypoint)
    assert str(job.status.value) == "SUCCEEDED"
    assert job.runtime_env["env_vars"]["HF_HUB_OFFLINE"] == "1"

    # The same job through forge, with a forge file outside the checkout (it travels inline):
    # it runs on the cluster, finds the dataset it made before, and makes nothing new.
    config = tmp_path / "mine.yaml"
    config.write_text((REPO / "jobs" / "configs" / "demo.yaml").read_text()
                      .replace("storage_root: ./forge_data/demo", f"storage_root: {root}"))
    out = forge(head, "submit", "prepare", "-c", str(config), *sets(*SMALL), "--address", head.dashboard_url)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sid = submission_id(out.stdout)
    assert re.fullmatch(r"forge-demo-prepare-\d+", sid)
    assert f"{sid} SUCCEEDED" in out.stdout and DONE in out.stdout
    assert f"version {version} is already complete" in out.stdout
    assert sorted(p.name for p in (root / "datasets" / "demo").iterdir()) == sorted(["LATEST", version])
    info = client.get_job_info(sid)
    assert info.metadata["forge_project"] == "demo" and info.metadata["forge_job"] == "prepare"
    assert info.entrypoint.endswith('python -m jobs.prepare --config "$cfg" ' + " ".join(sets(*SMALL)))

    listed = forge(head, "jobs", "list", "--address", head.dashboard_url)
    row = next(line for line in listed.stdout.splitlines() if line.startswith(sid))
    assert "SUCCEEDED" in row and "demo/prepare" in row
    logs = forge(head, "jobs", "logs", "prepare", "--address", head.dashboard_url)  # a name: its newest job
    assert logs.returncode == 0 and f"version {version} is already complete" in logs.stdout


def test_job_upload_is_the_checkout_without_venv_git_or_data(head, client):
    assert (REPO / ".venv").is_dir() and (REPO / ".git").exists()
    code = "import os, json; print('LISTING', json.dumps(sorted(os.listdir()) + [os.environ['HF_HUB_OFFLINE']]))"
    sid = client.submit_job(entrypoint=f'python -c "{code}"', runtime_env=job_runtime_env(REPO))
    assert wait_until_done(client, sid, timeout_s=180) == "SUCCEEDED", client.get_job_logs(sid)
    listing = json.loads(client.get_job_logs(sid).split("LISTING ", 1)[1].splitlines()[0])
    assert {"jobs", "forge_ray", "cluster", "cluster.yaml", "pyproject.toml"} <= set(listing)
    assert not {".venv", ".git", "forge_data"} & set(listing)
    assert listing[-1] == "1"  # the offline env reached the job


def test_a_second_submission_while_one_runs_is_refused_and_stop_ends_it(head, client, demo_config_at):
    # Hold every logical CPU so the prepare job stays in flight (its Ray Data tasks wait for them).
    blocker = client.submit_job(entrypoint=(
        "python -c \"import ray, time; ray.init(); a = ray.remote(num_cpus=4)(type('B', (), "
        "{'ping': lambda self: 1})).remote(); ray.get(a.ping.remote()); print('HOLDING', flush=True); "
        "time.sleep(900)\""))
    try:
        deadline = time.monotonic() + 180
        while "HOLDING" not in client.get_job_logs(blocker):
            assert time.monotonic() < deadline and str(client.get_job_status(blocker).value) in ("PENDING", "RUNNING")
            time.sleep(1)
        first = forge(head, "submit", "prepare", "-c", str(demo_config_at), "--address", head.dashboard_url,
                      "--no-wait")
        assert first.returncode == 0, first.stderr[-3000:]
        sid = submission_id(first.stdout)
        jobs_before = len(client.list_jobs())

        second = forge(head, "submit", "prepare", "-c", str(demo_config_at), "--address", head.dashboard_url)
        assert second.returncode == 1
        assert "demo/prepare is already" in second.stderr and sid in second.stderr
        assert "Traceback" not in second.stderr
        assert len(client.list_jobs()) == jobs_before  # no job started

        status = forge(head, "status", "--address", head.dashboard_url, "-c", str(demo_config_at))
        assert status.returncode == 0, status.stderr[-2000:]
        assert "nodes: 1 alive" in status.stdout and re.search(r"CPU\s+\S+ used of 4\b", status.stdout)
        assert "jobs running: 2" in status.stdout and sid in status.stdout
        assert "served version: demo-moe has no promoted version yet" in status.stdout

        stopped = forge(head, "jobs", "stop", sid, "--wait", "--address", head.dashboard_url)
        assert stopped.returncode == 0 and f"{sid} STOPPED" in stopped.stdout
    finally:
        client.stop_job(blocker)
    assert wait_until_done(client, blocker, timeout_s=60) == "STOPPED"


def test_bad_config_or_unknown_job_starts_no_job(head, client, tmp_path):
    jobs_before = len(client.list_jobs())
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "jobs" / "configs" / "demo.yaml").read_text().replace("  seq_len: 256", "  seq_len: long"))
    out = forge(head, "submit", "demo", "-c", str(bad), "--address", head.dashboard_url)
    assert out.returncode == 2 and "prepare.seq_len" in out.stderr and "Traceback" not in out.stderr
    out = forge(head, "submit", "nosuch", "-c", "jobs/configs/demo.yaml", "--address", head.dashboard_url)
    assert out.returncode == 1 and "unknown job 'nosuch'" in out.stderr and "demo" in out.stderr
    assert len(client.list_jobs()) == jobs_before


def test_unreachable_address_is_one_clear_line(capsys, monkeypatch):
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    out = subprocess.run([sys.executable, "-m", "forge_ray.cli.main", "submit", "demo", "-c", "jobs/configs/demo.yaml",
                          "--address", address], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert f"no Ray job API answers at {address}" in out.stderr and "Traceback" not in out.stderr
    from forge_ray.cli.main import main

    monkeypatch.chdir(REPO)
    for args in (["jobs", "list"], ["status"]):
        assert main([*args, "--address", address]) == 1
        assert f"no Ray job API answers at {address}" in capsys.readouterr().err
