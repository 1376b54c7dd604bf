"""The model registry: exported versions, their states, and the promoted pointer.

    from forge_ray.registry import Registry, publish_version
    publish_version(storage, "demo-moe", "v1", hf_dir, manifest)   # export: add a candidate
    reg = Registry(storage, "demo-moe")
    reg.promote("v1"); reg.attach_report("v1", "eval", report); reg.rollback("bad answers")
"""

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
    "check_canaries",
    "publish_version",
    "record_canaries",
]
