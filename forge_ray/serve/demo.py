"""The serving part of `make demo`: serve the promoted version, then show a hot swap.

    config, key = demo_keys(config)          # a random API key in <storage_root>/secrets/ (local or s3) if none is set
    endpoint = start_serving(config)
    show_hot_swap(endpoint, key, "v2")       # completion before, promote v2, wait, completion after
"""

from __future__ import annotations

import contextlib
import os
import secrets

from forge_ray.config import ForgeConfig
from forge_ray.errors import ConflictError
from forge_ray.registry import Registry
from forge_ray.serve.app import Endpoint, wait_for_version
from forge_ray.serve.auth import read_keys
from forge_ray.serve.client import complete
from forge_ray.storage import Storage

PROMPT = "def main():"


def demo_keys(config: ForgeConfig) -> tuple[ForgeConfig, str]:
    """(config, an API key): the configured key, else a new one in <root>/secrets/api_keys.

    The file stays on the storage root: a local root gets a 0600 file; an object-store root an
    object created only if absent (who may read it is the bucket's policy), which every replica's
    node reads from the store, so no key file is left on the driver's disk.
    """
    auth = config.serve.auth
    keys = read_keys(auth.api_keys_env, auth.api_keys_file)
    if keys:
        return config, keys[0]
    storage = Storage(config.project.storage_root)
    rel = "secrets/api_keys"
    new_key = f"forge-{secrets.token_urlsafe(24)}\n".encode()
    if storage.is_local:
        path = os.path.abspath(storage.path(rel))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(new_key)
    else:
        path = storage.url(rel)
        with contextlib.suppress(ConflictError):  # another run made it first: use that one
            storage.write_if(rel, new_key, None)
    serve = config.serve.model_copy(update={"auth": auth.model_copy(update={"api_keys_file": path})})
    return config.model_copy(update={"serve": serve}), read_keys(auth.api_keys_env, path)[0]


def show_hot_swap(endpoint: Endpoint, key: str, version: str, prompt: str = PROMPT,
                  timeout_s: float = 600.0, log=print) -> dict:
    """Completion from the serving version, promote `version`, wait for every replica, completion again."""
    before = complete(endpoint.base_url, key, endpoint.model, prompt, max_tokens=16)
    log(f"      before: [{before['version']}] {prompt!r} -> {before['text']!r}")
    Registry(endpoint.storage_root, endpoint.model).promote(version, reason="demo hot swap")
    log(f"      promoted {version}; replicas swap one at a time while serving ...")
    status = wait_for_version(endpoint, version, timeout_s=timeout_s)
    after = complete(endpoint.base_url, key, endpoint.model, prompt, max_tokens=16)
    log(f"      after:  [{after['version']}] {prompt!r} -> {after['text']!r}")
    swaps = [e["detail"] for e in status["events"] if e["event"] == "swapped" and e["version"] == version]
    for s in swaps:
        log(f"      swap: {s}")
    return {"before": before, "after": after, "swaps": swaps}
