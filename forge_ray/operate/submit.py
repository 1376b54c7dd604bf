"""Submitting a forge job to a cluster: validate first, then one Ray job per (project, job) at a time.

    sub = prepare_submission("pipeline", "jobs/configs/demo.yaml", overrides=["train.steps=20"])
    submission_id = submit(job_client(address), sub)       # e.g. "forge-demo-pipeline-3"

The job runs `python -m jobs.<job> --config <file> [--set ...] [job args]` on the cluster, in an
upload of the repository root (the working dir) without .venv / forge_data / .git, with the
offline environment in its runtime env: exactly what
`ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m jobs.<job> ...`
does. A forge file outside the working dir travels in the runtime env instead (FORGE_FILE_TEXT,
written to a temporary file by the entrypoint), so what runs is the file that was validated here. Submission ids are `forge-<project>-<job>-<n>`; a submission is refused while a job of the
same project and name is pending or running (and Ray itself refuses a duplicate id, so two
racing submits cannot both start).
"""

from __future__ import annotations

import fnmatch
import getpass
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from forge_ray import __version__
from forge_ray.config import ForgeConfig, config_hash, load_config
from forge_ray.errors import ForgeError
from forge_ray.offline import OFFLINE_ENV
from forge_ray.operate.client import ACTIVE, job_label, sorted_jobs

# What never travels with a job (Ray's gitignore-style patterns, relative to the working dir).
# cluster/runtime_env.yaml carries the same list; tests/unit/test_cluster_files.py checks it.
UPLOAD_EXCLUDES = [".venv", "forge_data", ".git", "**/__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"]
JOB_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class SubmitError(ForgeError):
    """A job cannot be submitted as asked (unknown job, config outside the upload, name taken)."""


@dataclass
class Submission:
    """Everything Ray's job API needs, decided (and validated) before anything is sent."""

    job: str
    project: str
    config: ForgeConfig
    config_rel: str | None  # the forge file relative to the working dir; None: it travels inline
    working_dir: Path
    config_text: str = ""  # the forge file's text, shipped when it is outside the working dir
    overrides: list[str] = field(default_factory=list)
    job_args: list[str] = field(default_factory=list)

    @property
    def id_prefix(self) -> str:
        return f"forge-{self.project}-{self.job}-"

    @property
    def entrypoint(self) -> str:
        args = ["python", "-m", f"jobs.{self.job}", "--config", self.config_rel or "CONFIG"]
        for item in self.overrides:
            args += ["--set", item]
        cmd = shlex.join(args + self.job_args)
        if self.config_rel is None:
            cmd = 'cfg=$(mktemp --suffix=.yaml) && printenv FORGE_FILE_TEXT > "$cfg" && ' + cmd.replace(
                "--config CONFIG", '--config "$cfg"', 1
            )
        return cmd

    @property
    def runtime_env(self) -> dict:
        env = job_runtime_env(self.working_dir)
        if self.config_rel is None:
            env["env_vars"]["FORGE_FILE_TEXT"] = self.config_text
        return env

    @property
    def metadata(self) -> dict[str, str]:
        return {
            "forge_project": self.project,
            "forge_job": self.job,
            "forge_config": self.config_rel or "(inline)",
            "forge_config_hash": config_hash(self.config),
            "forge_version": __version__,
            "submitted_by": getpass.getuser(),
        }


# The job's driver calls `forge_ray.cluster.connect`, whose ray.init passes the offline env again;
# Ray refuses to merge two runtime envs that set the same variable unless this is set (the values
# are the same, so letting the driver's win changes nothing).
MERGE_ENV = {"RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}


def job_runtime_env(working_dir: str | Path) -> dict:
    """The runtime env of every forge job: the upload, its excludes and the offline env."""
    return {
        "working_dir": str(working_dir),
        "excludes": list(UPLOAD_EXCLUDES),
        "env_vars": {**OFFLINE_ENV, **MERGE_ENV},
    }


def find_repo_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: CWD) that holds the `jobs` package."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "jobs" / "__init__.py").is_file():
            return folder
    raise SubmitError(
        f"no jobs/ package in {here} or above: run forge submit from the forge_ray checkout "
        "(the folder that is uploaded as the job's working dir) or pass --working-dir"
    )


def available_jobs(working_dir: Path) -> list[str]:
    names = [p.stem for p in (working_dir / "jobs").glob("*.py") if p.stem != "__init__"]
    names += [p.parent.name for p in (working_dir / "jobs").glob("*/__main__.py")]
    return sorted(names)


def prepare_submission(
    job: str,
    config_path: str | Path,
    overrides: list[str] | None = None,
    job_args: list[str] | None = None,
    working_dir: str | Path | None = None,
) -> Submission:
    """Check everything that can be checked here: the job exists, the forge file is valid and travels."""
    root = Path(working_dir).resolve() if working_dir else find_repo_root()
    if not (root / "jobs" / "__init__.py").is_file():
        raise SubmitError(f"working dir {root} has no jobs/ package; it must be the forge_ray checkout")
    jobs = available_jobs(root)
    if not JOB_NAME.match(job) or job not in jobs:
        raise SubmitError(f"unknown job {job!r}: {root / 'jobs'} has {', '.join(jobs) or 'none'}")
    config = load_config(config_path, overrides or [])  # ConfigError names every bad field
    path = Path(config_path).resolve()
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else None
    if rel is not None and _excluded(rel):
        rel = None  # not uploaded with the tree (e.g. under forge_data/): send it inline
    return Submission(
        job=job,
        project=config.project.name,
        config=config,
        config_rel=rel,
        working_dir=root,
        config_text="" if rel else path.read_text(encoding="utf-8"),
        overrides=list(overrides or []),
        job_args=list(job_args or []),
    )


def _excluded(rel: str) -> bool:
    """Whether an upload with UPLOAD_EXCLUDES leaves `rel` out (a pattern without '/' matches at any depth)."""
    patterns = [p.removeprefix("**/") for p in UPLOAD_EXCLUDES]
    return any(fnmatch.fnmatch(part, pat) for part in rel.split("/") for pat in patterns)


def running_conflict(client, sub: Submission):
    """A pending / running job of the same project and name (forge-submitted or plain `ray job submit`)."""
    same_cmd = f"-m jobs.{sub.job} --config {sub.config_rel}" if sub.config_rel else "\0"
    for job in sorted_jobs(client):
        if str(job.status.value) not in ACTIVE:
            continue
        meta = job.metadata or {}
        if (meta.get("forge_project"), meta.get("forge_job")) == (sub.project, sub.job) or same_cmd in job.entrypoint:
            return job
    return None


def next_submission_id(client, sub: Submission) -> str:
    numbers = [0]
    for job in sorted_jobs(client):
        tail = job.submission_id.removeprefix(sub.id_prefix)
        if tail != job.submission_id and tail.isdigit():
            numbers.append(int(tail))
    return f"{sub.id_prefix}{max(numbers) + 1}"


def submit(client, sub: Submission, agent_wait_s: float = 120) -> str:
    """Submit `sub`; return its submission id. Refuses (SubmitError) while the name is taken."""
    running = running_conflict(client, sub)
    if running is not None:
        raise SubmitError(
            f"{sub.project}/{sub.job} is already {running.status.value} as {running.submission_id} "
            f"({job_label(running)}); follow it with `forge jobs logs {running.submission_id}` or stop it "
            f"with `forge jobs stop {running.submission_id}`"
        )
    submission_id = next_submission_id(client, sub)
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return client.submit_job(
                entrypoint=sub.entrypoint,
                submission_id=submission_id,
                runtime_env=sub.runtime_env,
                metadata=sub.metadata,
            )
        except RuntimeError as e:
            text = str(e)
            if "already exists" in text:
                raise SubmitError(
                    f"{submission_id} was submitted by someone else a moment ago; see `forge jobs list`"
                ) from None
            # A head that has just started has no job agent yet: wait for it, then give up clearly.
            if "No available agent" in text and time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            raise SubmitError(f"the cluster refused the job: {text.splitlines()[0]}") from None
