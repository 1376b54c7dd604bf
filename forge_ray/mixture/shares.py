"""Resolving a mixture: target shares from the strategy, then caps, then whole sample counts.

    target share   from the strategy alone (explicit weights, or sizes ** alpha)
    caps           per source: max_epochs x sequences, max_share x total samples
    counts         water-filling: capped sources take their cap, the rest is shared out in
                   proportion to the targets of the uncapped ones; then rounded to integers
                   (largest remainder) that sum to the total and never exceed a cap
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from forge_ray.config.mixture import MixtureConfig
from forge_ray.errors import ForgeError


class MixtureError(ForgeError):
    """A mixture cannot be planned or read as asked (bad sizes, caps too tight, bad batch shape)."""

    exit_code = 2


@dataclass(frozen=True)
class SourceShare:
    """What the plan asks of one source."""

    name: str
    sequences: int  # train sequences available
    target_share: float  # from the strategy, before caps
    samples: int  # planned samples (after caps, rounded)
    cap: int | None  # the tightest cap in samples, None when uncapped
    cap_reason: str | None  # "max_epochs" / "max_share" when the cap binds

    def expected_share(self, total: int) -> float:
        return self.samples / total

    @property
    def epochs(self) -> float:
        return self.samples / self.sequences if self.sequences else 0.0


def target_shares(cfg: MixtureConfig, sizes: dict[str, int]) -> dict[str, float]:
    """Target share per source from the strategy alone (sums to 1)."""
    names = list(sizes)
    if cfg.strategy == "temperature":
        raw = {n: float(sizes[n]) ** float(cfg.alpha) if sizes[n] > 0 else 0.0 for n in names}
    elif cfg.weights:
        missing = [n for n in names if n not in cfg.weights]
        if missing:
            raise MixtureError(
                f"mixture.weights does not name source(s) {missing}; give every source a weight "
                f"(0 leaves one out), or leave weights empty for shares by size"
            )
        raw = {n: float(cfg.weights[n]) for n in names}
    else:
        raw = {n: float(sizes[n]) for n in names}
    empty = [n for n in names if raw[n] > 0 and sizes[n] == 0]
    if empty:
        raise MixtureError(f"source(s) {empty} have weight > 0 but no train sequences")
    total = sum(raw.values())
    if total <= 0:
        raise MixtureError(f"every source has weight 0 or no train sequences: sizes {sizes}")
    return {n: raw[n] / total for n in names}


def _caps(cfg: MixtureConfig, sizes: dict[str, int], total: int) -> dict[str, tuple[int, str]]:
    caps: dict[str, tuple[int, str]] = {}
    for name, size in sizes.items():
        options = []
        if name in cfg.max_epochs:
            options.append((math.floor(cfg.max_epochs[name] * size + 1e-9), "max_epochs"))
        if name in cfg.max_share:
            options.append((math.floor(cfg.max_share[name] * total + 1e-9), "max_share"))
        if options:
            caps[name] = min(options)
    return caps


def resolve_shares(cfg: MixtureConfig, sizes: dict[str, int], total: int) -> list[SourceShare]:
    """Planned samples per source for a run of `total` samples (raises MixtureError if infeasible)."""
    if total < 1:
        raise MixtureError(f"a plan needs at least one sample, got {total}")
    targets = target_shares(cfg, sizes)
    caps = _caps(cfg, sizes, total)
    alloc: dict[str, float] = {}
    active = [n for n in sizes if targets[n] > 0]
    remaining = float(total)
    while active:
        scale = remaining / sum(targets[n] for n in active)
        over = [n for n in active if n in caps and scale * targets[n] > caps[n][0]]
        if not over:
            alloc.update({n: scale * targets[n] for n in active})
            remaining = 0.0
            break
        for n in over:
            alloc[n] = float(caps[n][0])
            remaining -= caps[n][0]
            active.remove(n)
    if remaining > 1e-6:
        limits = ", ".join(f"{n} {caps[n][1]} -> {caps[n][0]} samples" for n in sizes if n in caps)
        raise MixtureError(
            f"the mixture cannot supply {total} samples: every weighted source hits its cap "
            f"({limits}); raise a cap, add a source, or plan fewer steps / a smaller token budget"
        )
    counts = _round_to_total({n: alloc.get(n, 0.0) for n in sizes}, total, caps)
    return [
        SourceShare(
            name=n,
            sequences=sizes[n],
            target_share=targets[n],
            samples=counts[n],
            cap=caps[n][0] if n in caps else None,
            cap_reason=caps[n][1] if n in caps and counts[n] >= caps[n][0] else None,
        )
        for n in sizes
    ]


def _round_to_total(alloc: dict[str, float], total: int, caps: dict[str, tuple[int, str]]) -> dict[str, int]:
    """Largest-remainder rounding that keeps the sum and never rounds a source above its cap."""
    counts = {n: math.floor(a + 1e-9) for n, a in alloc.items()}
    short = total - sum(counts.values())
    order = sorted(alloc, key=lambda n: (-(alloc[n] - counts[n]), list(alloc).index(n)))
    for n in order:
        if short <= 0:
            break
        if alloc[n] > 0 and (n not in caps or counts[n] < caps[n][0]):
            counts[n] += 1
            short -= 1
    if short:  # only reachable when caps leave no room: resolve_shares already checked that
        raise MixtureError(f"cannot round the mixture to {total} samples under its caps")
    return counts
