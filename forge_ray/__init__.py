"""forge_ray: own your language model on your own Ray cluster.

The public front is small: the forge file (`forge_ray.config`), the `forge` CLI
(`forge_ray.cli`), and the rooms of the data flow (`prepare`, `mixture`, `models`, `train`,
`export`, `eval`, `serve`) over the foundation they share (`storage`, `registry`).
See docs/architecture.md.
"""

from forge_ray.offline import apply_offline_env

__version__ = "0.1.0"

# Nothing leaves the cluster by default: every driver that imports forge_ray gets the
# offline / no-telemetry environment before Ray, vLLM or Hugging Face are imported.
apply_offline_env()
