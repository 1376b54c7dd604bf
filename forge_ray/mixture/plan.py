"""The mixture plan: a resolved mixture and its global sample order, built once on the driver.

    plan = build_plan(dataset, cfg.mixture, global_batch_size=G, total_steps=S)
    print(plan.summary())          # target / expected shares, samples, epochs, binding caps
    plan.to_json()                 # the same, for the run's manifest
    plan.sample_key(i)             # (source, row) of the i-th sample of the run

Global batch k is samples [k*G, (k+1)*G): the order depends on (seed, dataset versions,
mixture, G, S) only, never on the number of workers that read it. The plan holds only
what it needs from the manifests (sequence counts, shard URIs and their row counts) and is
small and picklable: ship it to every Ray Train worker.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from forge_ray.config.mixture import MixtureConfig
from forge_ray.mixture.datasets import mixed_datasets
from forge_ray.mixture.order import batch_quotas, batch_sources, epoch_permutation, ordinals, stable_int
from forge_ray.mixture.shares import MixtureError, SourceShare, resolve_shares

if TYPE_CHECKING:
    from forge_ray.prepare.dataset import PreparedDataset

SPLIT = "train"
_CACHE_BATCHES = 8
_CACHE_EPOCHS = 16


@dataclass(frozen=True)
class PlanSource:
    """One source as the plan reads it."""

    share: SourceShare
    dataset: PreparedDataset = field(repr=False)  # the dataset it lives in (picklable)
    shard_uris: tuple[str, ...]
    shard_rows: tuple[int, ...]
    offset: int = 0  # draws from this source's row stream taken by the runs this one continues

    @property
    def name(self) -> str:
        return self.share.name


@dataclass
class MixturePlan:
    """A resolved mixture and its global order (see the module docstring)."""

    config: MixtureConfig
    global_batch_size: int
    total_steps: int
    seq_len: int
    pad_token_id: int
    source_plans: list[PlanSource]
    cum: np.ndarray = field(repr=False)  # int64 [total_steps + 1, sources]: samples drawn before batch k
    _batches: dict = field(default_factory=dict, repr=False, compare=False)
    _perms: dict = field(default_factory=dict, repr=False, compare=False)

    # -- what the run reads -------------------------------------------------------------
    @property
    def sources(self) -> list[str]:
        return [s.name for s in self.source_plans]

    @property
    def total_samples(self) -> int:
        return self.global_batch_size * self.total_steps

    @property
    def plan_id(self) -> str:
        """A short hash naming this exact order: a resumed run can check it reads the same plan."""
        parts = [self.config.model_dump_json(), self.global_batch_size, self.total_steps]
        parts += [f"{s.dataset.dataset}/{s.dataset.version}/{s.name}+{s.offset}" for s in self.source_plans]
        return f"{stable_int(*parts):016x}"[:12]

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(source index, row) of every slot of global batch `step`: two int64 arrays [G]."""
        if not 0 <= step < self.total_steps:
            raise IndexError(f"step {step} outside the plan's 0..{self.total_steps - 1}")
        hit = self._batches.get(step)
        if hit is not None:
            return hit
        quota = self.cum[step + 1] - self.cum[step]
        labels = batch_sources(quota, self.config.seed, step)
        draws = self.cum[step][labels] + ordinals(labels, len(self.source_plans))
        rows = np.empty(len(labels), dtype=np.int64)
        for src in np.unique(labels):
            where = labels == src
            rows[where] = self._rows(int(src), draws[where])
        if len(self._batches) >= _CACHE_BATCHES:
            self._batches.pop(next(iter(self._batches)))
        self._batches[step] = (labels, rows)
        return labels, rows

    def sample_key(self, index: int) -> tuple[str, int]:
        """(source name, row) of the `index`-th sample of the run."""
        if not 0 <= index < self.total_samples:
            raise IndexError(f"sample {index} outside the plan's 0..{self.total_samples - 1}")
        labels, rows = self.batch(index // self.global_batch_size)
        slot = index % self.global_batch_size
        return self.sources[int(labels[slot])], int(rows[slot])

    def planned_keys(self) -> Counter:
        """Multiset of (source, row) over the whole run: what a complete run must consume."""
        out: Counter = Counter()
        for src, sp in enumerate(self.source_plans):
            draws = np.arange(sp.share.samples, dtype=np.int64)
            out.update((sp.name, int(r)) for r in self._rows(src, draws))
        return out

    def _rows(self, src: int, draws: np.ndarray) -> np.ndarray:
        """Row of each draw index j of source `src` (epoch j // n, position j % n)."""
        sp = self.source_plans[src]
        epochs, pos = np.divmod(draws + sp.offset, sp.share.sequences)
        out = np.empty(len(draws), dtype=np.int64)
        for epoch in np.unique(epochs):
            where = epochs == epoch
            out[where] = self._permutation(src, int(epoch))[pos[where]]
        return out

    def _permutation(self, src: int, epoch: int) -> np.ndarray:
        key = (src, epoch)
        if key not in self._perms:
            if len(self._perms) >= _CACHE_EPOCHS:
                self._perms.pop(next(iter(self._perms)))
            sp = self.source_plans[src]
            self._perms[key] = epoch_permutation(
                self.config.seed, sp.dataset.version, sp.name, epoch, sp.share.sequences
            )
        return self._perms[key]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_batches"], state["_perms"] = {}, {}  # caches are rebuilt where the plan is read
        return state

    # -- what the run reports -----------------------------------------------------------
    def to_json(self) -> dict:
        """The resolved plan for the run's manifest (JSON-serialisable)."""
        total = self.total_samples
        return {
            "plan_id": self.plan_id,
            "strategy": self.config.strategy,
            "seed": self.config.seed,
            "global_batch_size": self.global_batch_size,
            "total_steps": self.total_steps,
            "total_samples": total,
            "seq_len": self.seq_len,
            "total_tokens": total * self.seq_len,
            "token_budget": self.config.token_budget,
            "datasets": sorted({f"{s.dataset.dataset}/{s.dataset.version}" for s in self.source_plans}),
            "continues": any(s.offset for s in self.source_plans),
            "sources": [
                {
                    "name": s.name,
                    "dataset": s.dataset.dataset,
                    "version": s.dataset.version,
                    "sequences": s.share.sequences,
                    "target_share": round(s.share.target_share, 6),
                    "expected_share": round(s.share.expected_share(total), 6),
                    "samples": s.share.samples,
                    "epochs": round(s.share.epochs, 4),
                    "cap_samples": s.share.cap,
                    "capped_by": s.share.cap_reason,
                    "offset": s.offset,
                }
                for s in self.source_plans
            ],
            "mixture": json.loads(self.config.model_dump_json()),
        }

    def summary(self) -> str:
        """The resolved plan as a table a person reads (printed when a run starts)."""
        total = self.total_samples
        lines = [
            f"mixture plan {self.plan_id}: {self.config.strategy}, seed {self.config.seed}, "
            f"{self.total_steps} steps x {self.global_batch_size} = {total} samples "
            f"({total * self.seq_len:,} tokens)",
            f"  {'source':<16}{'sequences':>10}{'target':>9}{'expected':>10}{'samples':>9}{'epochs':>8}  capped by",
        ]
        for s in self.source_plans:
            sh = s.share
            lines.append(
                f"  {s.name:<16}{sh.sequences:>10}{sh.target_share:>9.1%}{sh.expected_share(total):>10.1%}"
                f"{sh.samples:>9}{sh.epochs:>8.2f}  {sh.cap_reason or '-'}"
            )
        return "\n".join(lines)


def build_plan(
    dataset: PreparedDataset | Sequence[PreparedDataset],
    mixture_cfg: MixtureConfig,
    global_batch_size: int,
    total_steps: int | None = None,
    continue_from: dict | None = None,
) -> MixturePlan:
    """Resolve the mixture over the train split of `dataset` and fix the global order.

    `dataset` is a PreparedDataset, or a list of them (sources prepared separately, e.g. a
    source added later, are mixed without rewriting anything); source names must be unique.
    The datasets `mixture_cfg.datasets` names join them (`datasets.mixed_datasets`).
    `total_steps` may be omitted when `mixture_cfg.token_budget` is set.
    `continue_from` is an earlier run's `plan.to_json()` (continued training, perhaps on a new
    mix): each source that run read (same dataset version) continues its row stream where the
    run left it, so the new run sees fresh rows first. Caps count this run's samples only.
    """
    datasets = mixed_datasets(dataset, mixture_cfg)  # + those `mixture.datasets` names (docs/sft.md)
    if not datasets:
        raise MixtureError("build_plan needs at least one prepared dataset")
    if global_batch_size < 1:
        raise MixtureError(f"global_batch_size must be >= 1, got {global_batch_size}")
    seq_lens = {ds.seq_len for ds in datasets}
    if len(seq_lens) != 1:
        raise MixtureError(f"datasets mixed in one plan must share seq_len, got {sorted(seq_lens)}")
    seq_len = seq_lens.pop()
    total_steps = _steps(mixture_cfg, global_batch_size, total_steps, seq_len)

    owner: dict[str, PreparedDataset] = {}
    for ds in datasets:
        for name in ds.sources:
            if name in owner:
                raise MixtureError(f"source {name!r} is in both {owner[name].dataset} and {ds.dataset}")
            owner[name] = ds
    unknown = sorted(set().union(*mixture_cfg.named_sources().values()) - set(owner))
    if unknown:
        raise MixtureError(f"the mixture names source(s) {unknown} that no dataset has; sources: {list(owner)}")
    sizes = {name: ds.num_sequences(name, SPLIT) for name, ds in owner.items()}
    shares = resolve_shares(mixture_cfg, sizes, global_batch_size * total_steps)
    source_plans = []
    for share in shares:
        ds = owner[share.name]
        rows = tuple(int(s["rows"]) for s in ds.manifest["sources"][share.name]["splits"][SPLIT]["shards"])
        if sum(rows) != share.sequences:
            raise MixtureError(
                f"{ds.dataset}/{ds.version} source {share.name}: shards hold {sum(rows)} rows, "
                f"manifest says {share.sequences} sequences"
            )
        source_plans.append(PlanSource(share, ds, tuple(ds.shard_paths(share.name, SPLIT)), rows))
    if continue_from is not None:
        source_plans = _continued(source_plans, continue_from, mixture_cfg.seed)
    pads = {int(ds.manifest["tokenizer"]["pad_token_id"]) for ds in datasets}
    if len(pads) != 1:
        raise MixtureError(f"datasets mixed in one plan must share a tokenizer; pad ids {sorted(pads)}")
    cum = batch_quotas(np.array([s.samples for s in shares]), global_batch_size, total_steps)
    return MixturePlan(mixture_cfg, global_batch_size, total_steps, seq_len, pads.pop(), source_plans, cum)


def _continued(source_plans: list[PlanSource], previous: dict, seed: int) -> list[PlanSource]:
    """Offset each source's row stream by what the previous plan (and those it continued) drew."""
    if previous.get("seed") != seed:
        raise MixtureError(
            f"continue with the same mixture.seed as plan {previous.get('plan_id')} "
            f"({previous.get('seed')}, this one {seed}): the seed orders each source's rows"
        )
    before = {(s["name"], s["dataset"], s["version"]): s.get("offset", 0) + s["samples"] for s in previous["sources"]}
    return [replace(sp, offset=before.get((sp.name, sp.dataset.dataset, sp.dataset.version), 0)) for sp in source_plans]


def _steps(cfg: MixtureConfig, batch: int, steps: int | None, seq_len: int) -> int:
    budget = cfg.token_budget
    if steps is None:
        if budget is None:
            raise MixtureError("give total_steps (train.steps) or mixture.token_budget")
        steps = budget // (batch * seq_len)
        if steps < 1:
            raise MixtureError(
                f"mixture.token_budget {budget} tokens is less than one global batch "
                f"({batch} x {seq_len} = {batch * seq_len} tokens)"
            )
        return steps
    if steps < 1:
        raise MixtureError(f"total_steps must be >= 1, got {steps}")
    if budget is not None and steps * batch * seq_len > budget:
        raise MixtureError(
            f"{steps} steps x {batch} sequences x {seq_len} tokens = {steps * batch * seq_len} tokens "
            f"exceeds mixture.token_budget {budget}; lower train.steps or raise the budget"
        )
    return steps
