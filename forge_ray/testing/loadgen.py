"""Constant client load on the endpoint (threads in a loop): for swap tests and benchmarks.

    with Load(base_url, key, model, clients=8) as load:
        ...promote...
    load.failures, load.by_version(), load.latencies(since=t)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from forge_ray.serve.client import request
from forge_ray.serve.frontend import VERSION_HEADER


@dataclass(frozen=True)
class RequestResult:
    start: float        # time.monotonic() when sent
    seconds: float
    status: int         # HTTP status, 0 for a connection error
    version: str | None
    tokens: int
    error: str = ""


class Load:
    def __init__(self, base_url: str, key: str, model: str, clients: int = 8, max_tokens: int = 16,
                 prompt: str = "The quick brown fox", timeout: float = 120.0):
        self.args = (base_url, key, model, max_tokens, prompt, timeout)
        self.clients = clients
        self.results: list[RequestResult] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _run(self) -> None:
        base_url, key, model, max_tokens, prompt, timeout = self.args
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0}
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                status, resp, headers = request(base_url, "/completions", key, body, timeout=timeout)
                err = "" if status == 200 else str(resp)[:200]
                tokens = resp.get("usage", {}).get("completion_tokens", 0) if status == 200 else 0
                res = RequestResult(t0, time.monotonic() - t0, status, headers.get(VERSION_HEADER), tokens, err)
            except Exception as e:  # noqa: BLE001 - a connection error is a failed request
                res = RequestResult(t0, time.monotonic() - t0, 0, None, 0, f"{type(e).__name__}: {e}")
            with self._lock:
                self.results.append(res)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=300)

    @property
    def failures(self) -> list[RequestResult]:
        return [r for r in self.results if r.status != 200]

    def by_version(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            if r.status == 200:
                out[r.version] = out.get(r.version, 0) + 1
        return out

    def latencies(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return sorted(r.seconds for r in self.results if r.status == 200 and since <= r.start < until)

    def first(self, version: str, since: float = 0.0) -> float | None:
        """monotonic time of the first completed response from `version` sent after `since`."""
        times = [r.start + r.seconds for r in self.results if r.version == version and r.start >= since]
        return min(times) if times else None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]
