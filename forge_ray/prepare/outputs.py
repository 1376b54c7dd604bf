"""The per-source side files of a version, written by the workers, with nothing raw in clear.

    quarantine/<source>.jsonl    {reason, position, sha256[, raw_encrypted]} per quarantined record
    restricted/<source>.jsonl    {id, position, sha256, pii, text, meta}      per record routed to synthesis
                                 or {id, position, sha256, pii, encrypted} with a key

A quarantined record keeps its reason, its source position and the SHA-256 of its raw form
(the record as read; undecodable bytes as U+FFFD); its first `quarantine_raw_bytes` only when
`privacy.quarantine_raw` is on, and then encrypted (Fernet) with the key named by
`privacy.key_env` / `privacy.key_file`, which never lies under the storage root.
The restricted output is encrypted the same way when a key is configured; without one it is
written in clear for the synthetic-data stage with owner-only permissions (0600 files in a 0700
folder on a local root; on an object store, the bucket's own access policy is what protects it).

Restricted means restricted: `route_restricted` sends every live record of a `restricted` source
to the restricted output, whatever the scan found, so none of them reaches the shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath

import pyarrow as pa
import pyarrow.compute as pc

from forge_ray.errors import ConfigError
from forge_ray.prepare.stages import LIVE, ROUTED, read_stage

KINDS = ("quarantine", "restricted")


def load_key(privacy, storage_root: str) -> bytes | None:
    """The Fernet key named by `prepare.privacy`, or None when none is configured."""
    if privacy.key_env:
        key = os.environ.get(privacy.key_env, "").strip().encode()
        if not key:
            raise ConfigError("prepare.privacy.key_env", [f"environment variable {privacy.key_env} is not set"])
    elif privacy.key_file:
        path = os.path.realpath(os.path.expanduser(privacy.key_file))
        root = storage_root.removeprefix("file://")
        root = os.path.realpath(root) if "://" not in root else None  # a remote root holds no local file
        if root and (path + os.sep).startswith(root.rstrip(os.sep) + os.sep):
            raise ConfigError("prepare.privacy.key_file", ["the key must not lie under the storage root"])
        try:
            with open(path, "rb") as f:
                key = f.read().strip()
        except OSError as e:
            raise ConfigError("prepare.privacy.key_file", [f"cannot read the key file: {e.strerror}"]) from None
    else:
        return None
    from cryptography.fernet import Fernet

    try:
        Fernet(key)
    except ValueError:
        raise ConfigError("prepare.privacy", ["the key is not a Fernet key (url-safe base64 of 32 bytes; "
                                              "make one with `Fernet.generate_key()`)"]) from None
    return key


def _encrypt(key: bytes, data: str) -> str:
    from cryptography.fernet import Fernet

    return Fernet(key).encrypt(data.encode("utf-8", "surrogatepass")).decode()


def decrypt(key: bytes, token: str) -> str:
    """The clear text of an encrypted field (for the synthetic stage and an operator's inspection)."""
    from cryptography.fernet import Fernet

    return Fernet(key).decrypt(token.encode()).decode("utf-8", "surrogatepass")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def hide_raw(rows: list[dict], keep_bytes: int, key: bytes | None) -> list[dict]:
    """Right after validation, in the read task: a quarantined row's raw form becomes its hash
    (column `raw_sha256`) and, if kept at all, ciphertext; every other row gets its text's hash (a
    record the scan quarantines later keeps that one)."""
    for r in rows:
        if r["outcome"] == "quarantined":
            raw, r["raw_sha256"] = r["raw"], sha256(r["raw"])
            r["raw"] = _encrypt(key, raw[:keep_bytes]) if key and keep_bytes else ""
        else:
            r["raw_sha256"] = sha256(r["text"])
    return rows


def read_hidden(unit: dict, validators: dict, keep_bytes: int, key: bytes | None) -> list[dict]:
    """The read stage (`flat_map`): a read unit's rows, raw forms hidden before they leave the task."""
    return hide_raw(read_stage(unit, validators), keep_bytes, key)


def route_restricted(batch: pa.Table, restricted: list[str]) -> pa.Table:
    """Every live record of a restricted source: dropped from the shards (reason `routed_restricted`),
    its (possibly redacted) text kept for the restricted output. Records the scan already routed
    keep their original text."""
    if not restricted or not batch.num_rows:
        return batch
    hit = pc.and_(pc.is_in(batch["source"], pa.array(restricted)), pc.is_in(batch["outcome"], pa.array(list(LIVE))))
    if not pc.any(hit).as_py():
        return batch
    hit = hit.to_pylist()
    rows = batch.to_pylist()
    for r, routed in zip(rows, hit, strict=True):
        if routed:
            r.update(raw=r["text"], text="", outcome="dropped", reason=ROUTED, buckets=[])
    return pa.Table.from_pylist(rows, schema=batch.schema)


def side_rows(scanned):
    """The rows that go to a side file, with the columns the writers need."""
    from ray.data.expressions import col

    cols = ["source", "key", "id", "position", "meta", "outcome", "reason", "raw", "raw_sha256", "pii"]
    return scanned.filter(expr=(col("outcome") == "quarantined") | (col("reason") == ROUTED)).select_columns(cols)


def write_source(group: pa.Table, fs, out: str, key: bytes | None, inline: bool) -> pa.Table:
    """`map_groups` body: both side files of one source, records in input (key) order."""
    group = group.sort_by("key")
    source = group["source"][0].as_py()
    lines: dict[str, list[str]] = {k: [] for k in KINDS}
    for r in group.to_pylist():
        if r["outcome"] == "quarantined":
            rec = {"reason": r["reason"], "position": r["position"], "sha256": r["raw_sha256"]}
            if r["raw"]:
                rec["raw_encrypted"] = r["raw"]
            lines["quarantine"].append(json.dumps(rec, sort_keys=True))
        else:
            rec = {"id": r["id"], "position": r["position"], "sha256": sha256(r["raw"]), "pii": json.loads(r["pii"] or "{}")}
            payload = {"text": r["raw"], "meta": json.loads(r["meta"])}
            if key:
                rec["encrypted"] = _encrypt(key, json.dumps(payload, sort_keys=True))
            else:
                rec.update(payload)
            lines["restricted"].append(json.dumps(rec, sort_keys=True))
    written = []
    for kind in KINDS:
        data = "".join(x + "\n" for x in lines[kind]).encode()
        rel = f"{kind}/{source}.jsonl"
        if not inline:
            write_file(fs, posixpath.join(out, rel), data, private=kind == "restricted")
        written.append({"path": rel, "records": len(lines[kind]), "data": data if inline else b""})
    return pa.Table.from_pylist(written)


def write_file(fs, path: str, data: bytes, private: bool) -> None:
    """Write `data`; a private file on a local filesystem is created 0600 in a 0700 folder."""
    local = "file" in fs.protocol or "local" in fs.protocol
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    if not (private and local):
        with fs.open(path, "wb") as f:
            f.write(data)
        return
    os.chmod(posixpath.dirname(path), 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def write_side_outputs(scanned, fs, out: str, names: list[str], key: bytes | None, parts: int,
                       any_records: bool = True) -> dict:
    """quarantine/<source>.jsonl and restricted/<source>.jsonl of every source (empty when it has
    none), written by one worker task per source that has side records. Returns {path: records}.
    `any_records` False (the counts found no quarantined or routed record): no job, empty files."""
    inline = "memory" in fs.protocol  # a filesystem only this process has: the tasks return bytes
    written = (side_rows(scanned).groupby("source", num_partitions=parts)
               .map_groups(write_source, batch_format="pyarrow",
                           fn_kwargs={"fs": fs, "out": out, "key": key, "inline": inline})
               .take_all()) if any_records else []
    done = {}
    for w in written:
        if inline:
            write_file(fs, posixpath.join(out, w["path"]), w["data"], private=False)
        done[w["path"]] = w["records"]
    for kind in KINDS:
        for s in names:
            rel = f"{kind}/{s}.jsonl"
            if rel not in done:
                write_file(fs, posixpath.join(out, rel), b"", private=kind == "restricted")
                done[rel] = 0
    return done
