"""The logic around a submission, with a fake job API client (the real one: tests/integration/test_submit.py)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from enum import Enum

import pytest

from forge_ray.errors import ConfigError
from forge_ray.operate.client import ClusterUnreachable, JobNotFound, find_job, resolve_address
from forge_ray.operate.submit import (
    SubmitError,
    next_submission_id,
    prepare_submission,
    running_conflict,
    submit,
)
from tests.conftest import DEMO_CONFIG, REPO


class Status(Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    STOPPED = "STOPPED"


@dataclass
class Job:
    submission_id: str
    status: Status
    entrypoint: str = "python x.py"
    metadata: dict = field(default_factory=dict)
    start_time: int = 0


class FakeClient:
    def __init__(self, jobs):
        self.jobs, self.submitted = list(jobs), []

    def list_jobs(self):
        return self.jobs

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)
        return kwargs["submission_id"]


def forge_job(sid: str, status: Status, job: str = "demo", project: str = "demo", t: int = 0) -> Job:
    return Job(sid, status, metadata={"forge_project": project, "forge_job": job}, start_time=t)


@pytest.mark.parametrize(
    "given, env, expected",
    [
        ("http://head:8265/", {}, "http://head:8265"),
        ("head:8265", {}, "http://head:8265"),
        (None, {"RAY_API_SERVER_ADDRESS": "http://a:1"}, "http://a:1"),
        (None, {"RAY_ADDRESS": "http://b:2"}, "http://b:2"),
        (None, {"RAY_ADDRESS": "10.0.0.1:6379"}, "http://127.0.0.1:8265"),  # a GCS address is not the job API
    ],
)
def test_address_resolution(monkeypatch, given, env, expected):
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert resolve_address(given) == expected


def test_a_non_http_address_is_refused():
    with pytest.raises(ClusterUnreachable, match="not the job API"):
        resolve_address("ray://head:10001")


def test_in_tree_config_is_referenced_with_overrides_and_job_args_quoted():
    sub = prepare_submission("demo", DEMO_CONFIG, ["project.storage_root=/data/my root"], ["--scale", "0.1"], REPO)
    assert sub.config_rel == "jobs/configs/demo.yaml"
    assert shlex.split(sub.entrypoint) == ["python", "-m", "jobs.demo", "--config", "jobs/configs/demo.yaml",
                                           "--set", "project.storage_root=/data/my root", "--scale", "0.1"]
    assert "FORGE_FILE_TEXT" not in sub.runtime_env["env_vars"]
    assert sub.runtime_env["working_dir"] == str(REPO) and sub.id_prefix == "forge-demo-demo-"
    assert len(sub.metadata["forge_config_hash"]) == 64


def test_config_outside_the_checkout_travels_inline(tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(DEMO_CONFIG.read_text())
    sub = prepare_submission("demo", cfg, [], [], REPO)
    assert sub.config_rel is None and sub.runtime_env["env_vars"]["FORGE_FILE_TEXT"] == cfg.read_text()
    assert sub.entrypoint.startswith("cfg=$(mktemp --suffix=.yaml) && printenv FORGE_FILE_TEXT > \"$cfg\" && ")
    assert sub.entrypoint.endswith('python -m jobs.demo --config "$cfg"')


def test_bad_inputs_fail_before_any_request(tmp_path):
    with pytest.raises(SubmitError, match="unknown job 'nope'.*demo"):
        prepare_submission("nope", DEMO_CONFIG, working_dir=REPO)
    with pytest.raises(ConfigError, match="train.steps"):
        prepare_submission("demo", DEMO_CONFIG, ["train.steps=-3"], working_dir=REPO)
    with pytest.raises(SubmitError, match="no jobs/ package"):
        prepare_submission("demo", DEMO_CONFIG, working_dir=tmp_path)


def test_submission_ids_count_up_per_project_and_job():
    sub = prepare_submission("demo", DEMO_CONFIG, working_dir=REPO)
    client = FakeClient([forge_job("forge-demo-demo-1", Status.SUCCEEDED), forge_job("forge-demo-demo-7", Status.STOPPED),
                         forge_job("forge-other-demo-9", Status.SUCCEEDED, project="other"), Job("raysubmit_x", Status.SUCCEEDED)])
    assert next_submission_id(client, sub) == "forge-demo-demo-8"
    assert submit(client, sub) == "forge-demo-demo-8"
    sent = client.submitted[0]
    assert sent["entrypoint"] == sub.entrypoint and sent["metadata"]["forge_job"] == "demo"


@pytest.mark.parametrize("status", [Status.PENDING, Status.RUNNING])
def test_a_job_in_flight_blocks_its_name_but_not_others(status):
    sub = prepare_submission("demo", DEMO_CONFIG, working_dir=REPO)
    other = forge_job("forge-demo-prepare-1", status, job="prepare")
    assert running_conflict(FakeClient([other]), sub) is None
    client = FakeClient([other, forge_job("forge-demo-demo-2", status)])
    with pytest.raises(SubmitError, match=f"demo/demo is already {status.value} as forge-demo-demo-2"):
        submit(client, sub)
    assert client.submitted == []
    # A plain `ray job submit` of the same module and forge file counts too.
    plain = Job("raysubmit_y", status, entrypoint="python -m jobs.demo --config jobs/configs/demo.yaml")
    assert running_conflict(FakeClient([plain]), sub) is plain


def test_find_job_by_id_or_newest_of_a_name():
    jobs = [forge_job("forge-demo-demo-1", Status.SUCCEEDED, t=1), forge_job("forge-demo-demo-2", Status.RUNNING, t=2)]
    client = FakeClient(jobs)
    assert find_job(client, "forge-demo-demo-1") is jobs[0]
    assert find_job(client, "demo") is jobs[1]
    with pytest.raises(JobNotFound, match="no job 'train'"):
        find_job(client, "train")
