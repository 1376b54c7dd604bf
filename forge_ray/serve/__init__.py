"""The serving room: an OpenAI-compatible endpoint over Ray Serve + vLLM with hot swap of versions.

    from forge_ray.serve import start_serving, wait_for_version, complete
"""

from forge_ray.serve.app import (
           Endpoint,
           ServeError,
           build_app,
           start_serving,
           status,
           stop_serving,
           wait_for_version,
)
from forge_ray.serve.client import complete

__all__ = ["Endpoint", "ServeError", "build_app", "complete", "start_serving", "status", "stop_serving",
           "wait_for_version"]
