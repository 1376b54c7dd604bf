"""An elastic Ray Train job over a mixture plan: 2 workers -> a node (and its worker) lost -> 1 -> 2.

    .venv/bin/python tests/integration/elastic_mixture_job.py OUT_DIR

Runs on its own multi-node `ray.cluster_utils.Cluster` (a head and two 2-CPU worker nodes,
all on loopback), so it cannot share a process with another Ray cluster: the test
(test_mixture_elastic.py) runs it as a subprocess and reads OUT_DIR/result.json.

The train loop is trivial (an embedding bag and a linear layer under DDP/gloo), reads its
data through `TrainStream`, records what each step consumed, and checkpoints the cursor
after every step. Two steps hold their worker (an Event that is never set) so the cluster
change happens mid-run, with no sleeps: at step 4 with 2 workers the driver removes a worker
node (killing that worker; Ray Train restarts at 1 worker from the step-4 cursor); at step 8
with 1 worker the driver adds a node back (the elastic monitor restarts at 2 workers from the
step-8 cursor). The step a worker was holding is consumed twice, but only its re-run counts.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import threading
import time

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every node on 127.0.0.1 (no other interface)
# Right after a node is lost the controller's resource view may still count it and try 2
# workers; fail that attempt after 20 s (default 60) so it retries with what is there.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "20")

import forge_ray  # noqa: E402,F401  (offline environment)
from forge_ray.offline import OFFLINE_ENV  # noqa: E402

STEPS, GLOBAL_BATCH, MICRO = 12, 4, 1
# The first attempt (2 workers) is held at step 4, the 1-worker attempt at step 8, the last runs free.
HOLD_AT = {(2, True): 4, (1, False): 8}


def train_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from forge_ray.mixture import ConsumptionRecord, TrainStream

    plan, run_dir = config["plan"], config["run_dir"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d, open(os.path.join(d, "cursor.json")) as f:
            start = json.load(f)["next_step"]
    stream = TrainStream(plan, rank, world, MICRO, start_step=start, read_num_cpus=0.5).start()
    torch.manual_seed(0)  # the stream's Ray Data start-up overlaps the DDP setup below
    model = ray.train.torch.prepare_model(
        torch.nn.Sequential(torch.nn.EmbeddingBag(512, 8), torch.nn.Linear(8, 1))
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    record = ConsumptionRecord(run_dir, rank=rank, world_size=world, start_step=start)
    hold = HOLD_AT.get((world, start == 0))
    for step, micro_batches in stream:
        opt.zero_grad()
        for batch in micro_batches:
            # the synthetic sequences carry their identity: token 0 = row, token 1 = source
            assert bool((batch["input_ids"][:, 0] == batch["row"] % 511).all())
            assert bool((batch["input_ids"][:, 1] == batch["source"]).all())
            loss = model(batch["input_ids"] % 512).float().pow(2).mean()
            loss.backward()
        opt.step()
        record.add(step, micro_batches)
        if step == hold:
            threading.Event().wait()  # held until the driver changes the cluster and Train restarts us
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if rank == 0:
                with open(os.path.join(d, "cursor.json"), "w") as f:
                    json.dump({"next_step": step + 1, "plan_id": plan.plan_id}, f)
                ckpt = ray.train.Checkpoint.from_directory(d)
            ray.train.report({"step": step, "world_size": world}, checkpoint=ckpt)


def wait_for(predicate, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def main(out_dir: str) -> None:
    import ray
    from ray.cluster_utils import Cluster
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from forge_ray.config.mixture import MixtureConfig
    from forge_ray.mixture import build_plan, check_consumption, read_records
    from forge_ray.storage import Storage
    from forge_ray.testing.synthetic_dataset import write_synthetic_dataset

    t0 = time.monotonic()
    ds = write_synthetic_dataset(Storage(os.path.join(out_dir, "root")), "mix", {"docs": 20, "code": 9, "tickets": 5})
    cfg = MixtureConfig(weights={"docs": 0.5, "code": 0.3, "tickets": 0.2}, max_epochs={"tickets": 2.0}, seed=3)
    plan = build_plan(ds, cfg, global_batch_size=GLOBAL_BATCH, total_steps=STEPS)
    run_dir = os.path.join(out_dir, "run")

    # A temp dir of its own: Ray writes <temp_dir>/ray_current_cluster, and a bare ray.init()
    # elsewhere on the machine (another test run) would otherwise attach to this cluster.
    # Short, because Ray's socket paths live under it (Unix sockets allow ~107 characters).
    temp_dir = tempfile.mkdtemp(prefix="fr-el-", dir="/tmp")
    atexit.register(shutil.rmtree, temp_dir, True)  # after Ray's own exit handlers (LIFO)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "temp_dir": temp_dir,
            "num_cpus": 1,
            "resources": {"head": 1},
            "include_dashboard": False,
            # fast node-death detection; no idle worker processes prestarted on 3 nodes of 2 cores
            "_system_config": {
                "health_check_period_ms": 500,
                "health_check_failure_threshold": 3,
                "enable_worker_prestart": False,
                "prestart_worker_first_driver": False,
            },
        },
    )
    nodes = [cluster.add_node(num_cpus=2, resources={"w": 1}) for _ in range(2)]
    ray.init(address=cluster.address, runtime_env={"env_vars": dict(OFFLINE_ENV)})
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"plan": plan, "run_dir": run_dir},
        scaling_config=ScalingConfig(
            num_workers=(1, 2), resources_per_worker={"CPU": 1, "w": 1}, elastic_resize_monitor_interval_s=1
        ),
        run_config=RunConfig(
            name="elastic-mixture",
            storage_path=os.path.join(out_dir, "ray_results"),
            failure_config=FailureConfig(max_failures=4),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as e:  # noqa: BLE001 - reported in result.json
            outcome["error"] = repr(e)

    def seen(world: int, step: int, ranks: int) -> bool:
        recs = read_records(run_dir) if os.path.isdir(run_dir) else []
        return len({r["rank"] for r in recs if r["world_size"] == world and r["step"] == step}) >= ranks

    phases = {}
    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    try:
        wait_for(lambda: seen(2, 4, 2) or "error" in outcome, "2 workers at step 4")
        phases["two_workers_at_step_4_s"] = round(time.monotonic() - t0, 1)
        cluster.remove_node(nodes[1])  # kills the worker on it; only one node with "w" is left
        wait_for(lambda: seen(1, 8, 1) or "error" in outcome, "1 worker at step 8")
        phases["one_worker_at_step_8_s"] = round(time.monotonic() - t0, 1)
        cluster.add_node(num_cpus=2, resources={"w": 1})
        thread.join(timeout=180)
        phases["finished_s"] = round(time.monotonic() - t0, 1)
    finally:
        result: dict = {"phases": phases, "error": outcome.get("error"), "plan": plan.to_json()}
        if "result" in outcome:
            result["final_metrics"] = outcome["result"].metrics
        try:
            report = check_consumption(plan, run_dir)
            result["report"] = report.__dict__
        except Exception as e:  # noqa: BLE001 - the test reads the message
            result["check_error"] = str(e)
        with open(os.path.join(out_dir, "result.json"), "w") as f:
            json.dump(result, f, indent=2, default=str)
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
