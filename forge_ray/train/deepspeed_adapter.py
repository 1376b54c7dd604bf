"""DeepSpeed, fenced: everything forge knows of DeepSpeed's insides, written for deepspeed==0.19.8.

The rest of forge calls these functions and never names a DeepSpeed-private member or module
path; when the pin moves, this file is what to re-check (with tests/integration/test_train_*.py
and the name-table test in tests/unit/test_model.py).

- the engine: ZeRO 1/2 over the data-parallel ranks (0 on one fp32 rank), bf16, accumulation,
  clipping, AdamW groups with MoE experts split out; DeepSpeed creates the expert-parallel
  groups (`ep_size_<n>`) for the MoE layers when the engine is built
- the MoE layer: `deepspeed.moe.layer.MoE` with its router and experts moved under forge's names
  (`NAME_TABLE`), so the model's parameter names carry no DeepSpeed module path
- the state: full fp32 weights and Adam moments per parameter out of and into ZeRO's flat fp32
  partitions (stage 0: the torch AdamW's own state), the gradient norm, the expert-parallel group
"""

from __future__ import annotations

import torch
from torch import nn

from forge_ray.config.model import MoEConfig
from forge_ray.config.train import TrainConfig
from forge_ray.train.schedule import lr_at

# ---- precision, engine ---------------------------------------------------------------------------


def use_bf16(train: TrainConfig) -> bool:
    if train.precision == "bf16":
        return True
    return train.precision == "auto" and train.use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def training_dtype(train: TrainConfig) -> str:
    """The dtype the model trains in here ("bfloat16" or "float32"): recorded with each checkpoint."""
    return "bfloat16" if use_bf16(train) else "float32"


def zero_stage(train: TrainConfig, world_size: int) -> int:
    """The ZeRO stage the engine runs: `train.zero_stage`, but 0 on a single fp32 rank.

    ZeRO partitions over the data-parallel ranks; with one rank there is nothing to partition,
    and its flat fp32 copy of every parameter and gradient costs 10-20% of a step of the
    benchmark model on CPU. Stage 0 (fp32) steps the torch AdamW on the parameters themselves.
    Checkpoints are stage-independent (`checkpoint.py`), so an elastic run moving between 1 and
    2 workers switches stage at its restart and resumes the same. bf16 keeps stage 1, whose
    fp32 master weights the bf16 model needs."""
    if world_size > 1:
        return train.zero_stage
    return 1 if use_bf16(train) else 0


def deepspeed_config(train: TrainConfig, world_size: int) -> dict:
    return {
        "train_batch_size": train.global_batch_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.accumulation(world_size),
        "gradient_clipping": train.grad_clip,
        "bf16": {"enabled": use_bf16(train)},
        "zero_optimization": {
            "stage": zero_stage(train, world_size),
            "contiguous_gradients": True,
            "overlap_comm": False,
            "reduce_scatter": True,
        },
        # torch.optim.AdamW: DeepSpeed's fused/CPU Adam need compiled extensions; the torch one
        # runs everywhere and ZeRO wraps it the same way.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on norms; MoE expert parameters split into their own groups
    (DeepSpeed reduces them over the expert data-parallel group, not all ranks)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:  # frozen (a LoRA base) parameters hold no optimizer state
            (no_decay if p.dim() < 2 else decay).append(p)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    if any(getattr(p, "allreduce", True) is False for p in model.parameters()):  # how DeepSpeed marks experts
        from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer

        groups = split_params_into_different_moe_groups_for_optimizer(groups)
    return groups


def build_engine(model: nn.Module, train: TrainConfig, world_size: int):
    """(engine, optimizer) for `model`; torch.distributed is already up (Ray Train's TorchConfig)."""
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if train.use_gpu else "gloo")
    b1, b2 = train.betas
    optimizer = torch.optim.AdamW(
        optimizer_groups(model, train.weight_decay), lr=lr_at(0, train), betas=(b1, b2), eps=train.adam_eps
    )
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(train, world_size)
    )
    if world_size == 1:
        # Alone, there is nothing to all-reduce; DeepSpeed would still flatten every gradient into
        # buckets, run the collective and copy them back (~4% of a CPU step of the benchmark model).
        engine.enable_backward_allreduce = False
    return engine, optimizer


def keeps_grad_norm(engine) -> bool:
    """Whether the engine keeps the global gradient norm it clips with: ZeRO 1/2 do; stage 0 clips
    without keeping it, so the caller measures the norm itself before the step."""
    return engine.zero_optimization_stage() != 0


def global_grad_norm(engine) -> float | None:
    """The pre-clipping gradient norm of the last optimizer step, over all ranks (ZeRO 1/2)."""
    return engine.get_global_grad_norm()


# ---- the MoE layer under forge's names -----------------------------------------------------------

# forge's name of an MoE block's part <-> where DeepSpeed keeps it: inside the block's
# `deepspeed.moe.layer.MoE`, registered as `<block>.moe` (block = `layers.{i}.mlp`). One table, used
# both ways: `moe_layer` moves each part to forge's name, `from_deepspeed_name` reads DeepSpeed's
# names (checkpoints written before forge named these parameters), `to_deepspeed_name` the reverse.
NAME_TABLE = {
    "mlp.router": "mlp.moe.deepspeed_moe.gate.wg",
    "mlp.experts": "mlp.moe.deepspeed_moe.experts.deepspeed_experts",
}
_LAYER = "mlp.moe."  # where the block registers DeepSpeed's layer


def moe_layer(hidden_size: int, expert: nn.Module, moe: MoEConfig,
              ep_size: int) -> tuple[nn.Module, nn.Linear, nn.ModuleList]:
    """(DeepSpeed's MoE layer, its router, its local experts) for an MoE block to register as
    `moe`, `router` and `experts`.

    The layer keeps routing, capacity and the expert all-to-all; its router and experts are taken
    out of its registered submodules and left as plain attributes, which its forward still uses, so
    the parameters appear once, under the block's names (the same objects: DeepSpeed's engine and
    ZeRO find them by identity and by the `allreduce` / `group_name` marks on expert parameters)."""
    from deepspeed.moe.layer import MoE

    layer = MoE(
        hidden_size=hidden_size,
        expert=expert,
        num_experts=moe.num_experts,
        ep_size=ep_size,
        k=moe.top_k,
        capacity_factor=moe.capacity_factor,
        eval_capacity_factor=moe.eval_capacity_factor,
        min_capacity=moe.min_capacity,
        drop_tokens=moe.drop_tokens,
        # Deterministic routing: no Gumbel sampling of the 2nd expert, no random token
        # selection, which is how HF Mixtral and vLLM route at inference.
        use_rts=False,
        top2_2nd_expert_sampling=False,
    )
    router = _unregister(layer, NAME_TABLE["mlp.router"].removeprefix(_LAYER))
    experts = _unregister(layer, NAME_TABLE["mlp.experts"].removeprefix(_LAYER))
    return layer, router, experts


def _unregister(layer: nn.Module, path: str) -> nn.Module:
    parent_path, _, attr = path.rpartition(".")
    parent = layer.get_submodule(parent_path)
    module = getattr(parent, attr)
    delattr(parent, attr)  # out of `_modules`: no parameter is named by DeepSpeed's path
    object.__setattr__(parent, attr, module)  # a plain attribute, as DeepSpeed's forward reads it
    return module


def from_deepspeed_name(name: str) -> str:
    """A parameter name as DeepSpeed's module tree gives it -> forge's (other names unchanged)."""
    for forge, ds in NAME_TABLE.items():
        name = name.replace(f".{ds}.", f".{forge}.")
    return name


def to_deepspeed_name(name: str) -> str:
    """forge's parameter name -> the name DeepSpeed's module tree gives it (the path by which its
    MoE layer still reaches the parameter)."""
    for forge, ds in NAME_TABLE.items():
        name = name.replace(f".{forge}.", f".{ds}.")
    return name


# ---- per-parameter state under ZeRO --------------------------------------------------------------


def expert_parallel_group(ep_size: int):
    """The process group DeepSpeed built for MoE layers spread over `ep_size` ranks."""
    from deepspeed.utils import groups

    return groups._get_expert_parallel_group(f"ep_size_{ep_size}")


def _zero(engine) -> bool:
    """Whether the engine's optimizer is a ZeRO (stage 1/2) one, with flat fp32 partitions; with
    stage 0 (one rank, fp32) DeepSpeed steps the torch AdamW on the parameters themselves."""
    return hasattr(engine.optimizer, "single_partition_of_fp32_groups")


def full_state_readers(engine):
    """(parameter -> its full fp32 tensor, (parameter, moment) -> its full Adam moment); collective
    under ZeRO (every rank calls them for every parameter, in the same order)."""
    if _zero(engine):
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

        _relink_optimizer_state(engine)

        # frozen parameters (a LoRA base) are outside ZeRO's partitions, whole on every rank
        def fp32(p):
            return safe_get_full_fp32_param(p) if p.requires_grad else p.detach().float().clone()

        def moment(p, key):
            return safe_get_full_optimizer_state(p, key) if p.requires_grad else torch.zeros_like(p, dtype=torch.float32)

        return fp32, moment
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


def restore_moments(engine, moments: list[tuple[nn.Parameter, dict[str, torch.Tensor]]], adam_step: int) -> None:
    """Put each parameter's full Adam moments ({"exp_avg": .., "exp_avg_sq": ..}) into ZeRO's
    partitions (any world size), or into the torch AdamW's per-parameter state under stage 0."""
    if not _zero(engine):
        for p, m in moments:
            if not p.requires_grad:
                continue
            engine.optimizer.state[p] = {"step": torch.tensor(float(adam_step)),
                                         **{k: v.to(p).clone() for k, v in m.items()}}
        return
    from deepspeed.utils import safe_set_full_optimizer_state

    zero = engine.optimizer
    inner = zero.optimizer
    for flat in zero.single_partition_of_fp32_groups:
        inner.state[flat] = {
            "step": torch.tensor(float(adam_step)),
            "exp_avg": torch.zeros_like(flat),
            "exp_avg_sq": torch.zeros_like(flat),
        }
    zero._lazy_init_hp_params_optimizer_state()
    for p, m in moments:
        if not p.requires_grad:  # frozen: no optimizer state
            continue
        for key, v in m.items():
            safe_set_full_optimizer_state(p, v.to(p.device), key)
