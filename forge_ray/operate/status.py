"""What `forge status` shows: cluster resources, jobs in flight, Serve applications, the served version.

    info = cluster_status(job_client(address), config=None)   # a plain dict
    print(format_status(info))

Resources come from the dashboard's node summary and cluster status (used / total per resource,
as `ray status` shows them); Serve applications from Serve's REST API (the one
KubeRay's RayService reads). The served version needs the forge file (`-c FILE`): the registry's
promoted pointer names the version the endpoint is meant to serve. Each part that cannot be read
is reported as unavailable rather than failing the whole command.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from forge_ray.operate.client import ACTIVE, format_duration, job_label, sorted_jobs

GIB = 1 << 30
SHOWN = ("CPU", "GPU", "memory", "object_store_memory")


def _get_json(client, path: str) -> dict:
    r = client._do_request("GET", path)  # the SDK's request: carries the cluster's auth token
    r.raise_for_status()
    return r.json()


def _resource_name(key: str) -> str:
    return {"objectStoreMemory": "object_store_memory"}.get(key, key)


def resources(client) -> dict[str, Any]:
    """Nodes alive (the dashboard's node summary) and, per resource, [used, total]."""
    summary = _get_json(client, "/nodes?view=summary")["data"]["summary"]
    nodes = [n for n in summary if (n.get("raylet") or {}).get("state") == "ALIVE"]
    totals: dict[str, float] = {}
    for node in nodes:
        for key, value in (node["raylet"].get("resourcesTotal") or {}).items():
            totals[_resource_name(key)] = totals.get(_resource_name(key), 0.0) + value
    usage = {key: [0.0, totals[key]] for key in SHOWN if key in totals}
    try:
        report = _get_json(client, "/api/cluster_status")["data"]["clusterStatus"]["loadMetricsReport"]
        for key, pair in (report.get("usage") or {}).items():
            if _resource_name(key) in SHOWN:
                usage[_resource_name(key)] = [float(pair[0]), float(pair[1])]
    except Exception:  # noqa: BLE001 - usage is a nicety; totals are still right
        pass
    return {
        "nodes": [{"ip": n.get("ip"), "head": bool(n["raylet"].get("isHeadNode"))} for n in nodes],
        "usage": usage,
    }


def serve_applications(client) -> dict[str, Any]:
    apps = _get_json(client, "/api/serve/applications/").get("applications") or {}
    return {
        name: {
            "status": app.get("status"),
            "route_prefix": app.get("route_prefix"),
            "deployments": {d: info.get("status") for d, info in (app.get("deployments") or {}).items()},
        }
        for name, app in apps.items()
    }


def served_version(config) -> dict[str, Any]:
    """The registry's promoted pointer for the forge file's model (what the endpoint serves)."""
    from forge_ray.registry import Registry

    registry = Registry(config.project.storage_root, config.model.name)
    pointer = registry.pointer()
    out: dict[str, Any] = {"model": config.model.name, "version": pointer.version, "generation": pointer.generation}
    if pointer.version:
        info = registry.get(pointer.version)
        out["created"] = info.created
        out["dataset_version"] = info.manifest.get("lineage", {}).get("dataset_version")
    if pointer.history:  # the last promote / rollback: the swap the replicas follow
        last = pointer.history[-1]
        out["last_change"] = {k: last.get(k) for k in ("action", "version", "time", "reason")}
    return out


def runs_status(config) -> list[dict[str, Any]]:
    """The project's training runs, read from its storage (forge_ray/operate/runs.py)."""
    from forge_ray.operate.runs import training_runs
    from forge_ray.storage import Storage

    return training_runs(Storage(config.project.storage_root))


def endpoint_version(config, host: str) -> dict[str, Any]:
    """What the endpoint itself says it serves (`/v1/models`), asked with the project's API key."""
    from forge_ray.serve.auth import read_keys
    from forge_ray.serve.client import request

    auth = config.serve.auth
    keys = read_keys(auth.api_keys_env, auth.api_keys_file)
    url = f"http://{host}:{config.serve.port}/v1"
    if not keys:
        return {"url": url, "unavailable": f"no API key ({auth.api_keys_env} or serve.auth.api_keys_file)"}
    code, body, _ = request(url, "/models", keys[0], timeout=5)
    if code != 200:
        return {"url": url, "unavailable": f"HTTP {code}"}
    model = (body.get("data") or [{}])[0]
    return {"url": url, "version": model.get("version"), "versions_served": model.get("versions_served", [])}


def _tolerant(fn, *args) -> Any:
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - one part missing must not hide the others
        return {"unavailable": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def cluster_status(client, config=None) -> dict[str, Any]:
    jobs = [j for j in sorted_jobs(client) if str(j.status.value) in ACTIVE]
    return {
        "address": client.get_address(),
        "resources": _tolerant(resources, client),
        "jobs": [
            {"id": j.submission_id, "status": str(j.status.value), "job": job_label(j), "running_for": format_duration(j)}
            for j in jobs
        ],
        "serve": _tolerant(serve_applications, client),
        "training_runs": _tolerant(runs_status, config) if config is not None else None,
        "served_version": _tolerant(served_version, config) if config is not None else None,
        "endpoint": _tolerant(endpoint_version, config, urlparse(client.get_address()).hostname)
        if config is not None
        else None,
    }


def storage_status(config, reason: str) -> dict[str, Any]:
    """What the project's storage alone tells (no cluster answers: e.g. a `forge train` on its own
    local cluster, which runs no dashboard): training runs and the served version."""
    return {
        "address": f"unreachable ({reason})",
        "resources": {"unavailable": "no cluster"},
        "jobs": [],
        "serve": {"unavailable": "no cluster"},
        "training_runs": _tolerant(runs_status, config),
        "served_version": _tolerant(served_version, config),
        "endpoint": None,
    }


def _amount(key: str, value: float) -> str:
    return f"{value / GIB:.1f} GiB" if key in ("memory", "object_store_memory") else f"{value:g}"


def format_status(info: dict[str, Any]) -> str:
    lines = [f"cluster  {info['address']}"]
    res = info["resources"]
    if "unavailable" in res:
        lines.append(f"  resources: unavailable ({res['unavailable']})")
    else:
        heads = [n["ip"] for n in res["nodes"] if n["head"]]
        lines.append(f"  nodes: {len(res['nodes'])} alive (head {', '.join(heads) or '?'})")
        for key, (used, total) in res["usage"].items():
            lines.append(f"  {key:20s} {_amount(key, used):>10s} used of {_amount(key, total)}")
    lines.append(f"jobs running: {len(info['jobs'])}")
    for job in info["jobs"]:
        lines.append(f"  {job['id']:28s} {job['status']:9s} {job['job']}  ({job['running_for']})")
    serve = info["serve"]
    if "unavailable" in serve:
        lines.append(f"serve: unavailable ({serve['unavailable']})")
    else:
        lines.append(f"serve applications: {len(serve) or 'none'}")
        for name, app in serve.items():
            deps = ", ".join(f"{d} {s}" for d, s in app["deployments"].items())
            lines.append(f"  {name}  {app['status']}  route {app['route_prefix']}  [{deps}]")
    runs = info.get("training_runs")
    if isinstance(runs, dict):
        lines.append(f"training runs: unavailable ({runs['unavailable']})")
    elif runs is not None:
        from forge_ray.operate.runs import format_runs

        lines.extend(format_runs(runs))
    served = info["served_version"]
    if served is None:
        lines.append("served version: pass -c FILE to read it from the project's registry")
    elif "unavailable" in served:
        lines.append(f"served version: unavailable ({served['unavailable']})")
    elif served["version"] is None:
        lines.append(f"served version: {served['model']} has no promoted version yet")
    else:
        lines.append(
            f"served version: {served['model']} {served['version']} (generation {served['generation']}, "
            f"created {served.get('created') or '?'}, dataset {served.get('dataset_version') or '?'})"
        )
        if change := served.get("last_change"):
            lines.append(f"  last change: {change['action']} {change['version']} at {change['time']}"
                         + (f" ({change['reason']})" if change.get("reason") else ""))
    endpoint = info.get("endpoint")
    if endpoint:
        where = endpoint.get("url", "endpoint")
        if "version" in endpoint:
            served = ", ".join(endpoint["versions_served"]) or "none yet"
            lines.append(f"endpoint {where}: target {endpoint['version']}, replicas serve {served}")
        else:
            lines.append(f"endpoint {where}: not asked ({endpoint['unavailable']})")
    return "\n".join(lines)
