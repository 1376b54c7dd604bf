"""The Ray Serve application, for `serve run`, `serve deploy` and KubeRay RayService.

    serve run serving.app:build config=jobs/configs/demo.yaml

(`forge serve -c FILE` does the same from the forge CLI.) The deployments and all logic live in
forge_ray/serve/ so that tests reach them; this is only the entry Serve imports.
"""

from __future__ import annotations

from forge_ray.config import load_config
from forge_ray.serve.app import build_app


def build(args: dict):
    """Serve application builder: `config=FILE` is the forge file."""
    config = load_config(args["config"])
    return build_app(config.serve, config.project.storage_root, config.serve.model or config.model.name)
