"""The Ray Serve application, for `serve run`, `serve deploy` and KubeRay RayService.

    serve run serving.app:build config=jobs/configs/demo.yaml

(`forge serve -c FILE` does the same from the forge CLI.) The deployments and all logic live in
forge_ray/serve/ so that tests reach them; this is only an entry Serve can import, the same
application builder as `forge_ray.serve.app:build` (config=FILE, optional overrides).
"""

from __future__ import annotations

from forge_ray.serve.app import build

__all__ = ["build"]
