"""The "nothing leaves the cluster" environment, set once where forge_ray starts processes.

Drivers get it when they import `forge_ray`; Ray workers get it through the runtime env
that `forge_ray.cluster.connect` passes (`OFFLINE_ENV`). An operator can still override a
variable by setting it before starting forge (we only fill in what is unset).
"""

from __future__ import annotations

import os

OFFLINE_ENV: dict[str, str] = {
    # Usage statistics / telemetry off.
    "RAY_USAGE_STATS_ENABLED": "0",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    # No model or data set is ever fetched from a hub at run time.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    # The Rust tokenizers' own thread pool fights Ray's worker processes for 2 cores.
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_offline_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Fill in every OFFLINE_ENV variable that is not already set; return the result."""
    env = os.environ if environ is None else environ
    for key, value in OFFLINE_ENV.items():
        env.setdefault(key, value)
    return {key: env[key] for key in OFFLINE_ENV}
