"""The training stream: one Ray Data pipeline per Ray Train worker over its slice of the plan.

    stream = TrainStream(plan, rank=r, world_size=w, micro_batch_size=m, start_step=k)
    for step, micro_batches in stream:            # step = k .. S-1
        for batch in micro_batches:               # G // (w*m) micro batches of m sequences
            batch["input_ids"], batch["position_ids"], batch["labels"]   # int64 [m, seq_len]
            batch["source"], batch["sample"], batch["row"]               # int64 [m]

Rank r reads slots [r*G/w, (r+1)*G/w) of every global batch, so any world size reads the
same global order and a restart at step k (the cursor a checkpoint keeps) at any world size
skips and repeats nothing. Steps become a `ray.data.range` whose map tasks read the shards
(`reader.py`); `iter_batches` hands over whole read-task blocks and prefetches ahead of the
trainer, the executor keeps the order (`preserve_order`), and the stream checks it step by
step and cuts each step into micro batches (zero-copy torch views).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator

import numpy as np

from forge_ray.mixture.plan import MixturePlan
from forge_ray.mixture.reader import read_samples
from forge_ray.mixture.shares import MixtureError

KEYS = ("input_ids", "position_ids", "labels", "source", "sample", "row")
_END = object()


def rank_slots(plan: MixturePlan, rank: int, world_size: int, step: int) -> dict[str, np.ndarray]:
    """This rank's slice of global batch `step`: source, row and global sample index ([G/w] each)."""
    local = plan.global_batch_size // world_size
    labels, rows = plan.batch(step)
    lo = rank * local
    first = step * plan.global_batch_size + lo
    return {
        "source": labels[lo : lo + local],
        "row": rows[lo : lo + local],
        "sample": np.arange(first, first + local, dtype=np.int64),
    }


class _ReadSteps:
    """The Ray Data map function: a block of step numbers -> the rank's sequences of those steps."""

    def __init__(self, plan: MixturePlan, rank: int, world_size: int, first_step: int):
        self.plan, self.rank, self.world_size, self.first_step = plan, rank, world_size, first_step

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        steps = block["id"].astype(np.int64) + self.first_step
        parts = [rank_slots(self.plan, self.rank, self.world_size, int(k)) for k in steps]
        out = {key: np.concatenate([p[key] for p in parts]) for key in ("source", "row", "sample")}
        out.update(read_samples(self.plan, out["source"], out["row"]))
        local = self.plan.global_batch_size // self.world_size
        out["step"] = np.repeat(steps, local)
        return out


class TrainStream:
    """Iterate (step, [micro batch, ...]) for one rank from `start_step` to the plan's end."""

    def __init__(
        self,
        plan: MixturePlan,
        rank: int,
        world_size: int,
        micro_batch_size: int,
        start_step: int = 0,
        *,
        prefetch_batches: int = 4,
        steps_per_task: int | None = None,
        read_num_cpus: float = 0.25,
        read_concurrency: int = 2,
    ):
        G = plan.global_batch_size
        if world_size < 1 or not 0 <= rank < world_size:
            raise MixtureError(f"rank {rank} is not in a world of {world_size} workers")
        if micro_batch_size < 1 or G % (world_size * micro_batch_size):
            raise MixtureError(
                f"global batch {G} is not a multiple of world_size {world_size} x micro batch "
                f"{micro_batch_size}; pick a micro batch that divides {G} // {world_size}"
                if G % world_size == 0
                else f"global batch {G} does not split over {world_size} workers"
            )
        if not 0 <= start_step <= plan.total_steps:
            raise MixtureError(f"start_step {start_step} outside the plan's 0..{plan.total_steps}")
        self.plan, self.rank, self.world_size = plan, rank, world_size
        self.micro_batch_size, self.start_step = micro_batch_size, start_step
        self.accumulation = G // (world_size * micro_batch_size)
        self.prefetch_batches = prefetch_batches
        # a read task of at least ~64 sequences (and 2 steps): fewer, larger blocks on long runs
        local = G // world_size
        self.steps_per_task = max(1, steps_per_task or max(2, math.ceil(64 / local)))
        self.read_num_cpus = read_num_cpus
        # reading is milliseconds per step: two tasks in flight keep ahead of any trainer, and
        # spawn no more worker processes than that to compete with it for cores
        self.read_concurrency = read_concurrency
        self._ready: queue.Queue | None = None

    def __len__(self) -> int:
        return self.plan.total_steps - self.start_step

    def dataset(self):
        """The Ray Data dataset of this rank's rows, one row per sequence, in step order."""
        import ray.data

        steps = len(self)
        blocks = max(1, math.ceil(steps / self.steps_per_task))
        ds = ray.data.range(steps, override_num_blocks=blocks)
        ds = ds.map_batches(
            _ReadSteps(self.plan, self.rank, self.world_size, self.start_step),
            batch_size=None,
            batch_format="numpy",
            num_cpus=self.read_num_cpus,
            concurrency=min(self.read_concurrency, blocks),
            zero_copy_batch=True,
        )
        ds.context.execution_options.preserve_order = True
        ds.context.enable_progress_bars = False
        return ds

    def start(self) -> TrainStream:
        """Launch the pipeline now, in a background thread, so that its start-up (the first Ray
        Data execution in a process takes seconds) overlaps the caller's own setup (model,
        engine, checkpoint). Iterating afterwards reads what it has prefetched."""
        if self._ready is None and len(self):
            self._ready = queue.Queue(maxsize=max(1, self.prefetch_batches))
            threading.Thread(target=self._produce, name=f"train-stream-{self.rank}", daemon=True).start()
        return self

    def _produce(self) -> None:
        try:
            for item in self._steps():
                self._ready.put(item)
            self._ready.put(_END)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consuming thread
            self._ready.put(e)

    def __iter__(self) -> Iterator[tuple[int, list[dict]]]:
        if self._ready is None:
            yield from self._steps()
            return
        while (item := self._ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _steps(self) -> Iterator[tuple[int, list[dict]]]:
        if len(self) == 0:
            return
        local = self.plan.global_batch_size // self.world_size
        blocks = self.dataset().iter_batches(
            batch_size=None, batch_format="numpy", prefetch_batches=self.prefetch_batches
        )
        step, buffer = self.start_step, None
        for block in blocks:  # whole read-task outputs: whole steps, unless Ray Data split a block
            buffer = block if buffer is None else {k: np.concatenate([buffer[k], block[k]]) for k in block}
            while len(buffer["step"]) >= local:
                rows = {k: v[:local] for k, v in buffer.items()}
                buffer = {k: v[local:] for k, v in buffer.items()}
                if not (rows["step"] == step).all():
                    raise MixtureError(
                        f"rank {self.rank}: expected rows of step {step}, got steps {np.unique(rows['step']).tolist()}"
                    )
                yield step, self._micro_batches(rows)
                step += 1
        if step != self.plan.total_steps or (buffer is not None and len(buffer["step"])):
            raise MixtureError(f"rank {self.rank}: the stream ended at step {step}, plan has {self.plan.total_steps}")

    def _micro_batches(self, rows: dict[str, np.ndarray]) -> list[dict]:
        import torch

        m = self.micro_batch_size
        # blocks fetched from the object store are read-only: copy those (torch wants writable memory)
        tensors = {k: torch.from_numpy(np.require(rows[k], np.int64, ["C", "W"])) for k in KEYS}
        return [{k: t[i : i + m] for k, t in tensors.items()} for i in range(0, len(rows["step"]), m)]
