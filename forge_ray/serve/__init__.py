"""The serving room: an OpenAI-compatible endpoint over Ray Serve + vLLM with hot swap of versions.

    from forge_ray.serve import start_serving, wait_for_version, complete, demo_keys, show_hot_swap
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
from forge_ray.serve.demo import demo_keys, show_hot_swap

__all__ = ["Endpoint", "ServeError", "build_app", "complete", "demo_keys", "show_hot_swap", "start_serving",
           "status", "stop_serving", "wait_for_version"]
