"""World-size-independent checkpoints: full fp32 weights and Adam moments per parameter.

DeepSpeed's own checkpoints hold ZeRO partitions of a flat buffer, tied to the data-parallel
size; its universal-checkpoint converter does not cover native `deepspeed.moe` experts. So a
checkpoint here is, per *named parameter* with experts numbered globally (as with
expert_parallel_size 1):

    weights.safetensors     fp32 master weights              (DeepSpeed `safe_get_full_fp32_param`)
    optimizer.safetensors   exp_avg/<name>, exp_avg_sq/<name> (`safe_get_full_optimizer_state`)
    state.json              step (the data cursor), Adam step, tokens seen, plan id, seed, world size

Any world size and expert-parallel size loads it: each rank takes its own experts and DeepSpeed
re-partitions. The learning rate is a function of the step and each step reseeds from
(seed, step, rank), so nothing else is needed to resume exactly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

WEIGHTS, OPTIMIZER, STATE = "weights.safetensors", "optimizer.safetensors", "state.json"
MOMENTS = ("exp_avg", "exp_avg_sq")
_EXPERT = re.compile(r"^(.*\.deepspeed_experts\.)(\d+)(\..*)$")


def _ep(model, *, group: bool = True) -> tuple[int, int, object]:
    """(ep rank, ep size, ep group) of the model's MoE layers (rank 0 / size 1 without).

    DeepSpeed puts consecutive ranks in one expert-parallel group ([0..ep-1], [ep..2ep-1], ...),
    so the ep rank is known before the engine (which creates the group) exists."""
    ep_size = getattr(model, "ep_size", 1)
    if ep_size == 1:
        return 0, 1, None
    import torch.distributed as dist

    ep_group = None
    if group:
        from deepspeed.utils import groups

        ep_group = groups._get_expert_parallel_group(f"ep_size_{ep_size}")
    return dist.get_rank() % ep_size, ep_size, ep_group


def _num_local_experts(model) -> int:
    return model.cfg.moe.num_experts // getattr(model, "ep_size", 1)


def global_name(name: str, ep_rank: int, num_local: int) -> str:
    """A local expert's parameter name -> its name with the global expert index."""
    m = _EXPERT.match(name)
    if not m:
        return name
    return f"{m.group(1)}{ep_rank * num_local + int(m.group(2))}{m.group(3)}"


def _full(tensor_fn, name: str, p, ep_rank: int, ep_size: int, group, num_local: int) -> dict[str, torch.Tensor]:
    """One parameter's full tensor(s) under global names: experts are gathered over the EP group."""
    t = tensor_fn(p).detach().float()  # on the parameter's device: NCCL gathers CUDA tensors only
    if ep_size == 1 or not _EXPERT.match(name):
        return {global_name(name, ep_rank, num_local): t.cpu()}
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(ep_size)]
    dist.all_gather(parts, t.contiguous(), group=group)
    return {global_name(name, r, num_local): parts[r].cpu() for r in range(ep_size)}


def _zero(engine) -> bool:
    """Whether the engine's optimizer is a ZeRO (stage 1/2) one, with flat fp32 partitions; with
    stage 0 (one rank, fp32) DeepSpeed steps the torch AdamW on the parameters themselves."""
    return hasattr(engine.optimizer, "single_partition_of_fp32_groups")


def gather_full_state(engine, model) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(weights, moments) of `model` under `engine`: collective, every rank must call it."""
    fp32_param, optimizer_state = _state_readers(engine)
    ep_rank, ep_size, group = _ep(model)
    n_local = _num_local_experts(model) if model.cfg.family == "moe" else 1
    weights: dict[str, torch.Tensor] = {}
    moments: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        weights.update(_full(fp32_param, name, p, ep_rank, ep_size, group, n_local))
        for key in MOMENTS:
            fn = lambda q, k=key: optimizer_state(q, k)  # noqa: E731
            for n, t in _full(fn, name, p, ep_rank, ep_size, group, n_local).items():
                moments[f"{key}/{n}"] = t
    return weights, moments


def _state_readers(engine):
    """(parameter -> its full fp32 tensor, (parameter, moment) -> its full Adam moment)."""
    if _zero(engine):
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

        _relink_optimizer_state(engine)
        return safe_get_full_fp32_param, safe_get_full_optimizer_state
    # Copies, as ZeRO's readers return: the caller gets a snapshot, not views of tensors the next
    # step updates in place.
    state = engine.optimizer.state
    return (lambda p: p.detach().clone()), (lambda p, k: state[p][k].clone() if p in state else torch.zeros_like(p))


def _relink_optimizer_state(engine) -> None:
    # ZeRO links the per-parameter views of Adam's state lazily, right after the first param
    # group's first step (DeepSpeed 0.19.8 steps groups one by one): the later groups (norms,
    # experts) had no state yet and stay unlinked. Relink now that every group has stepped.
    engine.optimizer._hp_optimizer_states_linked = False
    engine.optimizer._lazy_init_hp_params_optimizer_state()


def save_checkpoint(folder: str | Path, weights, moments, state: dict) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / WEIGHTS))
    save_file({k: v.contiguous() for k, v in moments.items()}, str(folder / OPTIMIZER))
    (folder / STATE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    return folder


def read_checkpoint(folder: str | Path, *, optimizer: bool = True):
    """(weights, moments or None, state) of a checkpoint folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    state = json.loads((folder / STATE).read_text())
    weights = load_file(str(folder / WEIGHTS))
    moments = load_file(str(folder / OPTIMIZER)) if optimizer else None
    return weights, moments, state


def load_local_weights(model, weights: dict[str, torch.Tensor]) -> None:
    """Load full (global-name) weights into a model built for this rank's expert-parallel slice."""
    ep_rank, _, _ = _ep(model, group=False)
    n_local = _num_local_experts(model) if model.cfg.family == "moe" else 1
    if model.cfg.tie_embeddings and "lm_head.weight" not in weights:
        weights = {**weights, "lm_head.weight": weights["embed_tokens.weight"]}
    local = {name: weights[global_name(name, ep_rank, n_local)] for name in model.state_dict()}
    model.load_state_dict(local, strict=True)


def restore_optimizer(engine, model, moments: dict[str, torch.Tensor], adam_step: int) -> None:
    """Put full per-parameter Adam moments into DeepSpeed's ZeRO partitions (any world size), or
    into the torch AdamW's per-parameter state under ZeRO stage 0."""
    from deepspeed.utils import safe_set_full_optimizer_state

    ep_rank, _, _ = _ep(model, group=False)
    n_local = _num_local_experts(model) if model.cfg.family == "moe" else 1
    if not _zero(engine):
        for name, p in model.named_parameters():
            gname = global_name(name, ep_rank, n_local)
            engine.optimizer.state[p] = {"step": torch.tensor(float(adam_step)),
                                         **{k: moments[f"{k}/{gname}"].to(p).clone() for k in MOMENTS}}
        return
    zero = engine.optimizer
    inner = zero.optimizer
    for flat in zero.single_partition_of_fp32_groups:
        inner.state[flat] = {
            "step": torch.tensor(float(adam_step)),
            "exp_avg": torch.zeros_like(flat),
            "exp_avg_sq": torch.zeros_like(flat),
        }
    zero._lazy_init_hp_params_optimizer_state()
    for name, p in model.named_parameters():
        gname = global_name(name, ep_rank, n_local)
        for key in MOMENTS:
            safe_set_full_optimizer_state(p, moments[f"{key}/{gname}"].to(p.device), key)
