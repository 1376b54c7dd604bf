"""`forge status`'s training runs (forge_ray/operate/runs.py), read from a storage root."""

from __future__ import annotations

import json

from forge_ray.operate.runs import format_runs, run_state, training_runs
from forge_ray.operate.status import format_status
from forge_ray.storage import Storage


def write_run(root, name: str, steps: int, logged: list[int], t0: float, step_s: float = 0.5) -> None:
    run = root / "runs" / name
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"config": {"train": {"steps": steps}}}))
    with open(run / "metrics.jsonl", "w") as f:
        for s in logged:
            f.write(json.dumps({"step": s, "loss": 5.0 - s / 100, "tokens_per_s": 2048.0, "step_time_s": step_s,
                                "world_size": 2, "time": t0 + s * step_s}) + "\n")


def test_running_finished_and_stopped_runs(tmp_path):
    now = 10_000.0
    write_run(tmp_path, "live", 200, [0, 1, 2, 49], now - 30 - 49 * 0.5)   # last step 30 s ago
    write_run(tmp_path, "done", 10, list(range(10)), now - 4000)
    write_run(tmp_path, "killed", 100, [0, 1], now - 3000)
    (tmp_path / "runs" / "no-metrics-yet").mkdir()
    runs = training_runs(Storage(str(tmp_path)), now=now)
    by = {r["run"]: r for r in runs}
    assert [r["run"] for r in runs][0] == "live" and set(by) == {"live", "done", "killed"}
    assert by["live"]["state"] == "running" and by["live"]["step"] == 50 and by["live"]["eta_s"] == 75.0
    assert by["done"]["state"] == "finished" and by["killed"]["state"] == "stopped"
    lines = format_runs(runs)
    assert lines[0] == "training runs: 1 running"
    assert "step 50/200  loss 4.5100  2,048 tok/s  w=2, eta 1m15s" in lines[1]


def test_no_runs_and_a_state_rule():
    assert format_runs([]) == ["training runs: none logged yet"]
    assert run_state(9, 10, 0, 1, 1e9) == "finished"
    assert run_state(3, 10, 0, 30, 250) == "running"  # 10 step times of 30 s


def test_status_text_has_runs_and_the_last_promotion():
    info = {"address": "http://h:8265", "resources": {"unavailable": "x"}, "jobs": [], "serve": {},
            "training_runs": [], "endpoint": None,
            "served_version": {"model": "m", "version": "v2", "generation": 3, "last_change": {
                "action": "promote", "version": "v2", "time": "2026-12-03T08:00:00Z", "reason": "gate passed"}}}
    text = format_status(info)
    assert "training runs: none logged yet" in text
    assert "last change: promote v2 at 2026-12-03T08:00:00Z (gate passed)" in text
