"""A synthetic prepared dataset in the contract format, for tests and benchmarks of the mixture.

    ds = write_synthetic_dataset(Storage(root), "mix", {"docs": 120, "code": 40}, seq_len=32)

Every sequence says what it is: token 0 is its row (mod PAD), token 1 its source's index, so a reader
can check that it got the sequence it asked for. Documents of 5..seq_len tokens follow, each
closed by EOS, with position ids restarting at every document start. The last row of each
source ends in padding, as a prepared dataset's may.
"""

from __future__ import annotations

import numpy as np

from forge_ray.prepare.dataset import (
    LATEST,
    MANIFEST,
    dataset_dir,
    open_dataset,
    shard_relpath,
    shard_table,
    version_dir,
    write_latest,
    write_shard,
)
from forge_ray.storage import Storage

VOCAB = 512
EOS, PAD = 1, VOCAB - 1  # real tokens are < PAD, so padding is unambiguous


def _sequences(n: int, seq_len: int, src: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.integers(2, PAD, size=(n, seq_len), dtype=np.int32)
    pos = np.zeros((n, seq_len), dtype=np.int32)
    for r in range(n):
        t = 0
        while t < seq_len:
            length = int(rng.integers(5, seq_len + 1))
            pos[r, t : t + length] = np.arange(min(length, seq_len - t))
            if t + length - 1 < seq_len:
                ids[r, t + length - 1] = EOS
            t += length
    ids[:, 0], ids[:, 1] = np.arange(n) % PAD, src
    if n:
        ids[-1, seq_len // 2 :] = PAD  # the source's last sequence is padded
        pos[-1, seq_len // 2 :] = 0
    return ids, pos


def write_synthetic_dataset(
    storage: Storage,
    name: str,
    sizes: dict[str, int],
    seq_len: int = 32,
    rows_per_shard: int = 64,
    seed: int = 0,
) -> object:
    """Write `<root>/datasets/<name>/<version>/` with `sizes[source]` train sequences each; open it."""
    rng = np.random.default_rng(seed)
    version = f"syn{seed:04d}" + "".join(f"{s[:2]}{n}" for s, n in sizes.items())[:24]
    manifest = {
        "dataset": name,
        "version": version,
        "seq_len": seq_len,
        "source_order": list(sizes),
        "code_version": "synthetic",
        "config_hash": "synthetic",
        "tokenizer": {"path": "tokenizer", "sha256": "0" * 64, "vocab_size": VOCAB,
                      "eos_token_id": EOS, "pad_token_id": PAD, "bos_token_id": None},
        "sources": {},
    }
    with storage.atomic_dir(version_dir(name, version)) as tmp:
        for src, (source, n) in enumerate(sizes.items()):
            splits = {}
            for split, count in (("train", n), ("eval", min(n, 4))):
                ids, pos = _sequences(count, seq_len, src, rng)
                shards = []
                for i, lo in enumerate(range(0, count, rows_per_shard)):
                    rel = shard_relpath(source, split, i)
                    table = shard_table(ids[lo : lo + rows_per_shard], pos[lo : lo + rows_per_shard], lo)
                    shards.append({"path": rel, **write_shard(storage.fs, f"{tmp}/{rel}", table)})
                splits[split] = {"documents": count, "sequences": count, "tokens": count * seq_len,
                                 "padding_tokens": seq_len - seq_len // 2 if count else 0, "shards": shards}
            manifest["sources"][source] = {"inputs": [], "counts": {"input": n, "kept": n}, "splits": splits}
        storage.write_json(f"{tmp[len(storage.root) + 1:]}/{MANIFEST}", manifest)
    write_latest(storage, name, version)
    assert storage.exists(dataset_dir(name), LATEST)
    return open_dataset(storage, name, version)
