"""A version's files where a process can load them, and the error an evaluation fails with."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
from collections.abc import Iterator

from forge_ray.errors import ForgeError
from forge_ray.registry.cache import cache_folder, default_cache_root, local_folder
from forge_ray.registry.checksums import MANIFEST
from forge_ray.storage import is_local_location, url_to_fs


class EvalError(ForgeError):
    """The evaluation itself failed (a version that does not load, an endpoint that fails)."""

    exit_code = 3


def is_local(url: str) -> bool:
    return is_local_location(url)


@contextlib.contextmanager
def local_model_dir(url: str) -> Iterator[str]:
    """A local folder holding the version at `url`: the folder itself on a local root, else a copy.

    `transformers` and vLLM load only local folders; a version on an object store is copied once
    per node into the cache (`FORGE_CACHE_DIR`), every file checked against the manifest's sha256
    before the folder is renamed into place (`registry.cache`): a half copy is never loaded.
    """
    if is_local(url):
        yield url.split("://", 1)[1] if "://" in url else url
        return
    yield cached_model_dir(url)


def cached_model_dir(url: str) -> str:
    """The node-local, verified copy of the version folder at `url` (an object-store URI)."""
    fs, path = url_to_fs(url)
    path = path.rstrip("/")
    try:
        files = json.loads(fs.cat_file(posixpath.join(path, MANIFEST))).get("files") or None
    except FileNotFoundError:
        files = None
    if files is None:  # not a registry version: checked by the sizes the store lists
        return local_folder(url)
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
    dest = os.path.join(default_cache_root(), "versions", f"{posixpath.basename(path)}-{digest}")
    return cache_folder(fs, path, dest, files, extra=(MANIFEST,))


def load_hf_model(path: str):
    """`AutoModelForCausalLM` in float32, eval mode; EvalError naming the cause if it cannot load."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    except Exception as e:  # noqa: BLE001 - any failure to load means the version is unusable
        raise EvalError(f"version at {path} does not load: {type(e).__name__}: {e}") from None

