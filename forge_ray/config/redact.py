"""The config as artefacts may hold it: deny-list terms and custom patterns as hashes, never verbatim.

    from forge_ray.config.redact import redacted_dump
    manifest["config"] = redacted_dump(config, include={"data", "prepare"})   # a JSON-ready dict

Deny-list terms (client names) and custom patterns (employee-id formats) are personal or
confidential data in their own right: a dataset manifest, a run file, a model manifest shipped
with the weights or a report must not copy them. Each becomes `sha256:<16 hex>` of the value, so
an auditor can still check that a given term was on the list. Every writer of a config into an
artefact goes through `redacted_dump` (one place to extend when a new sensitive field appears).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

HASH_PREFIX = "sha256:"


def value_hash(value: str) -> str:
    """`sha256:` and the first 16 hex digits of the SHA-256 of `value` (UTF-8)."""
    return HASH_PREFIX + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def redact_tree(data: Any) -> Any:
    """A copy of a dumped config (dict / list tree, any section of it) with every PII section's
    deny-list terms and pattern regexes replaced by their hashes."""
    if isinstance(data, list):
        return [redact_tree(x) for x in data]
    if not isinstance(data, dict):
        return data
    out = {k: redact_tree(v) for k, v in data.items()}
    if isinstance(out.get("deny_lists"), list):
        out["deny_lists"] = [dict(d, terms=[value_hash(t) for t in d.get("terms", [])])
                             if isinstance(d, dict) else d for d in out["deny_lists"]]
    if isinstance(out.get("patterns"), list):
        out["patterns"] = [dict(p, regex=value_hash(p["regex"])) if isinstance(p, dict) and "regex" in p else p
                           for p in out["patterns"]]
    return out


def redacted_dump(config, include: set[str] | None = None) -> dict:
    """`config` (a ForgeConfig or any section) as a JSON-ready dict, sensitive values hashed."""
    return redact_tree(json.loads(config.model_dump_json(include=include)))
