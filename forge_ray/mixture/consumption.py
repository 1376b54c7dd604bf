"""What each step of a run actually trained on, and the check that it is exactly the plan.

Worker side (inside the Ray Train loop):

    record = ConsumptionRecord(run_dir, rank=r, world_size=w, start_step=k)
    for step, micro_batches in stream:
        ...train...
        record.add(step, micro_batches)        # one JSON line per step, flushed

Driver side, after the run:

    report = check_consumption(plan, run_dir)  # raises MixtureError naming what is off

A step re-run after a failure or a resize supersedes its earlier attempt (whose update was
rolled back with the checkpoint): for each step the latest record counts, from the attempt
(world size, start step) that wrote it, one record per rank of that attempt.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from forge_ray.mixture.plan import MixturePlan
from forge_ray.mixture.shares import MixtureError
from forge_ray.storage import LineLog, url_to_fs

RECORD_DIR = "consumption"
# On an object store each step rewrites the rank's file (no append): a new file every this many steps.
ROLL_LINES = 200


class ConsumptionRecord:
    """Appends one line per step: the (sample, source, row) of every sequence this rank trained on.

    `run_dir` is a local path or an object-store URI (`Storage.location`)."""

    def __init__(self, run_dir: str, rank: int, world_size: int, start_step: int):
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.stem = posixpath.join(str(run_dir), RECORD_DIR,
                                   f"rank{rank:03d}-w{world_size}-s{start_step}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        self.part = 0
        self.log = LineLog(f"{self.stem}.jsonl")
        self.path = self.log.path

    def add(self, step: int, micro_batches: list[dict]) -> None:
        """Record the sequences of `step` (the batches TrainStream yielded for it)."""
        line = {
            "step": int(step),
            "rank": self.rank,
            "world_size": self.world_size,
            "start_step": self.start_step,
            "time_ns": time.time_ns(),
            "sample": [int(v) for b in micro_batches for v in b["sample"].tolist()],
            "source": [int(v) for b in micro_batches for v in b["source"].tolist()],
            "row": [int(v) for b in micro_batches for v in b["row"].tolist()],
        }
        if not self.log.local and self.log.lines >= ROLL_LINES:
            self.part += 1
            self.log = LineLog(f"{self.stem}-p{self.part:04d}.jsonl")
            self.path = self.log.path
        self.log.write(json.dumps(line))  # flushed per step: a killed worker loses nothing written


def read_records(run_dir: str) -> list[dict]:
    """Every record line under `<run_dir>/consumption/` (a path or URI), oldest first."""
    fs, root = url_to_fs(str(run_dir))
    folder = posixpath.join(root, RECORD_DIR)
    lines = []
    for path in sorted(fs.glob(posixpath.join(folder, "*.jsonl"))):
        lines += [json.loads(text) for text in fs.cat_file(path).decode().splitlines() if text.strip()]
    return sorted(lines, key=lambda r: r["time_ns"])


def effective_steps(records: list[dict]) -> dict[int, list[dict]]:
    """Per step, the records of the attempt that trained it last (one per rank of that attempt)."""
    by_step: dict[int, list[dict]] = {}
    for rec in records:
        by_step.setdefault(rec["step"], []).append(rec)
    out = {}
    for step, recs in by_step.items():
        last = recs[-1]
        attempt = [r for r in recs if (r["world_size"], r["start_step"]) == (last["world_size"], last["start_step"])]
        latest_per_rank = {r["rank"]: r for r in attempt}  # records are oldest first: the last wins
        out[step] = [latest_per_rank[k] for k in sorted(latest_per_rank)]
    return out


@dataclass
class ConsumptionReport:
    steps: int
    samples: int
    world_sizes: list[int]  # world size that trained each step, in step order
    superseded: int  # records of steps that a later attempt re-ran (rolled back)


def check_consumption(plan: MixturePlan, run_dir: str) -> ConsumptionReport:
    """Check that the run trained on exactly the plan: every step once, every planned sample.

    Raises MixtureError naming the first steps that are missing, incomplete or wrong, and
    the (source, row) keys consumed too often or too rarely.
    """
    records = read_records(run_dir)
    steps = effective_steps(records)
    problems = []
    missing = [k for k in range(plan.total_steps) if k not in steps]
    if missing:
        problems.append(f"steps never trained: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    consumed: Counter = Counter()
    for step in sorted(steps):
        recs = steps[step]
        ranks = [r["rank"] for r in recs]
        if ranks != list(range(recs[0]["world_size"])):
            problems.append(f"step {step}: ranks {ranks} of a world of {recs[0]['world_size']}")
        samples = [i for r in recs for i in r["sample"]]
        G = plan.global_batch_size
        if samples != list(range(step * G, (step + 1) * G)):
            problems.append(f"step {step}: samples {samples[:4]}... are not the plan's {step * G}..{(step + 1) * G - 1}")
        for r in recs:
            for i, src, row in zip(r["sample"], r["source"], r["row"], strict=True):
                key = (plan.sources[src], row)
                if key != plan.sample_key(i):
                    problems.append(f"step {step}: sample {i} was {key}, the plan says {plan.sample_key(i)}")
                consumed[key] += 1
    planned = plan.planned_keys()
    over, under = consumed - planned, planned - consumed
    if over:
        problems.append(f"{sum(over.values())} sample(s) consumed more often than planned, e.g. {list(over)[:3]}")
    if under:
        problems.append(f"{sum(under.values())} planned sample(s) never consumed, e.g. {list(under)[:3]}")
    if problems:
        raise MixtureError(f"run {run_dir} did not consume its plan: " + "; ".join(problems[:8]))
    return ConsumptionReport(
        steps=len(steps),
        samples=sum(consumed.values()),
        world_sizes=[steps[k][0]["world_size"] for k in sorted(steps)],
        superseded=len(records) - sum(len(v) for v in steps.values()),
    )
