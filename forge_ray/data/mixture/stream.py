"""The training stream: one Ray Data pipeline per Ray Train worker over its slice of the plan.

    stream = TrainStream(plan, rank=r, world_size=w, micro_batch_size=m, start_step=k)
    for step, micro_batches in stream:            # step = k .. S-1
        for batch in micro_batches:               # G // (w*m) micro batches of m sequences
            batch["input_ids"], batch["position_ids"], batch["labels"]   # int64 [m, seq_len]
            batch["source"], batch["sample"], batch["row"]               # int64 [m]

Rank r reads slots [r*G/w, (r+1)*G/w) of every global batch, so any world size reads the
same global order and a restart at step k (the cursor a checkpoint keeps) at any world size
skips and repeats nothing. Steps become a `ray.data.range` whose map tasks read the shards
(`reader.py`); `iter_torch_batches` prefetches ahead of the trainer, and the executor keeps
the order (`preserve_order`), which the stream checks step by step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from forge_ray.data.mixture.plan import MixturePlan
from forge_ray.data.mixture.reader import read_samples
from forge_ray.data.mixture.shares import MixtureError

KEYS = ("input_ids", "position_ids", "labels", "source", "sample", "row")


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

    def __len__(self) -> int:
        return self.plan.total_steps - self.start_step

    def dataset(self):
        """The Ray Data dataset of this rank's rows, one row per sequence, in step order."""
        import ray.data

        steps = len(self)
        ds = ray.data.range(steps, override_num_blocks=max(1, math.ceil(steps / self.steps_per_task)))
        ds = ds.map_batches(
            _ReadSteps(self.plan, self.rank, self.world_size, self.start_step),
            batch_size=None,
            batch_format="numpy",
            num_cpus=self.read_num_cpus,
            zero_copy_batch=True,
        )
        ds.context.execution_options.preserve_order = True
        ds.context.enable_progress_bars = False
        return ds

    def __iter__(self) -> Iterator[tuple[int, list[dict]]]:
        if len(self) == 0:
            return
        import torch

        batches = self.dataset().iter_torch_batches(
            batch_size=self.micro_batch_size,
            prefetch_batches=self.prefetch_batches,
            dtypes=torch.int64,
            drop_last=False,
        )
        step, pending = self.start_step, []
        for batch in batches:
            got = batch.pop("step")
            if not bool((got == step).all()):
                raise MixtureError(f"rank {self.rank}: expected rows of step {step}, got steps {got.unique().tolist()}")
            pending.append({key: batch[key] for key in KEYS})
            if len(pending) == self.accumulation:
                yield step, pending
                step, pending = step + 1, []
        if step != self.plan.total_steps or pending:
            raise MixtureError(f"rank {self.rank}: the stream ended at step {step}, plan has {self.plan.total_steps}")
