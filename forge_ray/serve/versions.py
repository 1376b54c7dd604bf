"""A registry version as a replica sees it: a local folder with its files (checksums verified), and
whether a swap between two versions may reload weights in place (docs/serving.md, "Hot swap")."""

from __future__ import annotations

import os

import fsspec

from forge_ray.config.serve import ServeEngineConfig
from forge_ray.registry import Registry
from forge_ray.registry.checksums import verify_checksums

WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")


def structure(manifest: dict) -> dict[str, str]:
    """Checksums of everything but the weights: equal structure means same config and tokenizer."""
    return {k: v for k, v in manifest["files"].items() if not k.endswith(WEIGHT_SUFFIXES)}


def in_place_ok(old: dict, new: dict, cfg: ServeEngineConfig) -> bool:
    """In-place reload only for a proven architecture whose config and tokenizer did not change."""
    return (old["architecture"] == new["architecture"] and new["architecture"] in cfg.in_place_architectures
            and structure(old) == structure(new))


def local_dir(registry: Registry, version: str, cache_root: str | None = None) -> str:
    """A local folder with the version, checksums verified (downloaded when storage is remote)."""
    registry.verify(version)
    fs = registry.storage.fs
    if "file" in fs.protocol or "local" in fs.protocol:
        return registry.version_path(version)
    cache_root = cache_root or os.path.expanduser("~/.cache/forge_ray/registry")
    dest = os.path.join(cache_root, registry.model, version)
    if not os.path.exists(os.path.join(dest, "_COMPLETE")):
        fs.get(registry.version_path(version).rstrip("/") + "/", dest, recursive=True)
    verify_checksums(fsspec.filesystem("file"), dest, registry.manifest(version)["files"])
    return dest
