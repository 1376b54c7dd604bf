"""API keys: read from an environment variable and/or a secrets file, kept only as hashes.

Keys are compared in constant time and never logged; an endpoint with no API key configured
refuses to start rather than serving everyone.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from forge_ray.config.serve import AuthConfig
from forge_ray.errors import ConfigError
from forge_ray.storage import is_local_location, url_to_fs


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def read_keys(env_var: str, path: str | None) -> list[str]:
    """Keys from `$env_var` (comma-separated) and from `path` (one a line, '#' comments)."""
    keys = [k.strip() for k in os.environ.get(env_var, "").split(",") if k.strip()]
    if path:
        try:
            if is_local_location(path):
                with open(path) as f:
                    text = f.read()
            else:  # on the object store (the demo's generated key with an s3:// root): read on any node
                fs, where = url_to_fs(path)
                text = fs.cat_file(where).decode()
        except OSError as e:
            raise ConfigError("serve.auth", [f"keys file {path!r} cannot be read: {e.strerror or e}"]) from None
        keys += [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return keys


class KeyChecker:
    """Holds sha256 digests of the API and admin keys; `allows(header, admin)` checks a request."""

    def __init__(self, api_keys: list[str], admin_keys: list[str]):
        if not api_keys:
            raise ConfigError("serve.auth", ["no API key configured (set the api_keys_env variable "
                                             "or api_keys_file); the endpoint refuses to run open"])
        self._api = [_digest(k) for k in api_keys]
        self._admin = [_digest(k) for k in admin_keys]

    @classmethod
    def from_config(cls, cfg: AuthConfig) -> KeyChecker:
        return cls(read_keys(cfg.api_keys_env, cfg.api_keys_file),
                   read_keys(cfg.admin_keys_env, cfg.admin_keys_file))

    def allows(self, authorization: str | None, admin: bool = False) -> bool:
        """True if the `Authorization: Bearer <key>` header holds a key of the right kind."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        digest = _digest(authorization.removeprefix("Bearer ").strip())
        # Check every key (no early exit) so timing does not tell which one was close.
        return any([hmac.compare_digest(digest, d) for d in (self._admin if admin else self._api)])
