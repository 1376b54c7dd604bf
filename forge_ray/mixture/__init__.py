"""Mixture: weighted prepared sources -> one deterministic global sample order -> Ray Train.

    from forge_ray.mixture import build_plan, TrainStream
    plan = build_plan(dataset, cfg.mixture, global_batch_size=G, total_steps=S)   # driver
    for step, micro_batches in TrainStream(plan, rank, world_size, micro_batch_size=m, start_step=k):
        ...                                                                         # each worker

docs/mixture.md explains the strategies, caps and the order; docs/contracts.md the interface.
"""

from forge_ray.mixture.consumption import ConsumptionRecord, check_consumption, read_records
from forge_ray.mixture.plan import MixturePlan, build_plan
from forge_ray.mixture.shares import MixtureError
from forge_ray.mixture.stream import TrainStream

__all__ = [
    "ConsumptionRecord",
    "MixtureError",
    "MixturePlan",
    "TrainStream",
    "build_plan",
    "check_consumption",
    "read_records",
]
