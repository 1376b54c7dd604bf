"""HAProxy's socket directory stays short enough for unix socket paths, whatever TMPDIR is."""

from __future__ import annotations

import os
import tempfile

from forge_ray.cluster import HAPROXY_SOCKET_MAX, haproxy_env, haproxy_state_dir


def _socket_path(state_dir: str) -> str:
    # Where Ray's HAProxy manager puts it: <dir>/<node id>/metrics.sock
    env = haproxy_env(None, state_dir)
    d, f = os.path.split(env["RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"])
    return os.path.join(d, "f" * 56, f)


def test_a_short_tmpdir_is_used(tmp_path, monkeypatch):
    short = f"/tmp/h{os.getpid() % 10000:04d}"  # as short as a test's TMPDIR can be
    os.makedirs(short, exist_ok=True)
    monkeypatch.setattr(tempfile, "tempdir", short)
    try:
        d = haproxy_state_dir()
        assert d.startswith(short) and os.stat(d).st_mode & 0o777 == 0o700
        assert len(_socket_path(d).encode()) <= HAPROXY_SOCKET_MAX
    finally:
        os.rmdir(os.path.join(short, f"forge-haproxy-{os.getuid()}"))
        os.rmdir(short)


def test_a_long_tmpdir_falls_back_to_tmp(tmp_path, monkeypatch):
    long = tmp_path / ("x" * 60)
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    d = haproxy_state_dir()
    assert d == f"/tmp/forge-haproxy-{os.getuid()}"
    assert len(_socket_path(d).encode()) <= HAPROXY_SOCKET_MAX
