"""The model registry: exported versions, their states, and the promoted pointer.

    from forge_ray.registry import Registry, publish_version
    publish_version(storage, "demo-moe", "v1", hf_dir, manifest)   # export: add a candidate
    reg = Registry(storage, "demo-moe")
    reg.promote("v1"); reg.attach_report("v1", "eval", report); reg.rollback("bad answers")
    local = cache_version(reg, "v1")   # a verified node-local copy when the root is an object store
"""

from forge_ray.registry.cache import cache_folder, cache_version, local_file, local_folder
from forge_ray.registry.canary import CanaryResult, check_canaries, record_canaries
from forge_ray.registry.checksums import CorruptVersionError
from forge_ray.registry.publish import publish_version
from forge_ray.registry.store import STATES, Pointer, Registry, RegistryError, VersionInfo

__all__ = [
    "STATES",
    "CanaryResult",
    "CorruptVersionError",
    "Pointer",
    "Registry",
    "RegistryError",
    "VersionInfo",
    "cache_folder",
    "cache_version",
    "check_canaries",
    "local_file",
    "local_folder",
    "publish_version",
    "record_canaries",
]
