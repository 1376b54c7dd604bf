"""Rewards: a weighted sum of KPI scorers, format checks and functions named by import path.

    reward = Reward.from_config(rl.rewards)            # ConfigError for a function that cannot be imported
    scored = reward.score(cases, completions)          # ScoredBatch: one total per completion
    scored.totals, scored.failed, scored.by_term

A term that raises, or returns NaN, infinity or a non-number, gives that completion no reward
(`totals[i]` is None): it is counted in `failed` and left out of its group's advantages; the
run goes on. Nothing of the completion's text is logged.
"""

from __future__ import annotations

import importlib
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from forge_ray.config.rl import RewardConfig
from forge_ray.errors import ConfigError
from forge_ray.rl.prompts import PromptCase

log = logging.getLogger(__name__)

RewardFn = Callable[[str, PromptCase], float]


def kpi_reward(completion: str, case: PromptCase) -> float:
    """The case's own KPI scorer (eval/scorers.py): 1.0 or 0.0."""
    from forge_ray.eval.scorers import score_answer

    return score_answer(case.case, completion)[0]


def format_reward(pattern: str) -> RewardFn:
    compiled = re.compile(pattern, re.DOTALL)
    return lambda completion, case: 1.0 if compiled.fullmatch(completion.strip()) else 0.0


def import_function(path: str) -> Callable:
    module, _, name = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError("rl.rewards", [f"rl.rewards: cannot import function {path!r}: {e}"]) from None
    if not callable(fn):
        raise ConfigError("rl.rewards", [f"rl.rewards: {path!r} is not callable"])
    return fn


def _user_function(fn: Callable) -> RewardFn:
    return lambda completion, case: fn(completion, case.raw())


def reward_term(cfg: RewardConfig) -> RewardFn:
    if cfg.kind == "kpi":
        return kpi_reward
    if cfg.kind == "format":
        return format_reward(cfg.pattern)
    return _user_function(import_function(cfg.function))


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"returned {type(value).__name__}, not a number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"returned {value}")
    return value


@dataclass
class ScoredBatch:
    totals: list[float | None]  # per completion; None: a term failed, no reward
    by_term: dict[str, float]  # mean of each term over the completions it scored
    failed: int  # completions without a reward
    failures: dict[str, int]  # term -> why -> count, e.g. {"function:pkg:fn: ValueError": 2}


@dataclass
class Reward:
    terms: list[tuple[str, float, RewardFn]]  # (name, weight, fn)

    @classmethod
    def from_config(cls, rewards: Sequence[RewardConfig]) -> Reward:
        names = [r.kind if r.kind != "function" else f"function:{r.function}" for r in rewards]
        return cls([(f"{n}#{i}" if names.count(n) > 1 else n, r.weight, reward_term(r))
                    for i, (n, r) in enumerate(zip(names, rewards, strict=True))])

    def score(self, cases: Sequence[PromptCase], completions: Sequence[str]) -> ScoredBatch:
        totals: list[float | None] = []
        sums = {name: [0.0, 0] for name, _, _ in self.terms}
        failures: dict[str, int] = {}
        for case, text in zip(cases, completions, strict=True):
            total: float | None = 0.0
            for name, weight, fn in self.terms:
                try:
                    value = _number(fn(text, case))
                except Exception as e:  # noqa: BLE001 - a user's reward may fail in any way: no reward, counted
                    key = f"{name}: {type(e).__name__}"
                    failures[key] = failures.get(key, 0) + 1
                    total = None
                    break
                sums[name][0] += value
                sums[name][1] += 1
                total += weight * value
            totals.append(total)
        if failures:
            log.warning("rewards failed on %d completion(s): %s", sum(failures.values()), failures)
        return ScoredBatch(totals, {n: s / c for n, (s, c) in sums.items() if c},
                           sum(t is None for t in totals), failures)
