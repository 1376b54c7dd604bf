"""Talking to a cluster's job API (the Ray dashboard): address, auth, reachability, job lookup.

    client = job_client("http://head:8265")      # or --address / RAY_API_SERVER_ADDRESS / RAY_ADDRESS
    job = find_job(client, "pipeline")           # a submission id, or the newest job of that name

Every failure a user can fix is a `ForgeError` with one clear line: an address that does not
answer (checked with a short TCP connect first; Ray's own client has no timeout and would hang
on an unroutable host), a cluster that wants a token we do not have, a job that does not exist.
Every request carries the cluster's token when one is configured (see `job_client`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path
from typing import TextIO
from urllib.parse import urlparse

from forge_ray.errors import ForgeError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
ACTIVE = ("PENDING", "RUNNING")  # job states that hold the name (STOPPED/SUCCEEDED/FAILED are final)


class ClusterUnreachable(ForgeError):
    """The job API at the given address does not answer."""


class JobNotFound(ForgeError):
    """No job on the cluster matches the given id or name."""


def resolve_address(address: str | None) -> str:
    """--address, else RAY_API_SERVER_ADDRESS, else an http RAY_ADDRESS, else the local default.

    RAY_ADDRESS is also the GCS address (host:6379) that jobs see inside the cluster; only an
    http(s) one names the job API.
    """
    env_addr = os.environ.get("RAY_ADDRESS", "")
    address = (
        address
        or os.environ.get("RAY_API_SERVER_ADDRESS")
        or (env_addr if env_addr.startswith(("http://", "https://")) else None)
        or DEFAULT_ADDRESS
    )
    if "://" not in address:
        address = f"http://{address}"
    parsed = urlparse(address)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ClusterUnreachable(
            f"cluster address {address!r} is not the job API's http://HOST:PORT (the dashboard, port 8265 by default)"
        )
    return address.rstrip("/")


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    parsed = urlparse(address)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            pass
    except OSError as e:
        raise ClusterUnreachable(
            f"no Ray job API answers at {address} ({e.strerror or e}); start the cluster "
            "(`ray up cluster.yaml`, `ray start --head`, KubeRay) or pass --address http://HEAD:8265"
        ) from None


def read_token() -> str | None:
    """The cluster token, where Ray looks for it: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def job_client(address: str | None = None):
    """A `JobSubmissionClient` for the cluster, or ClusterUnreachable with the reason.

    Ray 2.60 starts clusters with token auth whenever a token exists, and its client sends the
    token only with RAY_AUTH_MODE=token. We send it as a header whenever one is configured (a
    cluster without auth ignores it), without touching Ray's process-wide auth settings.
    """
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    address = resolve_address(address)
    check_reachable(address)
    token = read_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except AuthenticationError:
        raise ClusterUnreachable(
            f"the cluster at {address} refused our token or wants one: set RAY_AUTH_TOKEN or "
            "RAY_AUTH_TOKEN_PATH (the head's ~/.ray/auth_token)"
        ) from None
    except (ConnectionError, RuntimeError) as e:
        raise ClusterUnreachable(f"{address} is not a Ray job API: {str(e).splitlines()[0]}") from None


def sorted_jobs(client) -> list:
    """Submitted jobs, newest first (drivers started outside the job API are left out)."""
    jobs = [j for j in client.list_jobs() if j.submission_id]
    return sorted(jobs, key=lambda j: j.start_time or 0, reverse=True)


def job_label(job) -> str:
    """'project/job' for forge jobs, else the entrypoint."""
    meta = job.metadata or {}
    if "forge_job" in meta:
        return f"{meta.get('forge_project', '?')}/{meta['forge_job']}"
    return job.entrypoint


def find_job(client, ref: str):
    """The job with submission id `ref`, else the newest forge job named `ref`."""
    jobs = sorted_jobs(client)
    for job in jobs:
        if job.submission_id == ref:
            return job
    for job in jobs:
        if (job.metadata or {}).get("forge_job") == ref:
            return job
    known = ", ".join(j.submission_id for j in jobs[:5]) or "none"
    raise JobNotFound(f"no job {ref!r} on the cluster (newest: {known}); see `forge jobs list`")


def follow_logs(client, submission_id: str, out: TextIO = sys.stdout) -> str:
    """Stream a job's logs to `out` until it ends; return its final status."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            out.write(chunk)
            out.flush()

    asyncio.run(tail())
    return wait_until_done(client, submission_id, timeout_s=30)


def wait_until_done(client, submission_id: str, timeout_s: float, poll_s: float = 1.0) -> str:
    """Poll a job until it is final (or `timeout_s` passes); return its status name."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(submission_id).value)
        if status not in ACTIVE or time.monotonic() > deadline:
            return status
        time.sleep(poll_s)


def format_time(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def format_duration(job) -> str:
    if not job.start_time:
        return "-"
    end = job.end_time or time.time() * 1000
    s = int((end - job.start_time) / 1000)
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
