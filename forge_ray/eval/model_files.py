"""A version's files where a process can load them, and the error an evaluation fails with."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator

import fsspec

from forge_ray.errors import ForgeError


class EvalError(ForgeError):
    """The evaluation itself failed (a version that does not load, an endpoint that fails)."""

    exit_code = 3


def is_local(url: str) -> bool:
    fs, _ = fsspec.core.url_to_fs(url)
    return "file" in fs.protocol or "local" in fs.protocol


@contextlib.contextmanager
def local_model_dir(url: str) -> Iterator[str]:
    """A local folder holding the version at `url`: the folder itself on a local root, else a copy.

    `transformers` and vLLM load only local folders; a version on an object store is copied
    into a temporary folder that goes when the context ends.
    """
    fs, path = fsspec.core.url_to_fs(url)
    if is_local(url):
        yield fs._strip_protocol(path)
        return
    with tempfile.TemporaryDirectory(prefix="forge-eval-model-") as tmp:
        fs.get(path.rstrip("/") + "/", tmp + "/", recursive=True)
        yield tmp


def load_hf_model(path: str):
    """`AutoModelForCausalLM` in float32, eval mode; EvalError naming the cause if it cannot load."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    except Exception as e:  # noqa: BLE001 - any failure to load means the version is unusable
        raise EvalError(f"version at {path} does not load: {type(e).__name__}: {e}") from None

