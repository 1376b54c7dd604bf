"""A real single-machine Ray head started with `ray start --head`, scoped to its own processes.

    with LocalHead(num_cpus=4) as head:
        subprocess.run(["ray", "job", "submit", "--address", head.dashboard_url, ...], env=head.env)

This is the operator's path (`ray start` + the job API of the dashboard) on one machine, for
tests and for trying the CLI without a cluster. It is careful on shared machines:

- its own `--temp-dir`, free ports, and a token of its own (RAY_AUTH_MODE=token with a
  temporary RAY_AUTH_TOKEN_PATH), so it never joins or stops another person's cluster;
- every process it starts stays in one new session (`start_new_session`); `stop()` ends exactly
  the processes of that session (SIGTERM, then SIGKILL after a grace period), never
  `ray stop`, which would stop every Ray process on the machine;
- loopback only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray use 127.0.0.1 for every
  address), so it also works where the only network interface is `lo`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from forge_ray.cluster import free_port  # noqa: F401 - the tests' scenarios import it from here
from forge_ray.errors import ForgeError
from forge_ray.offline import OFFLINE_ENV


def session_pids(sid: int) -> list[int]:
    """Every live process whose session id is `sid` (Ray workers get process groups of their own)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, session, ...
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def end_session(sid: int, grace_s: float = 5, signals=(signal.SIGTERM, signal.SIGKILL)) -> None:
    """Send each of `signals` to every process of session `sid` until none is left (`grace_s` apart)."""
    for sig in signals:
        for pid in session_pids(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not session_pids(sid):
            return


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class LocalHead:
    """`ray start --head` on 127.0.0.1 with explicit logical resources, stopped by `stop()`."""

    def __init__(self, num_cpus: int = 4, *, python_bin: str | None = None, extra_env: dict | None = None,
                 resources: dict[str, float] | None = None, system_config: dict | None = None):
        self.num_cpus = num_cpus
        self.resources = resources or {}
        self.system_config = system_config or {}
        # The jobs run `python` from the head's PATH: put the interpreter running us first, so the
        # cluster's Python environment is ours (as on a real node started from forge's venv).
        self.bin_dir = str(Path(python_bin or sys.executable).parent)
        self.temp_dir = tempfile.mkdtemp(prefix="forge-head-", dir="/tmp")  # short: Ray's socket paths
        self.gcs_port, self.dashboard_port, self.agent_port = free_port(), free_port(), free_port()
        token_path = Path(self.temp_dir, "auth_token")
        token_path.write_text(uuid.uuid4().hex)
        self.env = {
            **os.environ,
            **OFFLINE_ENV,
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token_path),
            **(extra_env or {}),
        }
        for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN"):
            self.env.pop(key, None)
        self._proc: subprocess.Popen | None = None

    @property
    def dashboard_url(self) -> str:
        """The job API address (`--address` of `ray job submit` and `forge submit`)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def start(self, timeout_s: float = 120) -> LocalHead:
        cmd = [
            str(Path(self.bin_dir, "ray")), "start", "--head",
            f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}",
            "--dashboard-host=127.0.0.1", "--include-dashboard=true",
            f"--dashboard-agent-listen-port={self.agent_port}",
            f"--num-cpus={self.num_cpus}", "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
        ]  # fmt: skip
        if self.resources:
            cmd.append(f"--resources={json.dumps(self.resources)}")
        if self.system_config:
            cmd.append(f"--system-config={json.dumps(self.system_config)}")
        self._proc = subprocess.Popen(
            cmd, env=self.env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            out, _ = self._proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ForgeError(f"`ray start --head` did not finish within {timeout_s:.0f} s") from None
        if (rc := self._proc.returncode) != 0:
            self.stop()
            raise ForgeError(f"`ray start --head` failed (exit {rc}):\n{out[-3000:]}")
        # `ray start` returns before the node's dashboard agent (which runs submitted jobs) listens;
        # until it does, the job API answers "No available agent". On a loaded machine that takes a while.
        deadline = time.monotonic() + timeout_s
        while not _listening(self.agent_port):
            if time.monotonic() > deadline:
                self.stop()
                raise ForgeError(f"the head's job agent did not start within {timeout_s:.0f} s")
            time.sleep(0.5)
        return self

    def stop(self, grace_s: float = 5) -> None:
        """End every process of this head's session; remove its temp dir."""
        if self._proc is not None:
            end_session(self._proc.pid, grace_s)
            self._proc = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalHead:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# `ray start --address` with "multi-node clusters" off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which
# keeps every address on 127.0.0.1) refuses to join; with it on, Ray rewrites 127.0.0.1 (the head's
# address and --node-ip-address) to the routable interface, where the head does not listen. So the
# CLI runs with the switch on for its refusal check alone; every other use, in it and in the
# processes it starts, still sees loopback.
_JOIN_ON_LOOPBACK = """
import sys, types
import ray._private.ray_constants as constants
import ray.scripts.scripts as scripts
scripts.ray_constants = types.SimpleNamespace(**{**vars(constants), "ENABLE_RAY_CLUSTER": True})
sys.argv[0] = "ray"
scripts.main()
"""


class LocalNode:
    """A second Ray node on this machine joining a `LocalHead` (`ray start --address`), with its own
    temp dir and session: `kill()` ends every process of it at once (raylet, object store, workers),
    as a machine that dies would; `stop()` is the same, gentler."""

    def __init__(self, head: LocalHead, num_cpus: int = 2, *, resources: dict[str, float] | None = None,
                 object_store_mb: int = 512):
        self.head, self.num_cpus, self.resources = head, num_cpus, resources or {}
        self.object_store_mb = object_store_mb
        self.temp_dir = tempfile.mkdtemp(prefix="forge-node-", dir="/tmp")
        self._proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120) -> LocalNode:
        cmd = [
            sys.executable, "-c", _JOIN_ON_LOOPBACK, "start", f"--address={self.head.gcs_address}",
            f"--num-cpus={self.num_cpus}", "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp_dir}",
            f"--resources={json.dumps(self.resources)}", f"--object-store-memory={self.object_store_mb << 20}",
            "--disable-usage-stats",
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd, env=self.head.env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            out, _ = self._proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ForgeError(f"`ray start --address` did not finish within {timeout_s:.0f} s") from None
        if (rc := self._proc.returncode) != 0:
            self.stop()
            raise ForgeError(f"`ray start --address` failed (exit {rc}):\n{out[-3000:]}")
        return self

    def pids(self) -> list[int]:
        return session_pids(self._proc.pid) if self._proc is not None else []

    def kill(self) -> None:
        """SIGKILL every process of this node: no goodbye to the head, as when a machine is lost."""
        if self._proc is not None:
            end_session(self._proc.pid, 5, (signal.SIGKILL,))

    def stop(self, grace_s: float = 5) -> None:
        if self._proc is not None:
            end_session(self._proc.pid, grace_s)
            self._proc = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalNode:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
