"""Training across two Ray nodes on one machine, storage only on the object store, one node killed mid-run.

    .venv/bin/python tests/integration/two_nodes_scenario.py s3://BUCKET/PREFIX OUT.json STEPS

(with AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of the store in the environment;
test_two_nodes.py starts SeaweedFS and runs this as a subprocess, since a process joins one Ray
cluster only). A head (`ray start --head`) and a second node (`ray start --address`), each with its
own temp dir and process session, each with one "w" token: the run's two workers (one "w" each) land
one per node. At step KILL_AT every process of the second node is SIGKILLed (raylet, object store,
its worker), as when a machine is lost; Ray Train restarts the group with the one worker the head
still fits, from the last checkpoint on the store, and the run finishes there.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time

# Every node and address on 127.0.0.1; a worker group start that waits for the lost node fails fast.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "20")

import forge_ray  # noqa: E402,F401  (offline environment)

CKPT_EVERY, KILL_AT = 10, 15
# The head notices a dead node after 3 missed checks 0.5 s apart (default: 5 x 3 s).
HEALTH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}


def forge_config(root: str, steps: int):
    from forge_ray.config import ForgeConfig

    src = {"uri": "/unused", "format": "jsonl", "license": "MIT", "sensitivity": "public"}
    return ForgeConfig.model_validate({
        "project": {"name": "two-nodes", "storage_root": root},
        "data": {"sources": [{"name": "docs", **src}, {"name": "code", **src}]},
        "mixture": {"weights": {"docs": 0.6, "code": 0.4}},
        "model": {"name": "two-nodes", "family": "dense", "hidden_size": 64, "num_layers": 2, "num_heads": 1,
                  "num_kv_heads": 1, "ffn_hidden_size": 128, "max_seq_len": 64},
        "train": {"steps": steps, "run_name": "two-nodes", "min_workers": 1, "max_workers": 2,
                  "micro_batch_size": 2, "global_batch_size": 8, "checkpoint_every": CKPT_EVERY,
                  "warmup_steps": 5, "max_failures": 4, "elastic_monitor_s": 1.0, "worker_resources": {"w": 1},
                  "report_every": 1, "tensorboard": False, "export": False},
    })


def wait_for(predicate, what: str, outcome: dict, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while not (got := predicate()):
        if "error" in outcome or "result" in outcome:
            raise RuntimeError(f"the run ended while waiting for {what}: {outcome.get('error')}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return got


def worker_pids(storage, world: int) -> dict[int, int]:
    """{rank: pid} of the newest attempt of `world` workers, from its consumption records' names
    (rank{r}-w{world}-s{start}-{pid}-{id}.jsonl)."""
    pids = {}
    for path in sorted(storage.fs.ls(storage.path("runs", "two-nodes", "consumption"), detail=False)):
        name = path.rsplit("/", 1)[-1].split("-")
        if name[1] == f"w{world}":
            pids[int(name[0][4:])] = int(name[3])
    return pids


def main(root: str, out: str, steps: int) -> None:
    from forge_ray.storage import Storage
    from forge_ray.testing.local_head import LocalHead, LocalNode
    from forge_ray.testing.synthetic_dataset import write_synthetic_dataset
    from forge_ray.train.metrics import read_all_metrics

    storage = Storage(root)
    dataset = write_synthetic_dataset(storage, "syn", {"docs": 120, "code": 80}, seq_len=64)
    config = forge_config(root, steps)
    run_dir = storage.location("runs", "two-nodes")
    result: dict = {"steps": steps, "checkpoint_every": CKPT_EVERY, "events": {}}
    outcome: dict = {}
    # The nodes read the store's keys from their own environment (never from a job's runtime env).
    # Logical CPUs beyond the worker's one on each node: Ray Data's read tasks of each worker's
    # stream need their own.
    with LocalHead(num_cpus=4, resources={"w": 1}, system_config=HEALTH,
                   extra_env={k: v for k, v in os.environ.items() if k.startswith("AWS_")}) as head:
        node = LocalNode(head, num_cpus=4, resources={"w": 1, "node2": 1}).start()
        try:
            # The head's token, known before Ray is imported (it reads the auth mode then).
            os.environ.update({k: head.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")})
            import ray

            from forge_ray.mixture import check_consumption
            from forge_ray.train import run_training

            # The State API's address for Ray Train's PlacementGroupCleaner (it cannot tell this
            # cluster from another one on the machine by itself).
            ray.init(address=head.gcs_address, logging_level="ERROR",
                     runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": head.dashboard_url}})
            result["nodes_before"] = sum(n["Alive"] for n in ray.nodes())

            def fit() -> None:
                try:
                    outcome["result"] = run_training(config, dataset)
                except BaseException as e:  # noqa: BLE001 - reported in the result file
                    outcome["error"] = repr(e)

            thread = threading.Thread(target=fit, daemon=True)
            thread.start()
            wait_for(lambda: any(r["step"] >= KILL_AT and r["world_size"] == 2 for r in read_all_metrics(run_dir)),
                     f"step {KILL_AT} with 2 workers", outcome)
            pids = worker_pids(storage, 2)
            result["worker_on_node2"] = sorted(r for r, pid in pids.items() if pid in node.pids())
            done_before = max(r["step"] for r in read_all_metrics(run_dir)) + 1
            node.kill()
            killed = time.time()
            after = wait_for(lambda: [r for r in read_all_metrics(run_dir) if r["time"] > killed],
                             "a step after the kill", outcome)
            result["events"]["kill"] = {
                "steps_done_before": done_before, "resumed_at": after[0]["start_step"],
                "world_after": after[0]["world_size"], "recovery_s": round(after[0]["time"] - killed, 1)}
            thread.join(timeout=180)
            result["nodes_after"] = sum(n["Alive"] for n in ray.nodes())
        finally:
            result["error"] = outcome.get("error") or ("still running" if "result" not in outcome else None)
            result["records"] = read_all_metrics(run_dir)
            if "result" in outcome:
                res = outcome["result"]
                result["final_step"] = res.metrics[-1]["step"]
                result["checkpoint_dir"] = res.checkpoint_dir
                try:
                    result["consumption"] = check_consumption(res.plan, run_dir).__dict__
                except Exception as e:  # noqa: BLE001 - the test reads the message
                    result["consumption_error"] = str(e)
            with open(out, "w") as f:
                json.dump(result, f, indent=1, default=str)
            if result["error"]:  # the workers' logs, for the post-mortem (the head's temp dir goes)
                logs = os.path.join(head.temp_dir, "session_latest", "logs")
                shutil.copytree(logs, os.path.join(os.path.dirname(out), "logs"), ignore_dangling_symlinks=True,
                                ignore=shutil.ignore_patterns("*.sock", "events"), dirs_exist_ok=True)
            if "ray" in sys.modules:
                sys.modules["ray"].shutdown()
            node.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
