"""An upload is checked after the copy: a missing or short file fails naming the file."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from forge_ray.errors import StorageError
from forge_ray.storage import local_sizes, verify_copy


def _folder(tmp_path):
    src = tmp_path / "ckpt"
    (src / "model").mkdir(parents=True)
    (src / "model" / "weights.bin").write_bytes(b"w" * 100)
    (src / "state.json").write_text("{}")
    return src


def test_a_full_copy_passes_on_a_local_fs_and_memory(tmp_path):
    src = _folder(tmp_path)
    dest = tmp_path / "dest"
    pafs.copy_files(str(src), str(dest))
    sizes = local_sizes(str(src))
    assert sizes == {"model/weights.bin": 100, "state.json": 2}
    verify_copy(sizes, str(dest))
    verify_copy(sizes, f"file://{dest}")

    import fsspec

    mem = fsspec.filesystem("memory")
    mem.pipe({"/up/model/weights.bin": b"w" * 100, "/up/state.json": b"{}"})
    verify_copy(sizes, "memory://up")


def test_a_missing_file_is_named(tmp_path):
    src = _folder(tmp_path)
    dest = tmp_path / "dest"
    pafs.copy_files(str(src), str(dest))
    (dest / "model" / "weights.bin").unlink()
    with pytest.raises(StorageError, match=r"dest/model/weights\.bin is missing"):
        verify_copy(local_sizes(str(src)), str(dest))


def test_a_short_file_is_named_with_both_sizes(tmp_path):
    src = _folder(tmp_path)
    dest = tmp_path / "dest"
    pafs.copy_files(str(src), str(dest))
    (dest / "model" / "weights.bin").write_bytes(b"w" * 40)
    with pytest.raises(StorageError, match=r"weights\.bin has 40 bytes, expected 100"):
        verify_copy(local_sizes(str(src)), str(dest))


def test_nothing_uploaded_at_all(tmp_path):
    src = _folder(tmp_path)
    with pytest.raises(StorageError, match="is missing"):
        verify_copy(local_sizes(str(src)), str(tmp_path / "never-written"))


def test_a_pyarrow_filesystem_is_checked_the_same_way(tmp_path):
    src = _folder(tmp_path)
    dest = tmp_path / "dest"
    fs = pafs.LocalFileSystem()
    pafs.copy_files(str(src), str(dest), destination_filesystem=fs)
    verify_copy(local_sizes(str(src)), str(dest), fs)
    (dest / "state.json").unlink()
    with pytest.raises(StorageError, match=r"state\.json is missing"):
        verify_copy(local_sizes(str(src)), str(dest), fs)
