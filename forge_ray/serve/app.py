"""Building, starting and watching the serving application (used by `forge serve`, tests, the demo).

    from forge_ray.serve import start_serving, wait_for_version
    endpoint = start_serving(config)                 # serves the promoted version of config's model
    wait_for_version(endpoint, "v2", timeout_s=300)  # after a promotion: every replica serves v2

`build_app` is the one application builder. Config-driven deploys reach it through `build(args)`,
a Ray Serve *application builder*:

    serve run forge_ray.serve.app:build config=jobs/configs/demo.yaml
    # KubeRay RayService (cluster/kuberay/rayservice.yaml), serveConfigV2:
    #   import_path: forge_ray.serve.app:build
    #   args: {config: /home/ray/forge_ray/jobs/configs/demo.yaml, overrides: [...]}
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from forge_ray.config import ForgeConfig, load_config
from forge_ray.config.serve import ServeConfig
from forge_ray.errors import ConfigError, ForgeError
from forge_ray.registry import Registry
from forge_ray.serve.contracts import WatcherStatus
from forge_ray.storage import Storage, is_local_location


class ServeError(ForgeError):
    """The serving application could not start or did not reach the expected state."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str       # e.g. http://127.0.0.1:8000/v1
    model: str
    app_name: str
    storage_root: str


def build_app(cfg: ServeConfig, storage_root: str, model: str):
    """The Serve application graph: ModelServer replicas (HTTP ingress + engine) -> SwapWatcher."""
    from forge_ray.serve.deployments import ModelServer, SwapWatcher

    # Key files are read on each replica's node, maybe from another working directory: absolute paths.
    auth = cfg.auth.model_copy(update={
        k: os.path.abspath(getattr(cfg.auth, k)) for k in ("api_keys_file", "admin_keys_file")
        if getattr(cfg.auth, k) and is_local_location(getattr(cfg.auth, k))})
    cfg_json = cfg.model_copy(update={"auth": auth}).model_dump_json()
    uri = Storage(storage_root).url()
    watcher = SwapWatcher.bind(uri, model, cfg_json)
    r = cfg.replicas
    scaling = ({"autoscaling_config": r.autoscaling.model_dump()} if r.autoscaling
               else {"num_replicas": r.num_replicas})
    return ModelServer.options(max_ongoing_requests=r.max_ongoing_requests,
                               ray_actor_options=replica_actor_options(cfg), **scaling).bind(uri, model, cfg_json, watcher)


def replica_actor_options(cfg: ServeConfig) -> dict:
    """Ray resources of one model replica. A GPU replica holds `num_gpus` (at least the engine's
    tensor-parallel size, a config rule); with tensor parallelism > 1 vLLM's workers run in processes
    the replica starts on the same node, sharing those GPUs."""
    r = cfg.replicas
    options: dict[str, Any] = {"num_cpus": r.num_cpus}
    if r.num_gpus:
        options["num_gpus"] = r.num_gpus
    if r.accelerator_type:
        options["accelerator_type"] = r.accelerator_type
    return options


def build(args: dict[str, Any]):
    """Serve's application builder: args `config` (forge file path on the cluster), optional
    `overrides` (list of KEY=VALUE); deploys the forge file's model with `build_app`."""
    if not isinstance(args, dict) or not args.get("config"):
        raise ConfigError("serve application args", ["config: required (path of the forge file on the cluster)"])
    overrides = args.get("overrides") or []
    if isinstance(overrides, str):
        overrides = [overrides]
    config = load_config(args["config"], list(overrides))
    return build_app(config.serve, config.project.storage_root, config.serve.model or config.model.name)


def start_serving(config: ForgeConfig, address: str | None = None, model: str | None = None) -> Endpoint:
    """Serve the promoted version of the forge file's model on the cluster; returns when it answers."""
    from ray import serve

    from forge_ray.cluster import connect_for

    cfg = config.serve
    model = model or cfg.model or config.model.name
    root = config.project.storage_root
    registry = Registry(root, model)
    if registry.promoted() is None:
        raise ServeError(f"model {model!r} has no promoted version under {registry.storage.url('registry')}; "
                         f"promote one with `forge registry promote -c FILE VERSION`")
    connect_for(config, address, include_dashboard=False)  # serving alone needs no State API
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(build_app(cfg, root, model), name=cfg.app_name, route_prefix="/")
    return Endpoint(f"http://{cfg.host}:{cfg.port}/v1", model, cfg.app_name, root)


def status(endpoint: Endpoint) -> WatcherStatus:
    """The swap watcher's view (a plain dict, typed in serve/contracts.py): target version,
    generation, each replica's version, recent events."""
    from ray import serve

    return serve.get_deployment_handle("SwapWatcher", endpoint.app_name).status.remote().result()


def wait_for_version(endpoint: Endpoint, version: str, timeout_s: float = 300.0,
                     replicas: int | None = None) -> WatcherStatus:
    """Block until every replica (at least `replicas` of them) serves `version`; returns the status.

    Raises ServeError if the version is rejected or refused meanwhile, or on timeout.
    """
    registry = Registry(endpoint.storage_root, endpoint.model)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = status(endpoint)
        versions = [r["version"] for r in st["replicas"].values() if not r["swapping"]]
        if versions and all(v == version for v in versions) and len(versions) >= (replicas or 1):
            return st
        if registry.state(version) == "rejected":
            raise ServeError(f"{endpoint.model}/{version} was rejected: {registry.get(version).history[-1]['reason']}")
        time.sleep(0.5)
    raise ServeError(f"{endpoint.model}/{version} not served by every replica after {timeout_s:.0f}s: {status(endpoint)}")


def stop_serving(endpoint: Endpoint) -> None:
    """Delete the application; with no other application left, stop Serve too. Serve's HTTP
    options (its port) are fixed when it starts and a later `serve.start` ignores new ones: the
    next `start_serving` on another port must find no Serve running."""
    from ray import serve

    serve.delete(endpoint.app_name)
    if not serve.status().applications:
        serve.shutdown()
