"""File checksums of a version folder: computed at publish, verified before anything loads it."""

from __future__ import annotations

import posixpath

import fsspec

from forge_ray.errors import ForgeError
from forge_ray.storage import COMPLETE_MARKER, sha256_file

MANIFEST = "manifest.json"
# Files that are not part of the model and so not checksummed.
UNLISTED = {MANIFEST, COMPLETE_MARKER}


class CorruptVersionError(ForgeError):
    """A version folder does not match its manifest (missing file, bad checksum, stray state)."""

    exit_code = 3


def list_files(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    """Relative paths of every file under `folder` (posix, sorted), manifest and marker excluded."""
    folder = folder.rstrip("/")
    out = []
    for path in fs.find(folder):
        rel = posixpath.relpath(fs._strip_protocol(path), fs._strip_protocol(folder))
        if rel not in UNLISTED:
            out.append(rel)
    return sorted(out)


def compute_checksums(fs: fsspec.AbstractFileSystem, folder: str) -> dict[str, str]:
    """{relpath: sha256} of every model file under `folder`."""
    return {rel: sha256_file(fs, posixpath.join(folder, rel)) for rel in list_files(fs, folder)}


def verify_checksums(fs: fsspec.AbstractFileSystem, folder: str, files: dict[str, str]) -> None:
    """Raise CorruptVersionError naming every missing, changed or unlisted file."""
    if not files:
        raise CorruptVersionError(f"{folder}: manifest lists no files")
    problems = []
    present = set(list_files(fs, folder))
    for rel, expected in sorted(files.items()):
        if rel not in present:
            problems.append(f"missing file {rel}")
        elif sha256_file(fs, posixpath.join(folder, rel)) != expected:
            problems.append(f"checksum mismatch in {rel}")
    for rel in sorted(present - set(files)):
        problems.append(f"file not in manifest: {rel}")
    if problems:
        raise CorruptVersionError(f"{folder}: " + "; ".join(problems))
