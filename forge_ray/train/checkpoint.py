"""World-size-independent checkpoints: full fp32 weights and Adam moments per parameter.

DeepSpeed's own checkpoints hold ZeRO partitions of a flat buffer, tied to the data-parallel
size; its universal-checkpoint converter does not cover native `deepspeed.moe` experts. So a
checkpoint here is, per forge parameter name (`forge_ray.models.names`) with experts numbered
globally (as with expert_parallel_size 1):

    weights.safetensors     fp32 master weights
    optimizer.safetensors   exp_avg/<name>, exp_avg_sq/<name>
    state.json              `CheckpointState`: step (the data cursor, and Adam's step count),
                            tokens seen, plan id, seed, world / EP size, metrics, training dtype

Any world size and expert-parallel size loads it: each rank takes its own experts and DeepSpeed
re-partitions (`deepspeed_adapter` reads and writes ZeRO's state per parameter).
Workers write a checkpoint to a node-local folder and Ray Train uploads it to the run's storage
(an object store included); the readers here take a local path or a URI (an export reads the
object store directly, without a local copy). The learning rate
is a function of the step and each step reseeds from (seed, step, rank), so nothing else is needed
to resume exactly.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import NotRequired, TypedDict

import torch

from forge_ray.models.names import expert_number, with_expert_number
from forge_ray.storage import is_local_location, url_to_fs
from forge_ray.train import deepspeed_adapter as ds

WEIGHTS, OPTIMIZER, STATE = "weights.safetensors", "optimizer.safetensors", "state.json"
MOMENTS = ("exp_avg", "exp_avg_sq")


class CheckpointState(TypedDict):
    """state.json: what a resume, an export and `forge export` read besides the tensors."""

    step: int  # steps done: the data cursor of the mixture plan, and Adam's step count
    tokens_seen: int
    plan_id: str  # a resume refuses a checkpoint of another plan
    seed: int
    world_size: int  # of the attempt that wrote it (any world size loads it)
    expert_parallel_size: int
    config_hash: str
    metrics: dict[str, float]  # the numeric part of that step's record (train/metrics.py)
    rng_torch_seed: int
    dtype: NotRequired[str]  # "bfloat16" | "float32": the precision trained in (absent: older checkpoints)


def checkpoint_dtype(state: CheckpointState) -> torch.dtype:
    """The dtype the checkpoint's model trained in; float32 for checkpoints that did not record it."""
    return torch.bfloat16 if state.get("dtype") == "bfloat16" else torch.float32


def _ep(model, *, group: bool = True) -> tuple[int, int, object]:
    """(ep rank, ep size, ep group) of the model's MoE layers (rank 0 / size 1 without).

    DeepSpeed puts consecutive ranks in one expert-parallel group ([0..ep-1], [ep..2ep-1], ...),
    so the ep rank is known before the engine (which creates the group) exists."""
    ep_size = getattr(model, "ep_size", 1)
    if ep_size == 1:
        return 0, 1, None
    import torch.distributed as dist

    return dist.get_rank() % ep_size, ep_size, ds.expert_parallel_group(ep_size) if group else None


def _num_local_experts(model) -> int:
    return model.cfg.moe.num_experts // getattr(model, "ep_size", 1) if model.cfg.family == "moe" else 1


def global_name(name: str, ep_rank: int, num_local: int) -> str:
    """A local expert's parameter name -> its name with the global expert number."""
    e = expert_number(name)
    return name if e is None else with_expert_number(name, ep_rank * num_local + e)


def _full(tensor_fn, name: str, p, ep_rank: int, ep_size: int, group, num_local: int) -> dict[str, torch.Tensor]:
    """One parameter's full tensor(s) under global names: experts are gathered over the EP group."""
    t = tensor_fn(p).detach().float()  # on the parameter's device: NCCL gathers CUDA tensors only
    if ep_size == 1 or expert_number(name) is None:
        return {global_name(name, ep_rank, num_local): t.cpu()}
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(ep_size)]
    dist.all_gather(parts, t.contiguous(), group=group)
    return {global_name(name, r, num_local): parts[r].cpu() for r in range(ep_size)}


def gather_full_state(engine, model) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(weights, moments) of `model` under `engine`: collective, every rank must call it."""
    fp32_param, optimizer_state = ds.full_state_readers(engine)
    ep_rank, ep_size, group = _ep(model)
    n_local = _num_local_experts(model)
    weights: dict[str, torch.Tensor] = {}
    moments: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        weights.update(_full(fp32_param, name, p, ep_rank, ep_size, group, n_local))
        for key in MOMENTS:
            fn = lambda q, k=key: optimizer_state(q, k)  # noqa: E731
            for n, t in _full(fn, name, p, ep_rank, ep_size, group, n_local).items():
                moments[f"{key}/{n}"] = t
    return weights, moments


def write_checkpoint(folder: str | Path, weights, moments, state: CheckpointState) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / WEIGHTS))
    save_file({k: v.contiguous() for k, v in moments.items()}, str(folder / OPTIMIZER))
    (folder / STATE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    return folder


def read_state(folder: str | Path) -> CheckpointState:
    fs, path = url_to_fs(str(folder))
    return json.loads(fs.cat_file(posixpath.join(path, STATE)))


def _load_tensors(folder: str, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load, load_file

    if is_local_location(folder):
        return load_file(str(Path(folder) / name))  # memory-mapped
    fs, path = url_to_fs(folder)
    return load(fs.cat_file(posixpath.join(path, name)))


def read_checkpoint(folder: str | Path, *, optimizer: bool = True):
    """(weights, moments or None, state) of a checkpoint folder (local path or URI), under forge's
    parameter names (checkpoints written before forge named its MoE parameters held DeepSpeed's)."""
    folder = str(folder)
    weights = {ds.from_deepspeed_name(k): v for k, v in _load_tensors(folder, WEIGHTS).items()}
    moments = None
    if optimizer:
        moments = {ds.from_deepspeed_name(k): v for k, v in _load_tensors(folder, OPTIMIZER).items()}
    return weights, moments, read_state(folder)


def load_local_weights(model, weights: dict[str, torch.Tensor]) -> None:
    """Load full (global-name) weights into a model built for this rank's expert-parallel slice."""
    ep_rank, _, _ = _ep(model, group=False)
    n_local = _num_local_experts(model)
    if model.cfg.tie_embeddings and "lm_head.weight" not in weights:
        weights = {**weights, "lm_head.weight": weights["embed_tokens.weight"]}
    local = {name: weights[global_name(name, ep_rank, n_local)] for name in model.state_dict()}
    model.load_state_dict(local, strict=True)


def restore_optimizer(engine, model, moments: dict[str, torch.Tensor], adam_step: int) -> None:
    """Put full per-parameter Adam moments back into the engine's optimizer (any world size)."""
    ep_rank, _, _ = _ep(model, group=False)
    n_local = _num_local_experts(model)
    per_param = []
    for name, p in model.named_parameters():
        gname = global_name(name, ep_rank, n_local)
        per_param.append((p, {k: moments[f"{k}/{gname}"] for k in MOMENTS}))
    ds.restore_moments(engine, per_param, adam_step)
