"""The serving application as a Ray Serve *application builder*, for config-driven deploys.

    serve run forge_ray.operate.serve_app:build config=jobs/configs/demo.yaml
    # KubeRay RayService (cluster/kuberay/rayservice.yaml), serveConfigV2:
    #   import_path: forge_ray.operate.serve_app:build
    #   args: {config: /home/ray/forge_ray/jobs/configs/demo.yaml, overrides: [...]}

Serve calls `build(args)` on the cluster and deploys what it returns: the same application
graph `forge serve` starts (forge_ray.serve.app.build_app), for the forge file's model.
"""

from __future__ import annotations

from typing import Any

from forge_ray.config import load_config
from forge_ray.errors import ConfigError


def build(args: dict[str, Any]):
    """args: `config` (forge file path on the cluster), optional `overrides` (list of KEY=VALUE)."""
    from forge_ray.serve.app import build_app

    if not isinstance(args, dict) or not args.get("config"):
        raise ConfigError("serve application args", ["config: required (path of the forge file on the cluster)"])
    overrides = args.get("overrides") or []
    if isinstance(overrides, str):
        overrides = [overrides]
    config = load_config(args["config"], list(overrides))
    model = config.serve.model or config.model.name
    return build_app(config.serve, config.project.storage_root, model)
