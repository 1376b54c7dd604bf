"""Prometheus metrics (Ray's metrics export: each node's /metrics, names prefixed `ray_forge_`).

Created lazily in the process that records them (ingress or model replica). Safe without a running
Ray: outside a Ray worker the metric objects record in memory and nothing is exported (no thread,
no network connection), so the replica, the watcher and the front run in unit tests with nothing patched.
"""

from __future__ import annotations

import functools

LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


@functools.cache
def _m():
    from ray.util.metrics import Counter, Gauge, Histogram

    return {
        "requests": Counter("forge_requests_total", "Requests by route, HTTP status and version.",
                            tag_keys=("route", "status", "version")),
        "latency": Histogram("forge_request_latency_seconds", "Request latency (s) until the last byte.",
                             boundaries=LATENCY_BUCKETS, tag_keys=("route", "version")),
        "tokens": Counter("forge_tokens_total", "Prompt and completion tokens by version.",
                          tag_keys=("kind", "version")),
        "errors": Counter("forge_errors_total", "Error responses by route and error type.",
                          tag_keys=("route", "type")),
        "swaps": Counter("forge_swaps_total", "Version swaps by path (in_place|surge) and result.",
                         tag_keys=("path", "result")),
        "swap_seconds": Histogram("forge_swap_seconds", "Duration of a replica's swap (s).",
                                  boundaries=[0.1, 0.5, 1, 5, 15, 30, 60, 120], tag_keys=("path",)),
        "served": Gauge("forge_version_served", "1 for the version each model replica serves.",
                        tag_keys=("replica", "version")),
    }


def request_done(route: str, status: int, version: str, seconds: float,
                 prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
    m = _m()
    m["requests"].inc(1, {"route": route, "status": str(status), "version": version or "-"})
    m["latency"].observe(seconds, {"route": route, "version": version or "-"})
    if prompt_tokens:
        m["tokens"].inc(prompt_tokens, {"kind": "prompt", "version": version})
    if completion_tokens:
        m["tokens"].inc(completion_tokens, {"kind": "completion", "version": version})


def error(route: str, type_: str) -> None:
    _m()["errors"].inc(1, {"route": route, "type": type_})


def swap_done(path: str, result: str, seconds: float) -> None:
    """`result`: ok | retry (transient failure) | failed (the version was rejected)."""
    _m()["swaps"].inc(1, {"path": path, "result": result})
    _m()["swap_seconds"].observe(seconds, {"path": path})


def version_served(replica: str, old: str | None, new: str) -> None:
    if old and old != new:
        _m()["served"].set(0, {"replica": replica, "version": old})
    _m()["served"].set(1, {"replica": replica, "version": new})
