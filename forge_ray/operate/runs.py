"""Training runs at a glance, read from storage: each run's last logged step, loss, tokens/s and ETA.

    runs = training_runs(storage)            # newest first; what `forge status -c FILE` shows
    print(format_runs(runs))

A run is `<root>/runs/<run>/` with its `run.json` (the resolved config: total steps) and rank 0's
`metrics.jsonl`. It is "running" while its last record is recent (a few step times, at least
`STALE_S`), "finished" at its last step, else "stopped" (killed, or waiting for a restart).
"""

from __future__ import annotations

import posixpath
import time
from typing import Any

from forge_ray.console import format_duration
from forge_ray.storage import Storage
from forge_ray.train.metrics import METRICS_FILE, read_metrics

STALE_S = 120.0  # no record for this long (or 10 step times if longer): not running any more


def run_state(step: int, total: int, last_time: float, step_time_s: float, now: float) -> str:
    if step + 1 >= total:
        return "finished"
    return "running" if now - last_time <= max(STALE_S, 10 * step_time_s) else "stopped"


def training_runs(storage: Storage, now: float | None = None, limit: int = 5) -> list[dict[str, Any]]:
    """The `limit` most recently active runs that have logged a step, newest first."""
    now = time.time() if now is None else now
    try:
        names = [posixpath.basename(p.rstrip("/")) for p in storage.fs.ls(storage.path("runs"), detail=False)]
    except FileNotFoundError:
        return []
    runs = []
    for name in names:
        if not storage.exists("runs", name, METRICS_FILE):
            continue
        metrics = read_metrics(storage.location("runs", name))
        if not metrics:
            continue
        last = metrics[-1]
        try:
            total = int(storage.read_json(f"runs/{name}/run.json")["config"]["train"]["steps"])
        except (FileNotFoundError, KeyError, ValueError, TypeError):
            total = last["step"] + 1
        left = max(0, total - (last["step"] + 1)) * last["step_time_s"]
        runs.append({
            "run": name, "state": run_state(last["step"], total, last["time"], last["step_time_s"], now),
            "step": last["step"] + 1, "total_steps": total, "loss": last["loss"],
            "tokens_per_s": last["tokens_per_s"], "world_size": last["world_size"],
            "eta_s": round(left, 1), "last_record_s_ago": round(now - last["time"], 1),
        })
    runs.sort(key=lambda r: r["last_record_s_ago"])
    return runs[:limit]


def format_runs(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return ["training runs: none logged yet"]
    lines = [f"training runs: {sum(r['state'] == 'running' for r in runs)} running"]
    for r in runs:
        eta = f", eta {format_duration(r['eta_s'])}" if r["state"] == "running" else ""
        lines.append(f"  {r['run']:32s} {r['state']:8s} step {r['step']}/{r['total_steps']}  loss {r['loss']:.4f}  "
                     f"{r['tokens_per_s']:,.0f} tok/s  w={r['world_size']}{eta}  "
                     f"(last step {format_duration(r['last_record_s_ago'])} ago)")
    return lines
