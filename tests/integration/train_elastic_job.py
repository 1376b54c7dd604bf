"""Forge training through a killed worker and a resize 2 -> 1 -> 2, on a multi-node local cluster.

    .venv/bin/python tests/integration/train_elastic_job.py OUT_DIR [STEPS]

Runs `forge_ray.train.run_training` (Ray Train + DeepSpeed, a tiny MoE) on its own
`ray.cluster_utils.Cluster` (a head and two 2-CPU nodes with a "w" resource, one worker each),
so it cannot share a process with another Ray cluster: test_train_elastic.py and
benchmarks/train.py run it as a subprocess and read OUT_DIR/result.json.

Phases, driven from the main thread (Cluster.add_node / remove_node need it) while fit() runs
in a thread:
  1. at step >= KILL_AT with 2 workers, SIGKILL rank 1's process (its pid is in the name of its
     consumption record); Ray Train restarts the group from the last checkpoint;
  2. at step >= SHRINK_AT, remove the node of one worker: the run continues with 1 worker;
  3. once a checkpoint was written with 1 worker, add a node back: the elastic monitor grows
     the run to 2 workers, which finishes it.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every node on 127.0.0.1
# After a node loss the controller may still count it; fail that start after 20 s, not 60.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "20")

import forge_ray  # noqa: E402,F401  (offline environment)
from forge_ray.offline import OFFLINE_ENV  # noqa: E402

CKPT_EVERY, KILL_AT, SHRINK_AT = 10, 15, 45


def forge_config(root: str, steps: int):
    from forge_ray.config import ForgeConfig

    src = {"uri": "/unused", "format": "jsonl", "license": "MIT", "sensitivity": "public"}
    return ForgeConfig.model_validate({
        "project": {"name": "elastic", "storage_root": root},
        "data": {"sources": [{"name": "docs", **src}, {"name": "code", **src}]},
        "mixture": {"weights": {"docs": 0.6, "code": 0.4}},
        "model": {"name": "elastic-moe", "family": "moe", "hidden_size": 64, "num_layers": 2, "num_heads": 1,
                  "num_kv_heads": 1, "ffn_hidden_size": 128, "max_seq_len": 64, "moe": {"num_experts": 4}},
        "train": {"steps": steps, "run_name": "elastic", "min_workers": 1, "max_workers": 2,
                  "micro_batch_size": 2, "global_batch_size": 8, "checkpoint_every": CKPT_EVERY,
                  "warmup_steps": 5, "max_failures": 6, "elastic_monitor_s": 1.0, "worker_resources": {"w": 1},
                  # A report per step paces this tiny model to Ray Train's controller poll (~2 s a
                  # step): unpaced, its 1-worker phase (0.15 s a step) ends before a grow can land.
                  "report_every": 1,
                  "tensorboard": False, "export": False},
    })


def curve(run_dir: str) -> list[dict]:
    from forge_ray.train.metrics import read_all_metrics

    return read_all_metrics(run_dir)


def wait_for(predicate, what: str, outcome: dict, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if "error" in outcome or "result" in outcome:
            raise RuntimeError(f"the run ended while waiting for {what}: {outcome.get('error')}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def rank_pid(run_dir: str, rank: int, world: int) -> int:
    """The pid of `rank` in the newest attempt of `world` workers (from its consumption record's name)."""
    files = sorted(Path(run_dir, "consumption").glob(f"rank{rank:03d}-w{world}-*.jsonl"), key=os.path.getmtime)
    return int(files[-1].name.split("-")[3])


def main(out_dir: str, steps: int) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from forge_ray.mixture import check_consumption
    from forge_ray.storage import Storage
    from forge_ray.testing.synthetic_dataset import write_synthetic_dataset
    from forge_ray.train import run_training

    root = os.path.join(out_dir, "root")
    dataset = write_synthetic_dataset(Storage(root), "syn", {"docs": 120, "code": 80}, seq_len=64)
    config = forge_config(root, steps)
    run_dir = Storage(root).path("runs", "elastic")
    # A temp dir of its own (short: Ray's socket paths live under it): Ray writes
    # <temp_dir>/ray_current_cluster there, so a bare ray.init() elsewhere on the machine does not
    # attach to this cluster.
    temp_dir = tempfile.mkdtemp(prefix="fr-te-", dir="/tmp")
    atexit.register(shutil.rmtree, temp_dir, True)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"head": 1}, "include_dashboard": False, "temp_dir": temp_dir,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3}})
    nodes = [cluster.add_node(num_cpus=2, resources={"w": 1}) for _ in range(2)]
    ray.init(address=cluster.address, runtime_env={"env_vars": dict(OFFLINE_ENV)})
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = run_training(config, dataset)
        except BaseException as e:  # noqa: BLE001 - reported in result.json
            outcome["error"] = repr(e)

    t0 = time.monotonic()
    events: dict = {}
    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    try:
        # 1. kill a worker process
        wait_for(lambda: any(r["step"] >= KILL_AT and r["world_size"] == 2 for r in curve(run_dir)),
                 f"step {KILL_AT} at 2 workers", outcome)
        pid = rank_pid(run_dir, 1, 2)
        done_before = max(r["step"] for r in curve(run_dir)) + 1
        os.kill(pid, signal.SIGKILL)
        killed = time.time()
        after = wait_for(lambda: [r for r in curve(run_dir) if r["time"] > killed], "a step after the kill", outcome)
        events["kill"] = {"pid": pid, "steps_done_before": done_before, "resumed_at": after[0]["start_step"],
                          "recovery_s": round(after[0]["time"] - killed, 2),
                          "steps_lost": done_before - after[0]["start_step"], "world_after": after[0]["world_size"]}
        # 2. lose a node: 2 -> 1
        wait_for(lambda: any(r["step"] >= SHRINK_AT and r["time"] > killed for r in curve(run_dir)),
                 f"step {SHRINK_AT}", outcome)
        cluster.remove_node(nodes[1])
        lost = time.time()
        one = wait_for(lambda: [r for r in curve(run_dir) if r["time"] > lost and r["world_size"] == 1],
                       "a step with 1 worker", outcome)
        events["shrink"] = {"recovery_s": round(one[0]["time"] - lost, 2), "resumed_at": one[0]["start_step"]}
        # 3. a checkpoint written by the 1-worker attempt, then a node back: 1 -> 2
        wait_for(lambda: any(r["time"] > lost and r["world_size"] == 1 and (r["step"] + 1) % CKPT_EVERY == 0
                             for r in curve(run_dir)), "a checkpoint with 1 worker", outcome)
        cluster.add_node(num_cpus=2, resources={"w": 1})
        grown = time.time()
        two = wait_for(lambda: [r for r in curve(run_dir) if r["time"] > grown and r["world_size"] == 2],
                       "a step with 2 workers again", outcome)
        events["grow"] = {"recovery_s": round(two[0]["time"] - grown, 2), "resumed_at": two[0]["start_step"]}
        thread.join(timeout=300)
    finally:
        result: dict = {"events": events, "error": outcome.get("error"), "wall_s": round(time.monotonic() - t0, 1),
                        "records": curve(run_dir), "steps": steps, "checkpoint_every": CKPT_EVERY}
        if "result" in outcome:
            res = outcome["result"]
            result["final"] = res.metrics[-1]
            try:
                result["consumption"] = check_consumption(res.plan, run_dir).__dict__
            except Exception as e:  # noqa: BLE001 - the test reads the message
                result["consumption_error"] = str(e)
        Path(out_dir, "result.json").write_text(json.dumps(result, indent=1, default=str))
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 120)
