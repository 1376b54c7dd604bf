"""Adding a version: `publish_version` copies an exported Hugging Face folder in as a candidate."""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any

import fsspec

from forge_ray.registry.checksums import MANIFEST, compute_checksums
from forge_ray.registry.store import VERSION_PATTERN, Registry, RegistryError, VersionInfo, now
from forge_ray.storage import Storage

REQUIRED_FILES = ("config.json",)
ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MixtralForCausalLM")


def publish_version(
    storage: Storage | str, model: str, version: str, hf_dir: str, manifest: dict[str, Any]
) -> VersionInfo:
    """Copy the local folder `hf_dir` to `registry/<model>/<version>/` atomically, as a candidate.

    `manifest` follows docs/contracts.md ("Exported version"); `files` (sha256 of every file),
    `model`, `version` and, when missing, `architecture` (from config.json) and `created` are
    filled in here. The folder becomes visible only once complete; a version is never overwritten.
    """
    storage = storage if isinstance(storage, Storage) else Storage(storage)
    registry = Registry(storage, model)
    if not VERSION_PATTERN.match(version):
        raise RegistryError(f"bad version name {version!r}: letters, digits, '.', '_', '-' only")
    if not os.path.isdir(hf_dir):
        raise RegistryError(f"export folder {hf_dir!r} does not exist")
    missing = [f for f in REQUIRED_FILES if not os.path.exists(os.path.join(hf_dir, f))]
    weights = [f for f in os.listdir(hf_dir) if f.endswith(".safetensors")]
    if missing or not weights:
        raise RegistryError(f"{hf_dir} is not a Hugging Face model folder: missing "
                            f"{missing + ([] if weights else ['*.safetensors'])}")
    with open(os.path.join(hf_dir, "config.json")) as f:
        architectures = json.load(f).get("architectures") or ["?"]
    architecture = manifest.get("architecture") or architectures[0]
    if architecture not in ARCHITECTURES:
        raise RegistryError(f"architecture {architecture!r} is not servable; expected one of {ARCHITECTURES}")

    local = fsspec.filesystem("file")
    files = compute_checksums(local, hf_dir)
    full = {**manifest, "model": model, "version": version, "architecture": architecture,
            "files": files, "created": manifest.get("created") or now()}
    fs = storage.fs
    with storage.atomic_dir(registry.rel(version)) as tmp:
        for rel in files:
            dest = posixpath.join(tmp, rel)
            fs.makedirs(posixpath.dirname(dest), exist_ok=True)
            fs.put_file(os.path.join(hf_dir, rel), dest)
        with fs.open(posixpath.join(tmp, MANIFEST), "w") as f:
            json.dump(full, f, indent=2, sort_keys=True)
    registry.init_state(version)
    return registry.get(version)
