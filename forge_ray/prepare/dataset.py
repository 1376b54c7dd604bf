"""The prepared dataset on storage: layout, shard format, the LATEST pointer, and the reader.

    from forge_ray.prepare.dataset import open_dataset
    ds = open_dataset(Storage(root), "demo")            # or version="3f9c0a1b2d4e"
    ds.sources                                           # ["docs", "code", "tickets"]
    ds.shard_paths("docs", "train")                      # full fsspec URIs, in row order
    ds.num_sequences("docs", "eval"), ds.seq_len, ds.tokenizer_path
    table = ds.read_split("docs", "train")              # pyarrow Table: input_ids, position_ids, row

Layout (docs/contracts.md is the contract; this module is its one implementation):

    <root>/datasets/<dataset>/LATEST                     newest complete version id
    <root>/datasets/<dataset>/<version>/manifest.json
    <root>/datasets/<dataset>/<version>/tokenizer/
    <root>/datasets/<dataset>/<version>/shards/<source>/<split>-<nnnnn>.parquet
    <root>/datasets/<dataset>/<version>/quarantine/<source>.jsonl
    <root>/datasets/<dataset>/<version>/restricted/<source>.jsonl
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from forge_ray.errors import StorageError
from forge_ray.storage import Storage

DATASETS_DIR = "datasets"
MANIFEST = "manifest.json"
LATEST = "LATEST"
TOKENIZER_DIR = "tokenizer"
SPLITS = ("train", "eval")

# One row = one packed sequence of exactly seq_len tokens.
SHARD_SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("position_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
    ]
)
# Instruction-tuning shards (docs/sft.md): the same plus `loss_mask`, 1 on the assistant's tokens
# (the manifest says `"loss_mask": true`).
SFT_SHARD_SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("position_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("loss_mask", pa.list_(pa.int8()), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
    ]
)
# Fixed writer settings: the same rows always give the same bytes (deterministic shards).
_PARQUET_OPTIONS = dict(compression="zstd", compression_level=3, use_dictionary=False, write_statistics=False)


class DatasetError(StorageError):
    """A prepared dataset (or version) is missing, incomplete or does not match its manifest."""


def dataset_dir(dataset: str) -> str:
    return f"{DATASETS_DIR}/{dataset}"


def version_dir(dataset: str, version: str) -> str:
    return f"{DATASETS_DIR}/{dataset}/{version}"


def shard_relpath(source: str, split: str, index: int) -> str:
    """A shard's path relative to the version folder."""
    return f"shards/{source}/{split}-{index:05d}.parquet"


def shard_table(input_ids: Any, position_ids: Any, first_row: int) -> pa.Table:
    """A shard table from [n, seq_len] arrays (numpy or lists) of token and position ids."""
    import numpy as np

    ids = np.asarray(input_ids, dtype=np.int32)
    pos = np.asarray(position_ids, dtype=np.int32)
    if ids.ndim != 2 or ids.shape != pos.shape:
        raise ValueError(f"input_ids {ids.shape} and position_ids {pos.shape} must be equal [n, seq_len]")
    n, seq_len = ids.shape
    offsets = pa.array(np.arange(0, (n + 1) * seq_len, seq_len, dtype=np.int32))
    return pa.Table.from_arrays(
        [
            pa.ListArray.from_arrays(offsets, pa.array(ids.reshape(-1))),
            pa.ListArray.from_arrays(offsets, pa.array(pos.reshape(-1))),
            pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
        ],
        schema=SHARD_SCHEMA,
    )


def shard_bytes(table: pa.Table) -> bytes:
    """The parquet bytes of a shard, written with fixed settings (byte-identical across runs)."""
    buf = io.BytesIO()
    pq.write_table(table.cast(SHARD_SCHEMA), buf, **_PARQUET_OPTIONS)
    return buf.getvalue()


def write_shard(fs, path: str, table: pa.Table) -> dict:
    """Write one shard to `path` on filesystem `fs`; return {"rows", "sha256", "bytes"}."""
    data = shard_bytes(table)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)
    return {"rows": table.num_rows, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def read_latest(storage: Storage, dataset: str) -> str | None:
    """The newest complete version of `dataset`, or None if it has none."""
    path = storage.path(dataset_dir(dataset), LATEST)
    if not storage.fs.exists(path):
        return None
    with storage.fs.open(path, "rb") as f:
        version = f.read().decode().strip()
    return version or None


def write_latest(storage: Storage, dataset: str, version: str) -> None:
    """Point LATEST at a complete version (replaced atomically: write, then rename)."""
    if not storage.is_complete(version_dir(dataset, version)):
        raise DatasetError(f"refusing to point LATEST at incomplete version {dataset}/{version}")
    storage.write_bytes(f"{dataset_dir(dataset)}/{LATEST}", (version + "\n").encode())


def list_versions(storage: Storage, dataset: str) -> list[str]:
    """Complete versions of `dataset` (any order)."""
    root = storage.path(dataset_dir(dataset))
    if not storage.fs.exists(root):
        return []
    out = []
    for entry in storage.fs.ls(root, detail=False):
        name = posixpath.basename(entry.rstrip("/"))
        if ".tmp-" not in name and name != LATEST and storage.is_complete(version_dir(dataset, name)):
            out.append(name)
    return out


@dataclass
class PreparedDataset:
    """A complete version of a prepared dataset; picklable (ship it to Ray workers)."""

    storage: Storage
    dataset: str
    version: str
    manifest: dict = field(repr=False)

    @property
    def path(self) -> str:
        """The version folder as a full URI."""
        return self.storage.url(version_dir(self.dataset, self.version))

    @property
    def sources(self) -> list[str]:
        """Source names in the forge file's order."""
        return list(self.manifest.get("source_order") or sorted(self.manifest["sources"]))

    @property
    def seq_len(self) -> int:
        return int(self.manifest["seq_len"])

    @property
    def tokenizer_info(self) -> dict:
        return self.manifest["tokenizer"]

    @property
    def eos_token_id(self) -> int:
        return int(self.manifest["tokenizer"]["eos_token_id"])

    @property
    def pad_token_id(self) -> int:
        return int(self.manifest["tokenizer"]["pad_token_id"])

    def _split(self, source: str, split: str) -> dict:
        if source not in self.manifest["sources"]:
            raise KeyError(f"dataset {self.dataset}/{self.version} has no source {source!r}; has {self.sources}")
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; splits are {list(SPLITS)}")
        return self.manifest["sources"][source]["splits"][split]

    def shards(self, source: str, split: str) -> list[dict]:
        """Manifest entries {path (relative), rows, sha256} of (source, split), in row order."""
        return list(self._split(source, split)["shards"])

    def shard_paths(self, source: str, split: str) -> list[str]:
        """Full fsspec URIs of the shards of (source, split), in row order."""
        base = version_dir(self.dataset, self.version)
        return [self.storage.url(base, s["path"]) for s in self.shards(source, split)]

    def num_sequences(self, source: str, split: str) -> int:
        return int(self._split(source, split)["sequences"])

    def num_tokens(self, source: str, split: str) -> int:
        return int(self._split(source, split)["tokens"])

    def read_shard(self, uri: str) -> pa.Table:
        """One shard (a URI from `shard_paths`) as a pyarrow Table."""
        with self.storage.fs.open(self.storage.fs._strip_protocol(uri), "rb") as f:
            return pq.read_table(f, schema=SFT_SHARD_SCHEMA if self.has_loss_mask else SHARD_SCHEMA)

    @property
    def has_loss_mask(self) -> bool:
        """Whether the shards carry a `loss_mask` column (instruction tuning, docs/sft.md)."""
        return bool(self.manifest.get("loss_mask"))

    def read_split(self, source: str, split: str) -> pa.Table:
        """Every sequence of (source, split), rows 0..n-1 in order (small datasets, tests)."""
        tables = [self.read_shard(p) for p in self.shard_paths(source, split)]
        return pa.concat_tables(tables) if tables else SHARD_SCHEMA.empty_table()

    @property
    def tokenizer_path(self) -> str:
        """A local folder that `AutoTokenizer.from_pretrained` loads.

        On a local storage root it is the version's own folder; on a remote one the
        files are copied once into a local cache keyed by the tokenizer's hash.
        """
        rel = posixpath.join(version_dir(self.dataset, self.version), self.manifest["tokenizer"]["path"])
        if "file" in self.storage.fs.protocol or "local" in self.storage.fs.protocol:
            return self.storage.path(rel)
        from forge_ray.registry.cache import cache_folder, default_cache_root

        # The node-local cache (FORGE_CACHE_DIR): copied to a temporary folder, sizes checked, renamed.
        dest = os.path.join(default_cache_root(), "tokenizers", self.manifest["tokenizer"]["sha256"][:16])
        return cache_folder(self.storage.fs, self.storage.path(rel), dest)

    def load_tokenizer(self):
        """The dataset's tokenizer as a `transformers` fast tokenizer."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.tokenizer_path)

    def verify(self) -> None:
        """Check every shard against the sha256 in the manifest; raise DatasetError if one differs."""
        from forge_ray.storage import sha256_file

        base = version_dir(self.dataset, self.version)
        for source in self.sources:
            for split in SPLITS:
                for s in self.shards(source, split):
                    got = sha256_file(self.storage.fs, self.storage.path(base, s["path"]))
                    if got != s["sha256"]:
                        raise DatasetError(f"{self.path}/{s['path']}: sha256 {got} != manifest {s['sha256']}")


def open_dataset(storage: Storage | str, dataset: str, version: str = "latest") -> PreparedDataset:
    """Open a complete version of a prepared dataset ("latest": the one LATEST names)."""
    if isinstance(storage, str):
        storage = Storage(storage)
    if version == "latest":
        found = read_latest(storage, dataset)
        if found is None:
            raise DatasetError(
                f"no prepared dataset {dataset!r} under {storage.url(DATASETS_DIR)} (run `forge prepare`)"
            )
        version = found
    rel = version_dir(dataset, version)
    if not storage.is_complete(rel):
        what = "incomplete (being written, or a crashed run)" if storage.exists(rel) else "missing"
        raise DatasetError(f"dataset version {storage.url(rel)} is {what}")
    manifest = storage.read_json(f"{rel}/{MANIFEST}")
    return PreparedDataset(storage=storage, dataset=dataset, version=version, manifest=manifest)
