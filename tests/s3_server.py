"""A real S3-compatible server (SeaweedFS) for the whole test session, started only if a test asks.

    def test_x(s3_root):          # "s3://forge-test/<unique prefix>", AWS_* set in the environment
        Storage(s3_root).write_json("a.json", {})

`s3_server` is the running `forge_ray.testing.object_store.ObjectStore`; `s3_env` puts its
endpoint and keys into os.environ for the session (Ray workers started later inherit them).
"""

from __future__ import annotations

import uuid

import pytest

BUCKET = "forge-test"


@pytest.fixture(scope="session")
def s3_server():
    from forge_ray.testing.object_store import ObjectStore

    with ObjectStore() as store:
        store.create_bucket(BUCKET)
        yield store


@pytest.fixture(scope="session")
def s3_env(s3_server):
    """The store's AWS_* variables in os.environ for the rest of the session."""
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            mp.delenv(key, raising=False)
        for key, value in s3_server.env.items():
            mp.setenv(key, value)
        yield s3_server.env


@pytest.fixture
def s3_root(s3_env):
    """A fresh storage root on the session's store: s3://forge-test/<unique prefix>."""
    return f"s3://{BUCKET}/t-{uuid.uuid4().hex[:10]}"
