"""Pack: tokenized documents -> fixed-length sequences -> parquet shards of one (source, split).

Documents are concatenated in order, each followed by EOS, and cut every `seq_len` tokens.
`position_ids` restart at 0 at every document start (and at every sequence start, for a
document that continues from the previous sequence), so training can reset positions and
block attention across documents. Only the last sequence of a split is padded (pad token,
position 0), so every row has exactly `seq_len` tokens.

Memory: at most one shard of sequences plus one sequence of carry is held at a time.
"""

from __future__ import annotations

import posixpath

import numpy as np

from forge_ray.prepare.dataset import shard_relpath, shard_table, write_shard


class Packer:
    """Packs the documents of one (source, split) and writes its shards under `version_path`."""

    def __init__(self, fs, version_path: str, source: str, split: str, *, seq_len: int, eos_id: int,
                 pad_id: int, shard_sequences: int):
        self.fs, self.base = fs, version_path
        self.source, self.split = source, split
        self.seq_len, self.eos, self.pad = seq_len, eos_id, pad_id
        self.shard_sequences = shard_sequences
        self._ids: list[np.ndarray] = []  # pending token pieces (< one shard's worth)
        self._pos: list[np.ndarray] = []
        self._pending = 0
        self.shards: list[dict] = []
        self.rows = 0
        self.documents = 0
        self.tokens = 0          # real tokens (documents + EOS), padding excluded
        self.padding_tokens = 0

    def add(self, token_ids) -> None:
        """Append one document (its token ids, EOS is added here)."""
        ids = np.append(np.asarray(token_ids, dtype=np.int32), np.int32(self.eos))
        # Offsets from the start of the current sequence: positions count from the document start,
        # and restart at each sequence boundary for a document that runs over it.
        offsets = np.arange(len(ids), dtype=np.int64) + self._pending % self.seq_len
        pos = np.where(offsets < self.seq_len, offsets - offsets[0], offsets % self.seq_len).astype(np.int32)
        self._ids.append(ids)
        self._pos.append(pos)
        self._pending += len(ids)
        self.documents += 1
        self.tokens += len(ids)
        if self._pending >= self.seq_len * self.shard_sequences:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        ids = np.concatenate(self._ids) if self._ids else np.zeros(0, np.int32)
        pos = np.concatenate(self._pos) if self._pos else np.zeros(0, np.int32)
        n_full = len(ids) // self.seq_len
        if final and len(ids) % self.seq_len:
            pad = self.seq_len - len(ids) % self.seq_len
            ids = np.concatenate([ids, np.full(pad, self.pad, np.int32)])
            pos = np.concatenate([pos, np.zeros(pad, np.int32)])
            self.padding_tokens += pad
            n_full += 1
        while n_full > 0:
            n = min(n_full, self.shard_sequences)
            cut = n * self.seq_len
            self._write(ids[:cut].reshape(n, self.seq_len), pos[:cut].reshape(n, self.seq_len))
            ids, pos, n_full = ids[cut:], pos[cut:], n_full - n
        self._ids, self._pos, self._pending = ([ids], [pos], len(ids)) if len(ids) else ([], [], 0)

    def _write(self, ids: np.ndarray, pos: np.ndarray) -> None:
        rel = shard_relpath(self.source, self.split, len(self.shards))
        info = write_shard(self.fs, posixpath.join(self.base, rel), shard_table(ids, pos, self.rows))
        self.shards.append({"path": rel, "rows": info["rows"], "sha256": info["sha256"]})
        self.rows += info["rows"]

    def finish(self) -> dict:
        """Write what is left (the last sequence padded); return the manifest's split entry."""
        self._flush(final=True)
        return {"documents": self.documents, "sequences": self.rows, "tokens": self.tokens,
                "padding_tokens": self.padding_tokens, "shards": self.shards}
