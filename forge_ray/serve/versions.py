"""A registry version as a replica sees it: a local folder with its files (checksums verified), and
whether a swap between two versions may reload weights in place (docs/serving.md, "Hot swap")."""

from __future__ import annotations

from forge_ray.config.serve import ServeEngineConfig
from forge_ray.registry import Registry
from forge_ray.registry.cache import cache_version

WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")


def structure(manifest: dict) -> dict[str, str]:
    """Checksums of everything but the weights: equal structure means same config and tokenizer."""
    return {k: v for k, v in manifest["files"].items() if not k.endswith(WEIGHT_SUFFIXES)}


def in_place_ok(old: dict, new: dict, cfg: ServeEngineConfig) -> bool:
    """In-place reload only for a proven architecture whose config and tokenizer did not change."""
    return (old["architecture"] == new["architecture"] and new["architecture"] in cfg.in_place_architectures
            and structure(old) == structure(new))


def local_dir(registry: Registry, version: str, cache_root: str | None = None) -> str:
    """A local folder with the version, checksums verified: the registry's node-local cache
    (forge_ray.registry.cache: copied atomically, keyed by the manifest's checksums) when storage is
    remote, the version's own folder when it is local. Raises CorruptVersionError on a mismatch."""
    return cache_version(registry, version, cache_root)
