"""Ingest: input files -> read units (planned on the driver) -> records with a validation outcome.

The driver lists each source's files, hashes them (the hashes name the dataset version) and
cuts them into read units: byte ranges of uncompressed jsonl at line boundaries, one unit per
compressed file, parquet row group or text file. Ray Data runs one task per unit
(`read_unit`), so reading scales with the cluster and no task holds more than one unit.

Every input record leaves `read_unit` as exactly one row: `outcome` "ok", or "quarantined"
with a `reason` and its source position (file and line / row), never silently skipped.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import posixpath
from dataclasses import asdict, dataclass

import fsspec

from forge_ray.errors import ForgeError

COMPRESSED = (".gz", ".zst", ".zstd")
SUFFIXES = {"jsonl": (".jsonl", ".json", ".ndjson"), "parquet": (".parquet",), "text": (".txt", ".md", ".text")}
# Keys are (source index, file index, position): sortable, unique, and stable across runs.
_FILE_BITS, _POS_BITS = 20, 35


class InputError(ForgeError):
    """A source names no readable input file."""


def record_key(source_idx: int, file_idx: int, pos: int) -> int:
    return (source_idx << (_FILE_BITS + _POS_BITS)) | (file_idx << _POS_BITS) | pos


@dataclass
class ReadUnit:
    source: str
    source_idx: int
    format: str
    uri: str            # full URI of the file
    file: str           # the file's path relative to the source URI (for positions and ids)
    file_idx: int
    start: int = 0      # byte offset (jsonl / text) or row group (parquet)
    end: int = -1       # byte offset, -1: to the end (parquet: number of rows)
    skip: int = 0       # parquet: rows of the row group before this unit's first
    first_pos: int = 0  # line number (1-based) or row number of the unit's first record
    inline: bytes | None = None  # the unit's bytes, for filesystems local to the driver (memory://)


def list_files(uri: str, fmt: str) -> tuple[fsspec.AbstractFileSystem, list[str], str]:
    """(fs, sorted file paths, base path) of a file, a folder (recursive) or a glob."""
    fs, path = fsspec.core.url_to_fs(uri)
    if fs.isfile(path):
        return fs, [path], posixpath.dirname(path)
    if fs.isdir(path):
        files, base = [p for p in fs.find(path) if fs.isfile(p)], path
    else:
        files, base = [p for p in fs.glob(path) if fs.isfile(p)], path.split("*", 1)[0].rsplit("/", 1)[0]
    wanted = tuple(s + c for s in SUFFIXES[fmt] for c in ("", *COMPRESSED))
    files = sorted(p for p in files if p.lower().endswith(wanted) and not posixpath.basename(p).startswith("."))
    return fs, files, base


def plan_source(source, source_idx: int, uri: str, chunk_bytes: int) -> tuple[list[ReadUnit], list[dict]]:
    """Read units and input-file records ({uri, sha256, bytes}) of one source."""
    fs, files, base = list_files(uri, source.format)
    if not files:
        raise InputError(f"source {source.name!r}: no {source.format} files at {uri}")
    inline = "memory" in fs.protocol  # a memory:// filesystem exists only in this process
    units, inputs = [], []
    for file_idx, path in enumerate(files):
        rel = posixpath.relpath(path, base) if base else path
        full = fs.unstrip_protocol(path)
        unit = dict(source=source.name, source_idx=source_idx, format=source.format, uri=full, file=rel,
                    file_idx=file_idx)
        sha, size, cuts = _scan(fs, path, chunk_bytes if _splittable(source.format, path) else None)
        inputs.append({"uri": full, "sha256": sha, "bytes": size})
        if source.format == "parquet":
            import pyarrow.parquet as pq

            with fs.open(path, "rb") as f:
                meta = pq.ParquetFile(f).metadata
            first = 0
            for g in range(meta.num_row_groups):
                rg = meta.row_group(g)
                # A large row group becomes several units of ~chunk_bytes (row slices of it).
                k = max(1, min(rg.num_rows, -(-rg.total_byte_size // chunk_bytes)))
                step = -(-rg.num_rows // k) if rg.num_rows else 1
                for skip in range(0, max(rg.num_rows, 1), step):
                    units.append(ReadUnit(**unit, start=g, end=min(step, rg.num_rows - skip), first_pos=first + skip,
                                          skip=skip))
                first += rg.num_rows
        else:
            for (start, line), end in zip(cuts, [c[0] for c in cuts[1:]] + [-1], strict=True):
                units.append(ReadUnit(**unit, start=start, end=end, first_pos=line))
        if inline:
            with fs.open(path, "rb") as f:
                data = f.read()
            for u in units:
                if u.uri == full:
                    u.inline = data
    return units, inputs


def _splittable(fmt: str, path: str) -> bool:
    return fmt == "jsonl" and not path.lower().endswith(COMPRESSED)


def _scan(fs, path: str, chunk_bytes: int | None) -> tuple[str, int, list[tuple[int, int]]]:
    """Hash a file in one streaming pass; when `chunk_bytes` is set, also find line-boundary cuts.

    Returns (sha256, size, [(byte offset, line number of the first line there), ...]).
    """
    h, size, cuts, lines, next_cut = hashlib.sha256(), 0, [(0, 1)], 0, chunk_bytes
    with fs.open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            if chunk_bytes:
                pos = 0  # newlines before `pos` in this block are counted in `lines`
                while size + len(block) > next_cut:
                    nl = block.find(b"\n", max(pos, next_cut - size))
                    if nl < 0:
                        break
                    lines += block.count(b"\n", pos, nl + 1)
                    pos = nl + 1
                    cuts.append((size + pos, lines + 1))
                    next_cut = size + pos + chunk_bytes
                lines += block.count(b"\n", pos)
            size += len(block)
    if len(cuts) > 1 and cuts[-1][0] >= size:
        cuts.pop()
    return h.hexdigest(), size, cuts


def _unit_bytes(unit: dict) -> bytes:
    """The (decompressed) bytes of a unit: its byte range of a jsonl file, or the whole file."""
    ranged = _splittable(unit["format"], unit["uri"])
    start, end = unit["start"], (unit["end"] if unit["end"] >= 0 else None)
    if unit["inline"] is not None:
        data = unit["inline"]
        return data[start:end] if ranged else _decompress(unit["uri"], data)
    with fsspec.open(unit["uri"], "rb") as f:
        if ranged:
            f.seek(start)
            return f.read(end - start) if end is not None else f.read()
        data = f.read()
    return _decompress(unit["uri"], data)


def _decompress(uri: str, data: bytes) -> bytes:
    low = uri.lower()
    if low.endswith(".gz"):
        return gzip.decompress(data)
    if low.endswith((".zst", ".zstd")):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


def read_unit(unit: dict, validate) -> list[dict]:
    """All records of one read unit, each turned into one row by `validate` (a `Validator`)."""
    data = _unit_bytes(unit)
    rows = []
    if unit["format"] == "jsonl":
        for i, line in enumerate(data.split(b"\n")):
            if line.strip():
                rows.append(validate.jsonl_line(unit, unit["first_pos"] + i, line))
    elif unit["format"] == "text":
        rows.append(validate.text_file(unit, data))
    else:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(io.BytesIO(data))
        table = pf.read_row_group(unit["start"]).slice(unit["skip"], unit["end"])
        for i, rec in enumerate(table.to_pylist()):
            rows.append(validate.record(unit, unit["first_pos"] + i, rec))
    return rows


def unit_dict(unit: ReadUnit) -> dict:
    return asdict(unit)

