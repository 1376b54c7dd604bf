"""The driver's view of a run: rank 0's logged steps, read back from `metrics.jsonl`, one line each.

Workers' output stays in Ray's log files at default verbosity (forge_ray/console.py), so the step
lines a person reads come from the driver: a thread polls the run's metrics while `fit` runs and
prints each new logged step (every `train.log_every` steps and at checkpoints) with its ETA.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from forge_ray.console import format_duration, say
from forge_ray.train.metrics import StepRecord, format_line, read_metrics


def step_line(rec: StepRecord, total_steps: int) -> str:
    """`[train] step 20/200 loss ... eta 3m10s` (ETA from this step's time)."""
    left = max(0, total_steps - (rec["step"] + 1)) * rec["step_time_s"]
    eta = f"  eta {format_duration(left)}" if left > 0 else ""
    return f"[train] {format_line(rec, total_steps)}{eta}"


class StepFollower:
    """Prints each logged step of a run once, from a background thread, until `stop` (which
    prints what arrived last). `read` and `emit` are injectable for tests."""

    def __init__(self, run_dir: str, total_steps: int, *, period_s: float = 2.0,
                 read: Callable[[str], list[StepRecord]] = read_metrics, emit: Callable[[str], None] = say,
                 line: Callable[[dict, int], str] = step_line):
        self.run_dir, self.total_steps, self.period_s = run_dir, total_steps, period_s
        self.read, self.emit, self.line = read, emit, line
        self.last_step = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="forge-step-follower", daemon=True)

    def poll(self) -> None:
        try:
            records = self.read(self.run_dir)
        except (FileNotFoundError, OSError, ValueError):  # not written yet, or a line half-written
            return
        for rec in records:
            if rec["step"] > self.last_step:
                self.last_step = rec["step"]
                self.emit(self.line(rec, self.total_steps))

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.poll()

    def __enter__(self) -> StepFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.period_s + 5)
        self.poll()
